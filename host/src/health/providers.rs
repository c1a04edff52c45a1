//! Provider reachability for the health check, from what the integrations'
//! connectivity tests (`POST /api/integrations/{id}/test`) last saw.
//!
//! The health endpoint is unauthenticated and polled often, so it does not
//! call providers itself (that would spend tenants' quota and let anyone
//! make the server open connections); it summarises the last tests, which
//! is one query. A provider being down is reported but does not make this
//! instance unhealthy: every instance would see the same outage, and taking
//! them out of the load balancer would not help.

use std::collections::BTreeMap;

use crate::store::{Db, integrations};

/// Last-test figures for one provider kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    reachable: usize,
    unreachable: usize,
    untested: usize,
}

/// What the check reports: its status and a detail line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reachability {
    /// `ok` (every tested integration answered), `degraded` (some did not),
    /// `not_configured` (no active integration) or `untested`.
    pub status: &'static str,
    /// Per provider kind: how many reached, failed, untested.
    pub detail: String,
}

/// Summarises the last connectivity test of every active integration.
pub async fn reachability(db: &Db) -> Result<Reachability, sqlx::Error> {
    let mut tx = db.platform().await?;
    let states = integrations::active_test_states(&mut tx).await?;
    tx.commit().await?;
    Ok(summarise(&states))
}

fn summarise(states: &[integrations::TestState]) -> Reachability {
    if states.is_empty() {
        return Reachability {
            status: "not_configured",
            detail: "no active integration".into(),
        };
    }
    let mut by_provider: BTreeMap<&str, Tally> = BTreeMap::new();
    for s in states {
        let tally = by_provider.entry(s.provider.as_str()).or_default();
        let ok = s
            .last_test_result
            .as_deref()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
            .and_then(|v| v.get("ok").and_then(serde_json::Value::as_bool));
        match (s.last_test_at, ok) {
            (Some(_), Some(true)) => tally.reachable += 1,
            (Some(_), Some(false)) => tally.unreachable += 1,
            _ => tally.untested += 1,
        }
    }
    let total = by_provider.values().fold(Tally::default(), |acc, t| Tally {
        reachable: acc.reachable + t.reachable,
        unreachable: acc.unreachable + t.unreachable,
        untested: acc.untested + t.untested,
    });
    let status = if total.unreachable > 0 {
        "degraded"
    } else if total.reachable > 0 {
        "ok"
    } else {
        "untested"
    };
    let detail = by_provider
        .iter()
        .map(|(provider, t)| {
            format!(
                "{provider}: {} reachable, {} unreachable, {} untested",
                t.reachable, t.unreachable, t.untested
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    Reachability {
        status,
        detail: format!("at last connectivity test: {detail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(provider: &str, result: Option<&str>) -> integrations::TestState {
        integrations::TestState {
            provider: provider.into(),
            last_test_at: result.map(|_| 1),
            last_test_result: result.map(str::to_string),
        }
    }

    #[test]
    fn summary_statuses() {
        assert_eq!(summarise(&[]).status, "not_configured");
        assert_eq!(summarise(&[state("mock", None)]).status, "untested");
        let ok = summarise(&[state("mock", Some(r#"{"ok":true}"#)), state("openai", None)]);
        assert_eq!(ok.status, "ok");
        assert!(ok.detail.contains("mock: 1 reachable"), "{}", ok.detail);
        assert!(
            ok.detail
                .contains("openai: 0 reachable, 0 unreachable, 1 untested")
        );
        let bad = summarise(&[
            state("mock", Some(r#"{"ok":true}"#)),
            state("openai", Some(r#"{"ok":false}"#)),
        ]);
        assert_eq!(bad.status, "degraded");
        assert!(bad.detail.contains("openai: 0 reachable, 1 unreachable"));
    }
}
