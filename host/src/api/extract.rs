//! Request extractors that answer with [`ApiError`]: JSON bodies that refuse
//! unknown fields and wrong types naming the field, query strings, and the
//! client's address and user agent for the audit log.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::error::{ApiError, is_read_timeout};
pub use crate::audit::ClientInfo;
use crate::auth::{self, AuthError, Principal};
use crate::orchestrator::dispatch::StreamFailover;
use crate::state::AppState;

/// A JSON body of type `T`. Content type must be JSON (415), the body within
/// the size limit (413), arrived in time (408), syntactically valid (400)
/// and of the right shape (422, `details` keyed by the field's path).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json"
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::unsupported_media_type());
        }
        let limit = state.config.max_body_bytes;
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large(limit)
            } else if is_read_timeout(&rejection) {
                ApiError::request_timeout()
            } else {
                ApiError::bad_request("invalid_body", rejection.body_text())
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Deserialize, classifying syntax errors (400) apart from shape errors (422).
/// Every request body is a JSON object; anything else is refused up front.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Ok(_) => Err(ApiError::invalid_field("body", "must be a JSON object")),
            Err(e) => Err(ApiError::bad_request(
                "invalid_json",
                format!("malformed JSON: {e}"),
            )),
        };
    }
    refuse_nul(bytes)?;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let message = strip_position(&inner.to_string());
                let field = field_name(&path, &message);
                ApiError::invalid_field(&field, message)
            }
            _ => ApiError::bad_request("invalid_json", format!("malformed JSON: {inner}")),
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request("invalid_json", format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// The one rule for the NUL character on both databases (PostgreSQL's text
/// cannot hold it): a request whose JSON carries one, in a key or a value,
/// is refused with 422 naming the field. The scan for its only spelling in
/// JSON, `\u0000`, costs nothing measurable; the tree is walked only when
/// it is found.
fn refuse_nul(bytes: &[u8]) -> Result<(), ApiError> {
    if !bytes.windows(6).any(|w| w == b"\\u0000") {
        return Ok(());
    }
    // Malformed JSON is left to the parse that follows to report.
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Ok(());
    };
    match nul_path(&value, String::new()) {
        Some(path) => Err(ApiError::invalid_field(
            if path.is_empty() { "body" } else { &path },
            "must not contain the NUL character (U+0000)",
        )),
        None => Ok(()),
    }
}

/// The path (`messages[0].content`) of the first text holding a NUL.
pub(crate) fn nul_path(value: &serde_json::Value, here: String) -> Option<String> {
    use serde_json::Value;
    match value {
        Value::String(s) => s.contains('\0').then_some(here),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| nul_path(v, format!("{here}[{i}]"))),
        Value::Object(fields) => fields.iter().find_map(|(k, v)| {
            let path = if here.is_empty() {
                k.clone()
            } else {
                format!("{here}.{k}")
            };
            if k.contains('\0') {
                Some(path)
            } else {
                nul_path(v, path)
            }
        }),
        _ => None,
    }
}

/// Deserialize `value`, one element of a larger document found at `at`
/// (`tasks[3]`), as [`parse_json`] does a body: a shape error is named by
/// its path under `at` (`tasks[3].prompt`).
pub fn from_value_at<T: DeserializeOwned>(
    value: serde_json::Value,
    at: &str,
) -> Result<T, crate::validation::Invalid> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let message = strip_position(&err.into_inner().to_string());
        let field = match field_name(&path, &message).as_str() {
            "body" => at.to_string(),
            field => format!("{at}.{field}"),
        };
        crate::validation::Invalid::field(&field, message)
    })
}

/// The field an error is about: the path, or for a missing field the path
/// joined with the field's name (serde reports the enclosing object).
fn field_name(path: &str, message: &str) -> String {
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    match (path, missing) {
        (".", Some(name)) => name.to_string(),
        (".", None) => "body".to_string(),
        (p, Some(name)) => format!("{p}.{name}"),
        (p, None) => p.to_string(),
    }
}

fn strip_position(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Query-string parameters of type `T`; a bad value is a 400 naming it.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

/// Path parameters of type `T`; a segment that does not decode (not
/// UTF-8, say) is a 400 in the one error shape.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(rejection) if rejection.status().is_server_error() => {
                Err(ApiError::internal(rejection.body_text()))
            }
            Err(rejection) => Err(ApiError::bad_request("invalid_path", rejection.body_text())),
        }
    }
}

/// The client's address in an `X-Forwarded-For` list: each proxy appends
/// the address it was reached from, so the entries on the left are the
/// client's to write and only the one `hops` from the right (the address
/// the outermost trusted proxy saw) can be trusted. `None` when the list is
/// shorter than that.
fn forwarded_client(list: &str, hops: usize) -> Option<&str> {
    let entries: Vec<&str> = list.split(',').map(str::trim).collect();
    let index = entries.len().checked_sub(hops)?;
    entries.get(index).copied().filter(|e| !e.is_empty())
}

impl FromRequestParts<AppState> for ClientInfo {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header_str = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let config = &state.config;
        let proxied = if !config.trust_proxy_headers {
            None
        } else if config.client_ip_header == "x-forwarded-for" {
            let hops = usize::try_from(config.trusted_proxy_hops).unwrap_or(1);
            header_str("x-forwarded-for").and_then(|v| forwarded_client(v, hops))
        } else {
            header_str(&config.client_ip_header)
        }
        .map(str::to_string);
        let ip = proxied.or_else(|| {
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip().to_string())
        });
        let user_agent = header_str("user-agent").map(|ua| ua.chars().take(512).collect());
        Ok(ClientInfo { ip, user_agent })
    }
}

/// The caller: the one [`super::access::guard`] authenticated, else from
/// the `Authorization: Bearer` header (401 otherwise).
impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Principal, ApiError> {
        // The access guard authenticated the caller already.
        if let Some(p) = parts.extensions.get::<Principal>() {
            return Ok(p.clone());
        }
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or(AuthError::Unauthenticated(
                "missing Authorization: Bearer header",
            ))?;
        let value = header
            .to_str()
            .map_err(|_| AuthError::Unauthenticated("malformed Authorization header"))?;
        let bearer = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Unauthenticated(
                "expected Authorization: Bearer <token>",
            ))?;
        Ok(auth::authenticate(state, bearer).await?)
    }
}

/// The header choosing what a stream does when its provider fails after
/// sending text, on `/v1/chat/completions` and `POST /api/tasks`.
pub const STREAM_FAILOVER_HEADER: &str = "x-vel-stream-failover";

/// The mode named by `X-Vel-Stream-Failover`, `None` when absent (the
/// organization's setting applies, else `fail`); 400 naming the header
/// when it names none.
pub fn stream_failover(headers: &HeaderMap) -> Result<Option<StreamFailover>, ApiError> {
    let Some(value) = headers.get(STREAM_FAILOVER_HEADER) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(str::trim)
        .and_then(StreamFailover::parse)
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_stream_failover",
                "X-Vel-Stream-Failover must be continue or fail",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::forwarded_client;

    #[test]
    fn nul_characters_are_refused_naming_the_field() {
        let refused = |body: &str| super::refuse_nul(body.as_bytes()).unwrap_err();
        let e = refused(r#"{"messages":[{"role":"user","content":"a\u0000b"}]}"#);
        assert_eq!(e.status(), http::StatusCode::UNPROCESSABLE_ENTITY);
        assert!(format!("{e:?}").contains("messages[0].content"), "{e:?}");
        let e = refused(r#"{"na\u0000me":"x"}"#);
        assert!(format!("{e:?}").contains("na\\0me"), "{e:?}");
        // An escaped backslash before `u0000` is no NUL.
        assert!(super::refuse_nul(br#"{"path":"C:\\u0000"}"#).is_ok());
        assert!(super::refuse_nul(br#"{"ok":"plain"}"#).is_ok());
    }

    #[test]
    fn the_client_is_counted_from_the_right() {
        // A client may write anything on the left; one proxy appended the last entry.
        assert_eq!(
            forwarded_client("6.6.6.6, 203.0.113.9", 1),
            Some("203.0.113.9")
        );
        assert_eq!(
            forwarded_client("6.6.6.6, 203.0.113.9, 10.0.0.2", 2),
            Some("203.0.113.9")
        );
        assert_eq!(forwarded_client("203.0.113.9", 1), Some("203.0.113.9"));
        assert_eq!(forwarded_client("203.0.113.9", 2), None);
    }
}
