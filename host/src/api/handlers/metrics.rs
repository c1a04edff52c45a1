//! `GET /metrics`: this instance's metrics in the Prometheus text format
//! 0.0.4 — build and uptime, database connections, per plugin version
//! calls, errors, limit hits and call durations, queue claims, finished
//! requests and tasks with their tokens and cost, alerts, and budget
//! refusals (and, with `VEL_METRICS_ORG_LABEL`, per organization and each
//! budget's room). Platform admins only: the labels name tenants' plugins
//! and organization ids.

use std::fmt::Write as _;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::api::error::{ApiError, ErrorBody};
use crate::auth::Principal;
use crate::plugins::stats::{escape_label, family};
use crate::state::AppState;
use crate::store::GateStats;

/// The exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Prometheus metrics of this instance (platform admin).
#[utoipa::path(get, path = "/metrics", tag = "system",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", content_type = "text/plain", body = String),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn metrics(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<impl IntoResponse, ApiError> {
    principal.require_platform_admin()?;
    let mut out = String::with_capacity(4096);
    render_process(&mut out, state.started.elapsed());
    let (size, idle) = state.db.connections();
    render_database(&mut out, size, idle);
    if let Some(gate) = state.db.write_gate_stats() {
        render_write_gate(&mut out, gate);
    }
    state.plugins.stats().render_prometheus(&mut out);
    crate::orchestrator::queue::render_claims(&mut out);
    crate::analytics::metrics::render(&mut out);
    state.dispatcher.ledger().render_prometheus(&mut out);
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], out))
}

/// `vel_build_info{version}` and `vel_uptime_seconds`.
fn render_process(out: &mut String, uptime: Duration) {
    family(
        out,
        "vel_build_info",
        "gauge",
        "The running vel build; always 1.",
    );
    out.push_str("vel_build_info{version=\"");
    escape_label(env!("CARGO_PKG_VERSION"), out);
    out.push_str("\"} 1\n");
    family(
        out,
        "vel_uptime_seconds",
        "gauge",
        "Seconds since this instance started.",
    );
    let _ = writeln!(out, "vel_uptime_seconds {}", uptime.as_secs_f64());
}

/// `vel_db_connections` and `vel_db_idle_connections`: the pool's size
/// shows how many connections load made this instance open (each one a
/// server backend on PostgreSQL, a thread and a page cache on SQLite).
fn render_database(out: &mut String, open: u32, idle: usize) {
    family(
        out,
        "vel_db_connections",
        "gauge",
        "Database connections this instance holds open, busy or idle.",
    );
    let _ = writeln!(out, "vel_db_connections {open}");
    family(
        out,
        "vel_db_idle_connections",
        "gauge",
        "Open database connections not in use.",
    );
    let _ = writeln!(out, "vel_db_idle_connections {idle}");
}

/// SQLite's write gate: how long writing transactions waited for it and
/// held it (a summary each), and the longest hold. Writers queueing here
/// is what an operator sees as slow submissions on the embedded database.
fn render_write_gate(out: &mut String, gate: GateStats) {
    family(
        out,
        "vel_db_write_gate_wait_seconds",
        "summary",
        "SQLite: time writing transactions waited for the write gate.",
    );
    let _ = writeln!(
        out,
        "vel_db_write_gate_wait_seconds_sum {}\nvel_db_write_gate_wait_seconds_count {}",
        gate.waited.as_secs_f64(),
        gate.entered
    );
    family(
        out,
        "vel_db_write_gate_hold_seconds",
        "summary",
        "SQLite: time writing transactions held the write gate.",
    );
    let _ = writeln!(
        out,
        "vel_db_write_gate_hold_seconds_sum {}\nvel_db_write_gate_hold_seconds_count {}",
        gate.held.as_secs_f64(),
        gate.entered
    );
    family(
        out,
        "vel_db_write_gate_longest_hold_seconds",
        "gauge",
        "SQLite: the longest a single transaction held the write gate.",
    );
    let _ = writeln!(
        out,
        "vel_db_write_gate_longest_hold_seconds {}",
        gate.longest_hold.as_secs_f64()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_lines_name_the_build_and_uptime() {
        let mut out = String::new();
        render_process(&mut out, Duration::from_millis(1500));
        let expected = format!(
            "# HELP vel_build_info The running vel build; always 1.\n\
             # TYPE vel_build_info gauge\n\
             vel_build_info{{version=\"{}\"}} 1\n\
             # HELP vel_uptime_seconds Seconds since this instance started.\n\
             # TYPE vel_uptime_seconds gauge\n\
             vel_uptime_seconds 1.5\n",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn database_lines_count_the_pool() {
        let mut out = String::new();
        render_database(&mut out, 3, 2);
        assert!(out.contains("\nvel_db_connections 3\n"), "{out}");
        assert!(out.contains("\nvel_db_idle_connections 2\n"), "{out}");
        assert!(out.contains("# TYPE vel_db_connections gauge\n"), "{out}");
    }

    #[test]
    fn write_gate_lines_are_summaries() {
        let mut out = String::new();
        render_write_gate(
            &mut out,
            GateStats {
                entered: 4,
                waited: Duration::from_millis(250),
                held: Duration::from_millis(1500),
                longest_hold: Duration::from_millis(900),
            },
        );
        assert!(
            out.contains("\nvel_db_write_gate_wait_seconds_sum 0.25\n"),
            "{out}"
        );
        assert!(
            out.contains("\nvel_db_write_gate_wait_seconds_count 4\n"),
            "{out}"
        );
        assert!(
            out.contains("\nvel_db_write_gate_hold_seconds_sum 1.5\n"),
            "{out}"
        );
        assert!(
            out.contains("\nvel_db_write_gate_longest_hold_seconds 0.9\n"),
            "{out}"
        );
        assert!(
            out.contains("# TYPE vel_db_write_gate_hold_seconds summary\n"),
            "{out}"
        );
    }
}
