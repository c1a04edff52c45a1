//! `vel serve`: load keys, open and migrate the database, make sure a
//! platform admin exists, start the plugin runtime with the built-in
//! plugins, bind, announce the address, serve until SIGTERM or
//! Ctrl-C, then drain in-flight requests and close the pool.

mod automatic_errors;
mod bootstrap;
mod connection;
mod listen;
mod self_wake;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::auth::jwt::JwtKeys;
use crate::auth::password::PasswordHasher;
use crate::auth::verified::Verified;
use crate::config::Config;
use crate::config::operations::LogFormat;
use crate::orchestrator::breaker::BreakerConfig;
use crate::orchestrator::dispatch::{DispatchConfig, Dispatcher};
use crate::orchestrator::executor::Executor;
use crate::orchestrator::queue::QueueConfig;
use crate::orchestrator::retry::RetryPolicy;
use crate::orchestrator::shares::Shares;
use crate::orchestrator::signals::Signals;
use crate::orchestrator::usage::{RecorderConfig, UsageRecorder};
use crate::plugins::Plugins;
use crate::retention::Prune;
use crate::secrets::MasterKey;
use crate::state::AppState;
use crate::store::Db;

/// Build the shared state from configuration (database opened and migrated).
pub async fn build_state(config: Config) -> anyhow::Result<AppState> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let keys = MasterKey::load_or_generate(config.secret_key.as_deref(), &config.data_dir)?;
    let passwords = PasswordHasher::new(
        config.argon2_memory_kib,
        config.argon2_iterations,
        config.argon2_parallelism,
    )?;
    // The database and the plugins start side by side: neither needs the other.
    let database = async {
        let db = Db::open(
            &config.database_url,
            config.tenant_database_url.as_deref(),
            config.db_max_connections,
        )
        .await
        .with_context(|| {
            format!(
                "cannot open database {}",
                crate::config::redact_url(&config.database_url)
            )
        })?;
        bootstrap::ensure_platform_admin(&db, &config, &passwords).await?;
        anyhow::Ok(db)
    };
    let plugins = async {
        Plugins::start(&config).await.with_context(|| {
            format!(
                "cannot start the plugin runtime (compile cache {}, VEL_PLUGIN_CACHE_DIR)",
                config.plugin_cache_dir.display()
            )
        })
    };
    let (db, plugins) = tokio::try_join!(database, plugins)?;
    // The registry: built-ins recorded as platform plugins, then the active
    // set (uploads included) read from the database.
    plugins
        .registry()
        .sync_builtins(&db, plugins.builtins())
        .await
        .context("cannot record the built-in plugins in the registry")?;
    plugins
        .registry()
        .refresh(&db)
        .await
        .context("cannot read the plugin registry")?;
    crate::workflows::catalog::sync_builtins(&db)
        .await
        .context("cannot record the built-in workflow templates")?;
    let jwt =
        JwtKeys::new(&keys.jwt_keys(), config.token_ttl).context("VEL_SECRET_KEY holds no key")?;
    let keys = Arc::new(keys);
    let limits = Arc::new(crate::limits::RateLimiter::new(
        db.clone(),
        config.default_user_requests_per_hour,
    ));
    limits.start();
    let dispatcher = Dispatcher::new(
        db.clone(),
        plugins.clone(),
        keys.clone(),
        DispatchConfig {
            retry: RetryPolicy {
                base_delay: config.tasks.retry_base,
                ..RetryPolicy::default()
            },
            breaker: BreakerConfig {
                cool_down: config.tasks.breaker_cool_down,
                ..BreakerConfig::default()
            },
            max_run: config.tasks.max_run,
            budgets: config.budgets,
        },
        limits.clone(),
    );
    dispatcher.ledger().start();
    crate::analytics::metrics::set_org_label(config.metrics_org_label);
    let signals = Signals::new(db.backend(), db.origin());
    signals.listen(&config.database_url);
    dispatcher.follow_changes(&signals);
    {
        let dispatcher = dispatcher.clone();
        plugins.registry().follow(
            db.clone(),
            &signals,
            config.registry.reconcile_interval,
            move || dispatcher.forget_all_catalogs(),
        );
    }
    let executor = Executor::start(
        db.clone(),
        dispatcher.clone(),
        plugins.clone(),
        signals.clone(),
        config.tasks.clone(),
    );
    let deliveries = crate::webhooks::delivery::Deliveries::start(
        db.clone(),
        keys.clone(),
        signals.clone(),
        config.webhooks.clone(),
        QueueConfig {
            workers: 0,
            lease: config.tasks.lease,
            poll_interval: config.tasks.poll_interval,
        },
    )
    .context("cannot build the webhook delivery client")?;
    let usage = UsageRecorder::start(
        db.clone(),
        RecorderConfig {
            linger: config.tasks.usage_linger,
            batch: usize::try_from(config.tasks.usage_batch).unwrap_or(usize::MAX),
            ..RecorderConfig::default()
        },
    );
    crate::analytics::rollup::start(db.clone(), config.usage_rollup);
    crate::retention::start(
        db.clone(),
        Prune::AuditLog,
        config.operations.audit_retention_days,
        config.operations.audit_retention_interval,
    );
    crate::retention::start(
        db.clone(),
        Prune::WebhookDeliveries,
        config.webhooks.delivery_retention_days,
        config.operations.audit_retention_interval,
    );
    let verified: Arc<Verified> = Arc::default();
    verified.follow_revocations(&signals);
    let shares = Shares::new(
        config.tasks.gateway_in_flight_per_key,
        config.tasks.gateway_in_flight_per_org,
    );
    let notifier = crate::notify::Notifier::new(config.notify_url.clone())
        .context("cannot build the notification client (VEL_NOTIFY_URL)")?;
    Ok(AppState::new(crate::state::Services {
        limits,
        notifier,
        verified,
        shares: Arc::new(shares),
        db,
        usage,
        dispatcher,
        signals,
        executor,
        config: Arc::new(config),
        keys,
        jwt: Arc::new(jwt),
        passwords: Arc::new(passwords),
        plugins,
        deliveries,
        started: Instant::now(),
    }))
}

/// Run the server until a shutdown signal.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.listen;
    let limits = connection_limits(&config);
    let state = build_state(config).await?;
    let db = state.db.clone();
    let executor = state.executor.clone();
    let usage = state.usage.clone();
    let deliveries = state.deliveries.clone();
    let app = crate::api::router(state);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (VEL_LISTEN)"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, backend = db.backend().name(), "vel serving");
    instance_event(&db, "instance_started", &addr).await;
    // The one line on stdout: scripts and tests wait for it.
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on http://{addr}")?;
    out.flush()?;
    drop(out);
    tracing::info!(
        max_connections = limits.max_connections,
        header_read = ?limits.timeouts.header_read,
        keep_alive = ?limits.timeouts.keep_alive,
        body_read = ?limits.timeouts.body_read,
        "connection limits"
    );
    listen::serve(listener, app, limits, shutdown_signal()).await;
    tracing::info!("shutting down: in-flight requests drained");
    tokio::join!(
        executor.shutdown(Duration::from_secs(10)),
        deliveries.shutdown(Duration::from_secs(10))
    );
    usage.close().await;
    instance_event(&db, "instance_stopped", &addr).await;
    db.close().await;
    Ok(())
}

/// Record this instance starting or stopping in the platform's audit log
/// (a failure is logged: it must not keep the server from serving).
async fn instance_event(db: &Db, action: &str, addr: &std::net::SocketAddr) {
    let payload = serde_json::json!({
        "instance": &*db.origin(),
        "address": addr.to_string(),
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
    });
    if let Err(e) = crate::audit::record_system(db, None, action, payload).await {
        tracing::warn!(error = %e, action, "cannot record the instance event in the audit log");
    }
}

/// The connection deadlines and cap: `VEL_MAX_CONNECTIONS` when set (with
/// a warning when the open-file limit leaves no room for it), else
/// [`default_max_connections`] of the open-file limit.
fn connection_limits(config: &Config) -> listen::Limits {
    let settings = &config.connections;
    let open_files = open_file_limit();
    // Two database pools (tenant and platform work) on PostgreSQL.
    let derived = default_max_connections(open_files, config.db_max_connections.saturating_mul(2));
    let max_connections = match settings.max_connections {
        Some(max) => {
            let max = usize::try_from(max).unwrap_or(usize::MAX);
            if let Some(open_files) = open_files
                && max > derived
            {
                tracing::warn!(
                    max_connections = max,
                    open_files,
                    "VEL_MAX_CONNECTIONS leaves too few file descriptors under the open-file \
                     limit (ulimit -n) for upstream calls and the database; accepting may fail"
                );
            }
            max
        }
        None => derived,
    };
    listen::Limits {
        timeouts: connection::Timeouts {
            header_read: settings.header_read_timeout,
            keep_alive: settings.keepalive_timeout,
            body_read: settings.body_read_timeout,
        },
        max_connections,
    }
}

/// File descriptors kept out of the connection cap for the database pool's
/// connections, the SQLite files, the plugin cache, logs and listeners.
const RESERVED_FILES: u64 = 128;
/// The connection cap when nothing limits it further.
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// The smallest cap derived from a small open-file limit.
const MIN_DERIVED_CONNECTIONS: usize = 16;

/// The connection cap when `VEL_MAX_CONNECTIONS` is not set: half of the
/// file descriptors the open-file limit leaves after the reserved ones and
/// the database pool (a gateway request in flight holds a second socket to
/// its upstream), at most 10,000; 10,000 when the limit is unknown.
fn default_max_connections(open_files: Option<u64>, db_pool: u32) -> usize {
    let Some(open_files) = open_files else {
        return DEFAULT_MAX_CONNECTIONS;
    };
    let spare = open_files.saturating_sub(RESERVED_FILES + u64::from(db_pool)) / 2;
    usize::try_from(spare)
        .unwrap_or(usize::MAX)
        .clamp(MIN_DERIVED_CONNECTIONS, DEFAULT_MAX_CONNECTIONS)
}

/// The process's soft limit on open files (`ulimit -n`), when it has one.
#[cfg(unix)]
// `rlim_t` is 64 bits wide on Linux but not on every Unix.
#[allow(clippy::useless_conversion)]
fn open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    let status = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (status == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then(|| u64::from(limit.rlim_cur))
}

#[cfg(not(unix))]
fn open_file_limit() -> Option<u64> {
    None
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received");
}

/// Initialise `tracing` to stderr with the configured filter, as text or
/// as one JSON object per line (`VEL_LOG_FORMAT`).
pub fn init_tracing(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_follows_the_open_file_limit() {
        assert_eq!(default_max_connections(None, 10), 10_000);
        assert_eq!(default_max_connections(Some(1024), 10), 443);
        assert_eq!(default_max_connections(Some(256), 10), 59);
        assert_eq!(default_max_connections(Some(64), 10), 16);
        assert_eq!(default_max_connections(Some(1 << 20), 10), 10_000);
    }
}
