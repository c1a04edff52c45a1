//! Audit trail: every state-changing action writes an entry — in the same
//! transaction as the change, so the log and the data never disagree — with
//! secrets and passwords redacted from its payload. System events (an
//! instance starting or stopping, a circuit breaker opening or closing) are
//! recorded too, with no user; [`crate::retention`] deletes entries past their
//! age.

use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::Value;
use tracing::Instrument;

use crate::auth::Principal;
use crate::money::{Money, Usd};
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

/// An entry's payload: JSON fields, redacted before they are stored, and
/// amounts of money, written as exact decimals. A [`Value`] holds numbers
/// as `f64`, so an amount put among the fields would be stored as the
/// nearest `f64` (`5e-7` for `0.0000005`); [`Payload::usd`] keeps it exact.
#[derive(Debug, Clone)]
pub struct Payload {
    fields: Value,
    amounts: Vec<(&'static str, Option<Usd>)>,
}

impl Payload {
    /// Add the amount `key` (US dollars; `None` is written as null). It
    /// replaces a field of the same name.
    pub fn usd(mut self, key: &'static str, amount: Option<Money>) -> Payload {
        self.amounts.retain(|(name, _)| *name != key);
        self.amounts.push((key, amount.map(Money::usd)));
        self
    }

    /// The payload as stored: the redacted fields, then the amounts.
    pub fn render(mut self) -> String {
        redact(&mut self.fields);
        let Value::Object(fields) = &self.fields else {
            return self.fields.to_string();
        };
        if self.amounts.is_empty() {
            return self.fields.to_string();
        }
        let object = Object {
            fields,
            amounts: &self.amounts,
        };
        // Strings, `Value`s and exact decimals always serialize.
        serde_json::to_string(&object).unwrap_or_else(|_| self.fields.to_string())
    }
}

impl From<Value> for Payload {
    fn from(fields: Value) -> Payload {
        Payload {
            fields,
            amounts: Vec::new(),
        }
    }
}

/// A payload's object: its fields (those not named by an amount), then its
/// amounts.
struct Object<'a> {
    fields: &'a serde_json::Map<String, Value>,
    amounts: &'a [(&'static str, Option<Usd>)],
}

impl Serialize for Object<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let is_amount = |key: &str| self.amounts.iter().any(|(name, _)| *name == key);
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in self.fields.iter().filter(|(key, _)| !is_amount(key)) {
            map.serialize_entry(key, value)?;
        }
        for (key, amount) in self.amounts {
            map.serialize_entry(key, amount)?;
        }
        map.end()
    }
}

/// Append an entry for an action by `who` in their organization.
pub async fn record(
    conn: &mut sqlx::AnyConnection,
    who: &Principal,
    client: &ClientInfo,
    action: &str,
    payload: impl Into<Payload>,
) -> Result<(), sqlx::Error> {
    audit_logs::insert(
        conn,
        &NewAudit {
            org_id: Some(who.org_id.clone()),
            user_id: Some(who.user_id.clone()),
            action: action.to_string(),
            payload: payload.into().render(),
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
    payload: impl Into<Payload>,
) -> Result<(), sqlx::Error> {
    audit_logs::insert(
        conn,
        &NewAudit {
            org_id: org_id.map(str::to_string),
            user_id: user_id.map(str::to_string),
            action: action.to_string(),
            payload: payload.into().render(),
            ip_address: client.ip.clone(),
            user_agent: client.user_agent.clone(),
        },
    )
    .await
}

/// Append an entry for an event of the system itself, with no acting user
/// (`org_id` when it concerns one organization, such as its integration's
/// breaker), in its own transaction.
pub async fn record_system(
    db: &crate::store::Db,
    org_id: Option<&str>,
    action: &str,
    payload: impl Into<Payload>,
) -> Result<(), sqlx::Error> {
    let mut tx = db.platform().await?;
    record_for(
        &mut tx,
        org_id,
        None,
        &ClientInfo::default(),
        action,
        payload,
    )
    .await?;
    tx.commit().await
}

/// [`record_system`] off the caller's path (a failure is logged), for
/// events noticed where waiting on the database would slow the work.
pub fn spawn_system(
    db: &crate::store::Db,
    org_id: Option<String>,
    action: &'static str,
    payload: Value,
) {
    let db = db.clone();
    tokio::spawn(
        async move {
            if let Err(e) = record_system(&db, org_id.as_deref(), action, payload).await {
                tracing::warn!(error = %e, action, "cannot record a system event in the audit log");
            }
        }
        .in_current_span(),
    );
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
    fn amounts_are_exact_decimals_and_fields_are_redacted() {
        let payload = Payload::from(json!({ "token": "t", "cost_usd": 1.0, "n": 1 }))
            .usd("cost_usd", Some(Money::from_nanos(500)))
            .usd("estimated_cost_usd", None);
        assert_eq!(
            payload.render(),
            r#"{"n":1,"token":"[REDACTED]","cost_usd":0.0000005,"estimated_cost_usd":null}"#
        );
        // Without amounts, as `Value` writes it.
        assert_eq!(Payload::from(json!({ "a": [1] })).render(), r#"{"a":[1]}"#);
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
