//! Audit trail: every state-changing action writes an entry — in the same
//! transaction as the change, so the log and the data never disagree — with
//! secrets and passwords redacted from its payload.

use serde_json::Value;

use crate::auth::Principal;
use crate::store::audit_logs::{self, NewAudit};

/// Where a request came from, for the audit log and rate limits (the
/// HTTP layer reads it from the connection and headers).
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// Client IP (from the socket, or proxy headers when trusted).
    pub ip: Option<String>,
    /// `User-Agent`, truncated to 512 characters.
    pub user_agent: Option<String>,
}

/// Placeholder written instead of a secret value.
pub const REDACTED: &str = "[REDACTED]";

/// Key names whose values are never stored in an audit payload (ids of
/// secrets, `api_key_id`, are not secrets and are kept).
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    if k.ends_with("_id") || k.ends_with("_ids") {
        return false;
    }
    [
        "password",
        "secret",
        "api_key",
        "apikey",
        "token",
        "authorization",
        "key_ciphertext",
        "private",
    ]
    .iter()
    .any(|s| k.contains(s))
        || k == "key"
}

/// Replace secret-looking fields anywhere in `value`, and any string that
/// looks like a vel API key.
pub fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if is_secret_key(k) && !v.is_null() {
                    *v = Value::String(REDACTED.into());
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::String(s) if s.starts_with(crate::auth::api_keys::PREFIX) && s.len() > 20 => {
            *s = REDACTED.into();
        }
        _ => {}
    }
}

/// Append an entry for an action by `who` in their organization.
pub async fn record(
    conn: &mut sqlx::AnyConnection,
    who: &Principal,
    client: &ClientInfo,
    action: &str,
    mut payload: Value,
) -> Result<(), sqlx::Error> {
    redact(&mut payload);
    audit_logs::insert(
        conn,
        &NewAudit {
            org_id: Some(who.org_id.clone()),
            user_id: Some(who.user_id.clone()),
            action: action.to_string(),
            payload: payload.to_string(),
            ip_address: client.ip.clone(),
            user_agent: client.user_agent.clone(),
        },
    )
    .await
}

/// Append an entry for an explicit organization and user (login, platform actions).
pub async fn record_for(
    conn: &mut sqlx::AnyConnection,
    org_id: Option<&str>,
    user_id: Option<&str>,
    client: &ClientInfo,
    action: &str,
    mut payload: Value,
) -> Result<(), sqlx::Error> {
    redact(&mut payload);
    audit_logs::insert(
        conn,
        &NewAudit {
            org_id: org_id.map(str::to_string),
            user_id: user_id.map(str::to_string),
            action: action.to_string(),
            payload: payload.to_string(),
            ip_address: client.ip.clone(),
            user_agent: client.user_agent.clone(),
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn redacts_nested_secrets() {
        let mut v = json!({"name": "x", "api_key": "sk-1", "nested": {"password": "p", "ok": 1},
                           "list": [{"token": "t"}], "raw": "vel_abcdefghijklmnopqrstuvwxyz"});
        redact(&mut v);
        assert_eq!(v["api_key"], REDACTED);
        assert_eq!(v["nested"]["password"], REDACTED);
        assert_eq!(v["nested"]["ok"], 1);
        assert_eq!(v["list"][0]["token"], REDACTED);
        assert_eq!(v["raw"], REDACTED);
        assert_eq!(v["name"], "x");
    }

    #[test]
    fn keeps_the_ids_of_secrets() {
        let mut v = json!({"api_key_id": "k1", "revoked_api_key_ids": ["k1"], "token": "t"});
        redact(&mut v);
        assert_eq!(v["api_key_id"], "k1");
        assert_eq!(v["revoked_api_key_ids"], json!(["k1"]));
        assert_eq!(v["token"], REDACTED);
    }
}
