//! Server configuration: environment variables over an optional `vel.toml`
//! over built-in defaults. A missing or invalid setting stops start-up with a
//! message naming it, so a typo never turns into a silently different server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use vel_runtime::AllowPrivate;

pub mod classes;
pub mod operations;

use crate::analytics::rollup::RollupConfig;
use crate::budgets::ledger::LedgerSettings;
use crate::notify::NotifyUrl;
use crate::webhooks::WebhookConfig;

/// Why configuration could not be loaded; every variant names the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A setting has a value that does not parse or is out of range.
    #[error("invalid setting {name}={value:?}: {reason}")]
    Invalid {
        /// The environment variable (or `vel.toml` key) at fault.
        name: String,
        /// The offending value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The configuration file could not be read or parsed.
    #[error("configuration file {path}: {reason}")]
    File {
        /// The file's path.
        path: PathBuf,
        /// The reader's or parser's message (it names the key).
        reason: String,
    },
}

/// Everything `vel serve` and `vel migrate` need to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address the HTTP server binds (`VEL_LISTEN`).
    pub listen: SocketAddr,
    /// Directory for the SQLite file, the generated secret key and caches (`VEL_DATA_DIR`).
    pub data_dir: PathBuf,
    /// Database URL (`DATABASE_URL`): `sqlite://…` or `postgres://…`.
    pub database_url: String,
    /// PostgreSQL URL for tenant work (`VEL_TENANT_DATABASE_URL`): a login
    /// that is a member of the `vel_app` role only, so a connection serving
    /// one organization cannot switch itself to cross-tenant work. Absent:
    /// `database_url` serves both (see docs/security.md).
    pub tenant_database_url: Option<String>,
    /// Base64 or hex encoding of the 32-byte master key (`VEL_SECRET_KEY`); generated when absent.
    pub secret_key: Option<String>,
    /// Email of the platform admin created on first start (`VEL_ADMIN_EMAIL`).
    pub admin_email: String,
    /// Password of that admin (`VEL_ADMIN_PASSWORD`); generated and printed once when absent.
    pub admin_password: Option<String>,
    /// Maximum pooled database connections (`VEL_DB_MAX_CONNECTIONS`).
    pub db_max_connections: u32,
    /// Largest accepted request body in bytes (`VEL_MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// Lifetime of issued access tokens (`VEL_TOKEN_TTL_SECS`, in seconds).
    pub token_ttl: Duration,
    /// Login attempts allowed per minute per IP and per email (`VEL_LOGIN_ATTEMPTS_PER_MINUTE`).
    pub login_attempts_per_minute: u32,
    /// Argon2id memory cost in KiB (`VEL_ARGON2_MEMORY_KIB`).
    pub argon2_memory_kib: u32,
    /// Argon2id iterations (`VEL_ARGON2_ITERATIONS`).
    pub argon2_iterations: u32,
    /// Argon2id lanes (`VEL_ARGON2_PARALLELISM`).
    pub argon2_parallelism: u32,
    /// Take the client IP from a proxy's header (`VEL_TRUST_PROXY_HEADERS`).
    pub trust_proxy_headers: bool,
    /// That header, lower case (`VEL_CLIENT_IP_HEADER`): `x-forwarded-for`
    /// (read with [`Config::trusted_proxy_hops`]) or a header the proxy sets
    /// to the client's address alone, such as Fly's `fly-client-ip`.
    pub client_ip_header: String,
    /// How many proxies in front of vel append to `X-Forwarded-For`: the
    /// client is the entry this many from the right (`VEL_TRUSTED_PROXY_HOPS`).
    pub trusted_proxy_hops: u32,
    /// Timeout of each health check (`VEL_HEALTH_TIMEOUT_MS`, in milliseconds).
    pub health_timeout: Duration,
    /// Directory of the plugin runtime's compiled-component cache
    /// (`VEL_PLUGIN_CACHE_DIR`, default `$VEL_DATA_DIR/plugin-cache`): with a
    /// warm cache the built-in plugins load without recompiling.
    pub plugin_cache_dir: PathBuf,
    /// `tracing` filter directive (`VEL_LOG`, else `RUST_LOG`).
    pub log: String,
    /// On first start, give the `default` organization a `mock` integration
    /// (the offline built-in provider) so tasks run out of the box
    /// (`VEL_DEMO_MOCK`, default true).
    pub demo_mock: bool,
    /// Label `/metrics` series of finished work, alerts and budgets with
    /// the organization (`VEL_METRICS_ORG_LABEL`, default false: one series
    /// per tenant can be many).
    pub metrics_org_label: bool,
    /// Requests per hour for each user without a rate limit of their own
    /// (`VEL_DEFAULT_USER_REQUESTS_PER_HOUR`; 0, the default, is none; the
    /// seed's production value is 100).
    pub default_user_requests_per_hour: Option<i64>,
    /// Task execution settings.
    pub tasks: TaskConfig,
    /// Plugin registry settings.
    pub registry: RegistryConfig,
    /// The usage roll-up's schedule and retention.
    pub usage_rollup: RollupConfig,
    /// How budgets are leased and written (`VEL_BUDGET_LEASE_TTL_MS`,
    /// default 30000; `VEL_BUDGET_FLUSH_MS`, default 200).
    pub budgets: LedgerSettings,
    /// Restricted destinations (loopback, private, link-local, …) provider
    /// calls may still reach, and names that may resolve to them
    /// (`VEL_OUTBOUND_ALLOW_PRIVATE`, comma-separated CIDR ranges, addresses
    /// and host names; default none).
    pub outbound_allow_private: AllowPrivate,
    /// Limits on client connections.
    pub connections: ConnectionConfig,
    /// The operator's hook that delivers messages to people, such as the
    /// token confirming a change of email (`VEL_NOTIFY_URL`; see
    /// [`crate::notify`]). Absent: such changes are refused.
    pub notify_url: Option<NotifyUrl>,
    /// Log format, audit retention, CORS and HTTPS headers.
    pub operations: operations::Operations,
    /// How webhooks are checked and delivered (`VEL_WEBHOOK_*`).
    pub webhooks: WebhookConfig,
}

/// How long a client connection may take over each part of a request, and
/// how many may be open, so idle or slow clients cannot hold the server's
/// sockets and file descriptors.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionConfig {
    /// Longest a client may take to send a request's head, counted from
    /// the connection's accept for its first request and from the first
    /// byte for later ones (`VEL_HEADER_READ_TIMEOUT_MS`, default 10,000).
    pub header_read_timeout: Duration,
    /// Longest a connection may wait without a request in progress before
    /// it is closed (`VEL_KEEPALIVE_TIMEOUT_MS`, default 60,000).
    pub keepalive_timeout: Duration,
    /// Longest a request's body may take to arrive once its head has
    /// (`VEL_BODY_READ_TIMEOUT_MS`, default 30,000); then 408.
    pub body_read_timeout: Duration,
    /// Most client connections open at once (`VEL_MAX_CONNECTIONS`); when
    /// absent, derived from the open-file limit at start.
    pub max_connections: Option<u32>,
}

/// How the plugin registry accepts and publishes components.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryConfig {
    /// Largest component accepted by `POST /api/plugins`
    /// (`VEL_PLUGIN_MAX_UPLOAD_BYTES`, default 10 MiB) for a plugin in no
    /// class; a class has its own ([`RegistryConfig::classes`]).
    pub max_upload_bytes: usize,
    /// Plugin classes offered (`VEL_PLUGIN_CLASSES`, none by default; see
    /// [`classes`]): limits of their own for plugins whose manifest names
    /// one, e.g. `python` for componentize-py components.
    pub classes: std::collections::BTreeMap<String, vel_runtime::PluginClass>,
    /// ed25519 public keys (base64 or hex, comma-separated in
    /// `VEL_PLUGIN_TRUSTED_KEYS`). When any is set, only components whose
    /// detached signature verifies against one of them can be activated.
    pub trusted_keys: Vec<[u8; 32]>,
    /// How often each instance re-reads the active set even without a
    /// change signal (`VEL_PLUGIN_RECONCILE_MS`, default 5,000).
    pub reconcile_interval: Duration,
    /// Compilations this instance runs at once (`VEL_PLUGIN_COMPILE_SLOTS`,
    /// default 2); an organization's uploads compile one at a time besides.
    pub compile_slots: usize,
    /// Longest one compilation is waited for (`VEL_PLUGIN_COMPILE_TIMEOUT_MS`,
    /// default 60,000); a longer one is abandoned.
    pub compile_timeout: Duration,
    /// Longest an upload waits for a compile slot before a 429
    /// (`VEL_PLUGIN_COMPILE_WAIT_MS`, default 10,000).
    pub compile_wait: Duration,
    /// Largest total of an upload's function bodies
    /// (`VEL_PLUGIN_MAX_CODE_BYTES`, default 4 MiB).
    pub max_code_bytes: usize,
    /// Largest single function body of an upload
    /// (`VEL_PLUGIN_MAX_FUNCTION_BYTES`, default 64 KiB): the compiler's time
    /// and memory grow faster than a function's size.
    pub max_function_bytes: usize,
    /// Component bytes one organization may store (`VEL_PLUGIN_ORG_QUOTA_BYTES`,
    /// default 100 MiB); platform plugins do not count.
    pub org_quota_bytes: u64,
    /// Longest a plugin's `info()` may take when it is loaded, at upload and
    /// at start-up (`VEL_PLUGIN_INFO_TIMEOUT_MS`, default 2,000).
    pub info_timeout: Duration,
    /// Plugin instances one organization's plugins may hold at once, all
    /// of them together (`VEL_PLUGIN_ORG_SHARE`, default 125 of the
    /// pool's 1,000); a call beyond it gets 429 `plugin_busy`.
    pub org_share: u32,
    /// Plugin instances only platform plugins may use
    /// (`VEL_PLUGIN_PLATFORM_RESERVE`, default 250 of 1,000): tenants'
    /// plugins together never take them.
    pub platform_reserve: u32,
}

impl RegistryConfig {
    /// The plugin settings' ranges.
    fn check_ranges(&self) -> Result<(), ConfigError> {
        let check = |name: &str, value: u64, min: u64, max: u64| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError::Invalid {
                    name: name.into(),
                    value: value.to_string(),
                    reason: format!("must be between {min} and {max}"),
                })
            }
        };
        let size = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        const KIB: u64 = 1024;
        const GIB: u64 = 1024 * 1024 * 1024;
        check(
            "VEL_PLUGIN_MAX_UPLOAD_BYTES",
            size(self.max_upload_bytes),
            KIB,
            GIB,
        )?;
        check("VEL_PLUGIN_COMPILE_SLOTS", size(self.compile_slots), 1, 64)?;
        check(
            "VEL_PLUGIN_COMPILE_TIMEOUT_MS",
            millis(self.compile_timeout),
            100,
            3_600_000,
        )?;
        check(
            "VEL_PLUGIN_INFO_TIMEOUT_MS",
            millis(self.info_timeout),
            10,
            60_000,
        )?;
        check(
            "VEL_PLUGIN_COMPILE_WAIT_MS",
            millis(self.compile_wait),
            0,
            600_000,
        )?;
        check(
            "VEL_PLUGIN_MAX_CODE_BYTES",
            size(self.max_code_bytes),
            KIB,
            GIB,
        )?;
        check(
            "VEL_PLUGIN_MAX_FUNCTION_BYTES",
            size(self.max_function_bytes),
            KIB,
            size(self.max_code_bytes),
        )?;
        check(
            "VEL_PLUGIN_ORG_QUOTA_BYTES",
            self.org_quota_bytes,
            0,
            1024 * GIB,
        )?;
        check("VEL_PLUGIN_ORG_SHARE", u64::from(self.org_share), 1, 1000)?;
        check(
            "VEL_PLUGIN_PLATFORM_RESERVE",
            u64::from(self.platform_reserve),
            0,
            999,
        )?;
        Ok(())
    }
}

/// How this instance runs tasks. Every field has an environment variable
/// and a `[tasks]`-less `vel.toml` key of the same name in lower case.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskConfig {
    /// Tasks one user may have pending or running at once (`VEL_MAX_UNFINISHED_TASKS`).
    pub max_unfinished_per_user: u32,
    /// Tasks this instance runs concurrently (`VEL_TASK_WORKERS`); 0 makes
    /// an API-only instance that queues tasks for the others.
    pub workers: u32,
    /// Workflows this instance advances concurrently
    /// (`VEL_WORKFLOW_WORKERS`); a workflow holds a worker only while it
    /// moves, never while its step's task runs or it awaits an approval.
    pub workflow_workers: u32,
    /// How long a claim holds a task without a heartbeat (`VEL_TASK_LEASE_MS`);
    /// a task whose worker died is rescued after this.
    pub lease: Duration,
    /// How often an idle worker looks for work it was not told about, and
    /// how often leases are renewed at most (`VEL_TASK_POLL_MS`).
    pub poll_interval: Duration,
    /// How long an answer stays in the response cache (`VEL_CACHE_TTL_SECS`).
    pub cache_ttl: Duration,
    /// The same for research tasks (`VEL_RESEARCH_CACHE_TTL_SECS`).
    pub research_cache_ttl: Duration,
    /// Interval of SSE keep-alive comments (`VEL_SSE_KEEPALIVE_SECS`).
    pub sse_keepalive: Duration,
    /// Time an open circuit waits before one probe (`VEL_BREAKER_COOL_DOWN_MS`).
    pub breaker_cool_down: Duration,
    /// Delay before the first retry; it doubles (`VEL_RETRY_BASE_MS`).
    pub retry_base: Duration,
    /// Gateway requests one credential (an API key, or a user's tokens) may
    /// have in flight on this instance (`VEL_GATEWAY_IN_FLIGHT_PER_KEY`).
    pub gateway_in_flight_per_key: usize,
    /// The same for a whole organization (`VEL_GATEWAY_IN_FLIGHT_PER_ORG`).
    pub gateway_in_flight_per_org: usize,
    /// Longest one run of a task or gateway request may take, every attempt,
    /// retry and fallback included (`VEL_TASK_MAX_RUN_MS`).
    pub max_run: Duration,
    /// Longest a finished gateway request waits for others before the usage
    /// recorder writes them together (`VEL_USAGE_LINGER_MS`); also the most
    /// a crash can lose.
    pub usage_linger: Duration,
    /// Most finished requests the usage recorder writes in one transaction
    /// (`VEL_USAGE_BATCH`).
    pub usage_batch: u32,
    /// Most task definitions in one batch (`VEL_BATCH_MAX_TASKS`).
    pub batch_max_tasks: u32,
    /// Most tasks of one batch running at once, and the default
    /// (`VEL_BATCH_MAX_CONCURRENCY`, 1–20); a batch may ask for fewer.
    pub batch_max_concurrency: u32,
    /// Largest batch upload, JSON or JSON Lines (`VEL_BATCH_MAX_BYTES`).
    pub batch_max_bytes: usize,
}

/// The optional `vel.toml`: the same settings in lower case without the
/// `VEL_` prefix. Unknown keys are refused so typos surface.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<String>,
    database_url: Option<String>,
    tenant_database_url: Option<String>,
    secret_key: Option<String>,
    admin_email: Option<String>,
    admin_password: Option<String>,
    db_max_connections: Option<u32>,
    max_body_bytes: Option<usize>,
    token_ttl_secs: Option<u64>,
    login_attempts_per_minute: Option<u32>,
    argon2_memory_kib: Option<u32>,
    argon2_iterations: Option<u32>,
    argon2_parallelism: Option<u32>,
    trust_proxy_headers: Option<bool>,
    trusted_proxy_hops: Option<u32>,
    client_ip_header: Option<String>,
    health_timeout_ms: Option<u64>,
    plugin_cache_dir: Option<String>,
    log: Option<String>,
    demo_mock: Option<bool>,
    metrics_org_label: Option<bool>,
    default_user_requests_per_hour: Option<u32>,
    max_unfinished_tasks: Option<u32>,
    task_workers: Option<u32>,
    workflow_workers: Option<u32>,
    task_lease_ms: Option<u64>,
    task_poll_ms: Option<u64>,
    cache_ttl_secs: Option<u64>,
    research_cache_ttl_secs: Option<u64>,
    sse_keepalive_secs: Option<u64>,
    breaker_cool_down_ms: Option<u64>,
    retry_base_ms: Option<u64>,
    task_max_run_ms: Option<u64>,
    gateway_in_flight_per_key: Option<usize>,
    gateway_in_flight_per_org: Option<usize>,
    usage_linger_ms: Option<u64>,
    usage_batch: Option<u32>,
    batch_max_tasks: Option<u32>,
    batch_max_concurrency: Option<u32>,
    batch_max_bytes: Option<usize>,
    usage_rollup_interval_ms: Option<u64>,
    budget_lease_ttl_ms: Option<u64>,
    budget_flush_ms: Option<u64>,
    usage_minute_retention_hours: Option<u64>,
    usage_hour_retention_days: Option<u64>,
    plugin_max_upload_bytes: Option<usize>,
    plugin_classes: Option<String>,
    plugin_trusted_keys: Option<String>,
    plugin_reconcile_ms: Option<u64>,
    header_read_timeout_ms: Option<u64>,
    keepalive_timeout_ms: Option<u64>,
    body_read_timeout_ms: Option<u64>,
    max_connections: Option<u32>,
    outbound_allow_private: Option<String>,
    notify_url: Option<String>,
    plugin_compile_slots: Option<usize>,
    plugin_compile_timeout_ms: Option<u64>,
    plugin_compile_wait_ms: Option<u64>,
    plugin_max_code_bytes: Option<usize>,
    plugin_max_function_bytes: Option<usize>,
    plugin_org_quota_bytes: Option<u64>,
    plugin_info_timeout_ms: Option<u64>,
    plugin_org_share: Option<u32>,
    plugin_platform_reserve: Option<u32>,
    log_format: Option<String>,
    audit_retention_days: Option<u32>,
    audit_retention_interval_ms: Option<u64>,
    cors_allowed_origins: Option<String>,
    https: Option<bool>,
    webhook_allow_http: Option<bool>,
    webhook_allow_private: Option<String>,
    webhook_timeout_ms: Option<u64>,
    webhook_retries: Option<u32>,
    webhook_retry_base_ms: Option<u64>,
    webhook_retry_max_ms: Option<u64>,
    webhook_disable_after: Option<u32>,
    webhook_workers: Option<u32>,
    webhook_delivery_retention_days: Option<u32>,
}

/// Shortest connection timeout accepted (header read, keep-alive, body read).
const CONNECTION_TIMEOUT_MIN_MS: u64 = 100;
/// Longest connection timeout accepted: an hour.
const CONNECTION_TIMEOUT_MAX_MS: u64 = 3_600_000;
/// Largest `VEL_MAX_CONNECTIONS` accepted.
const MAX_CONNECTIONS_LIMIT: u32 = 1_000_000;

/// Where settings come from: a lookup function for environment variables
/// (so tests need not touch the process environment) and the parsed file.
struct Sources<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Sources<'_> {
    /// Environment value first, then the file's, then the default; parse
    /// failures and range violations name the environment variable.
    fn get<T>(&self, env_name: &str, file: Option<T>, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match (self.env)(env_name) {
            Some(raw) => raw.trim().parse::<T>().map_err(|err| ConfigError::Invalid {
                name: env_name.to_string(),
                value: raw.clone(),
                reason: err.to_string(),
            }),
            None => Ok(file.unwrap_or(default)),
        }
    }

    /// Like [`Sources::get`] for a setting in milliseconds.
    fn millis(
        &self,
        env_name: &str,
        file: Option<u64>,
        default_ms: u64,
    ) -> Result<Duration, ConfigError> {
        self.get(env_name, file, default_ms)
            .map(Duration::from_millis)
    }

    /// Like [`Sources::get`] for a setting in seconds.
    fn secs(
        &self,
        env_name: &str,
        file: Option<u64>,
        default_secs: u64,
    ) -> Result<Duration, ConfigError> {
        self.get(env_name, file, default_secs)
            .map(Duration::from_secs)
    }

    /// Like [`Sources::get`] for a setting without a default.
    fn get_parsed_opt<T>(&self, env_name: &str, file: Option<T>) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match (self.env)(env_name).filter(|v| !v.trim().is_empty()) {
            Some(raw) => raw
                .trim()
                .parse::<T>()
                .map(Some)
                .map_err(|err| ConfigError::Invalid {
                    name: env_name.to_string(),
                    value: raw.clone(),
                    reason: err.to_string(),
                }),
            None => Ok(file),
        }
    }

    fn get_opt(&self, env_name: &str, file: Option<String>) -> Option<String> {
        (self.env)(env_name)
            .filter(|v| !v.trim().is_empty())
            .or(file)
    }
}

impl Config {
    /// Load from the process environment and `VEL_CONFIG` (default `./vel.toml` when it exists).
    pub fn from_env() -> Result<Config, ConfigError> {
        let env = |name: &str| std::env::var(name).ok();
        Config::load(&env)
    }

    /// Load with an explicit environment lookup (used by tests and `from_env`).
    pub fn load(env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let file = match env("VEL_CONFIG") {
            Some(path) => read_file(Path::new(&path))?,
            None if Path::new("vel.toml").exists() => read_file(Path::new("vel.toml"))?,
            None => FileConfig::default(),
        };
        let src = Sources { env };
        let operations = operations::load(&src, &file)?;
        let listen = src.get(
            "VEL_LISTEN",
            file.listen
                .map(|s| parse_file::<SocketAddr>("listen", &s))
                .transpose()?,
            SocketAddr::from(([127, 0, 0, 1], 8080)),
        )?;
        let data_dir: PathBuf = src.get(
            "VEL_DATA_DIR",
            file.data_dir.map(PathBuf::from),
            PathBuf::from("./vel-data"),
        )?;
        let database_url = src
            .get_opt("DATABASE_URL", file.database_url)
            .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", data_dir.join("vel.db").display()));
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(ConfigError::Invalid {
                name: "DATABASE_URL".into(),
                value: redact_url(&database_url),
                reason: "expected a sqlite:// or postgres:// URL".into(),
            });
        }
        let tenant_database_url = src.get_opt("VEL_TENANT_DATABASE_URL", file.tenant_database_url);
        if let Some(url) = &tenant_database_url
            && !(database_url.starts_with("postgres")
                && (url.starts_with("postgres://") || url.starts_with("postgresql://")))
        {
            return Err(ConfigError::Invalid {
                name: "VEL_TENANT_DATABASE_URL".into(),
                value: redact_url(url),
                reason: "expected a postgres:// URL, with a postgres:// DATABASE_URL".into(),
            });
        }
        let notify_url = src
            .get_opt("VEL_NOTIFY_URL", file.notify_url)
            .map(|raw| {
                raw.parse::<NotifyUrl>()
                    .map_err(|reason| ConfigError::Invalid {
                        name: "VEL_NOTIFY_URL".into(),
                        value: redact_url(&raw),
                        reason,
                    })
            })
            .transpose()?;
        let admin_email = src.get(
            "VEL_ADMIN_EMAIL",
            file.admin_email,
            "admin@vel.local".to_string(),
        )?;
        let config = Config {
            listen,
            data_dir: data_dir.clone(),
            database_url,
            tenant_database_url,
            secret_key: src.get_opt("VEL_SECRET_KEY", file.secret_key),
            admin_email,
            admin_password: src.get_opt("VEL_ADMIN_PASSWORD", file.admin_password),
            db_max_connections: src.get("VEL_DB_MAX_CONNECTIONS", file.db_max_connections, 10)?,
            max_body_bytes: src.get("VEL_MAX_BODY_BYTES", file.max_body_bytes, 1024 * 1024)?,
            token_ttl: src
                .get("VEL_TOKEN_TTL_SECS", file.token_ttl_secs, 24 * 3600)
                .map(Duration::from_secs)?,
            login_attempts_per_minute: src.get(
                "VEL_LOGIN_ATTEMPTS_PER_MINUTE",
                file.login_attempts_per_minute,
                5,
            )?,
            argon2_memory_kib: src.get(
                "VEL_ARGON2_MEMORY_KIB",
                file.argon2_memory_kib,
                19 * 1024,
            )?,
            argon2_iterations: src.get("VEL_ARGON2_ITERATIONS", file.argon2_iterations, 2)?,
            argon2_parallelism: src.get("VEL_ARGON2_PARALLELISM", file.argon2_parallelism, 1)?,
            trust_proxy_headers: src.get(
                "VEL_TRUST_PROXY_HEADERS",
                file.trust_proxy_headers,
                false,
            )?,
            trusted_proxy_hops: src.get("VEL_TRUSTED_PROXY_HOPS", file.trusted_proxy_hops, 1)?,
            client_ip_header: src
                .get_opt("VEL_CLIENT_IP_HEADER", file.client_ip_header)
                .map_or_else(
                    || "x-forwarded-for".to_string(),
                    |h| h.trim().to_ascii_lowercase(),
                ),
            health_timeout: src.millis("VEL_HEALTH_TIMEOUT_MS", file.health_timeout_ms, 500)?,
            plugin_cache_dir: src
                .get_opt("VEL_PLUGIN_CACHE_DIR", file.plugin_cache_dir)
                .map(PathBuf::from)
                .unwrap_or_else(|| data_dir.join("plugin-cache")),
            log: src
                .get_opt("VEL_LOG", file.log)
                .or_else(|| env("RUST_LOG"))
                .unwrap_or_else(|| "info".to_string()),
            demo_mock: src.get("VEL_DEMO_MOCK", file.demo_mock, true)?,
            metrics_org_label: src.get("VEL_METRICS_ORG_LABEL", file.metrics_org_label, false)?,
            default_user_requests_per_hour: Some(i64::from(src.get(
                "VEL_DEFAULT_USER_REQUESTS_PER_HOUR",
                file.default_user_requests_per_hour,
                0u32,
            )?))
            .filter(|n| *n > 0),
            tasks: TaskConfig {
                max_unfinished_per_user: src.get(
                    "VEL_MAX_UNFINISHED_TASKS",
                    file.max_unfinished_tasks,
                    10,
                )?,
                workers: src.get("VEL_TASK_WORKERS", file.task_workers, 16)?,
                workflow_workers: src.get("VEL_WORKFLOW_WORKERS", file.workflow_workers, 4)?,
                lease: src.millis("VEL_TASK_LEASE_MS", file.task_lease_ms, 15_000)?,
                poll_interval: src.millis("VEL_TASK_POLL_MS", file.task_poll_ms, 500)?,
                cache_ttl: src.secs("VEL_CACHE_TTL_SECS", file.cache_ttl_secs, 3600)?,
                research_cache_ttl: src.secs(
                    "VEL_RESEARCH_CACHE_TTL_SECS",
                    file.research_cache_ttl_secs,
                    24 * 3600,
                )?,
                sse_keepalive: src.secs("VEL_SSE_KEEPALIVE_SECS", file.sse_keepalive_secs, 15)?,
                breaker_cool_down: src.millis(
                    "VEL_BREAKER_COOL_DOWN_MS",
                    file.breaker_cool_down_ms,
                    30_000,
                )?,
                retry_base: src.millis("VEL_RETRY_BASE_MS", file.retry_base_ms, 100)?,
                max_run: src.millis("VEL_TASK_MAX_RUN_MS", file.task_max_run_ms, 600_000)?,
                gateway_in_flight_per_key: src.get(
                    "VEL_GATEWAY_IN_FLIGHT_PER_KEY",
                    file.gateway_in_flight_per_key,
                    64,
                )?,
                gateway_in_flight_per_org: src.get(
                    "VEL_GATEWAY_IN_FLIGHT_PER_ORG",
                    file.gateway_in_flight_per_org,
                    192,
                )?,
                usage_linger: src.millis("VEL_USAGE_LINGER_MS", file.usage_linger_ms, 1000)?,
                usage_batch: src.get("VEL_USAGE_BATCH", file.usage_batch, 2048)?,
                batch_max_tasks: src.get("VEL_BATCH_MAX_TASKS", file.batch_max_tasks, 10_000)?,
                batch_max_concurrency: src.get(
                    "VEL_BATCH_MAX_CONCURRENCY",
                    file.batch_max_concurrency,
                    20,
                )?,
                batch_max_bytes: src.get(
                    "VEL_BATCH_MAX_BYTES",
                    file.batch_max_bytes,
                    64 * 1024 * 1024,
                )?,
            },
            budgets: LedgerSettings {
                lease_ttl: src.millis(
                    "VEL_BUDGET_LEASE_TTL_MS",
                    file.budget_lease_ttl_ms,
                    30_000,
                )?,
                flush_every: src.millis("VEL_BUDGET_FLUSH_MS", file.budget_flush_ms, 200)?,
                ..LedgerSettings::default()
            },
            usage_rollup: RollupConfig {
                interval: src.millis(
                    "VEL_USAGE_ROLLUP_INTERVAL_MS",
                    file.usage_rollup_interval_ms,
                    60_000,
                )?,
                minute_retention: Duration::from_secs(
                    src.get::<u64>(
                        "VEL_USAGE_MINUTE_RETENTION_HOURS",
                        file.usage_minute_retention_hours,
                        7 * 24,
                    )?
                    .saturating_mul(3600),
                ),
                hour_retention: Duration::from_secs(
                    src.get::<u64>(
                        "VEL_USAGE_HOUR_RETENTION_DAYS",
                        file.usage_hour_retention_days,
                        90,
                    )?
                    .saturating_mul(86_400),
                ),
            },
            registry: RegistryConfig {
                max_upload_bytes: src.get(
                    "VEL_PLUGIN_MAX_UPLOAD_BYTES",
                    file.plugin_max_upload_bytes,
                    10 * 1024 * 1024,
                )?,
                classes: {
                    let raw = src
                        .get_opt("VEL_PLUGIN_CLASSES", file.plugin_classes)
                        .unwrap_or_default();
                    classes::parse(&raw).map_err(|reason| ConfigError::Invalid {
                        name: "VEL_PLUGIN_CLASSES".into(),
                        value: raw.clone(),
                        reason,
                    })?
                },
                trusted_keys: parse_trusted_keys(
                    &src.get_opt("VEL_PLUGIN_TRUSTED_KEYS", file.plugin_trusted_keys)
                        .unwrap_or_default(),
                )?,
                reconcile_interval: src.millis(
                    "VEL_PLUGIN_RECONCILE_MS",
                    file.plugin_reconcile_ms,
                    5_000,
                )?,
                compile_slots: src.get("VEL_PLUGIN_COMPILE_SLOTS", file.plugin_compile_slots, 2)?,
                compile_timeout: src.millis(
                    "VEL_PLUGIN_COMPILE_TIMEOUT_MS",
                    file.plugin_compile_timeout_ms,
                    60_000,
                )?,
                compile_wait: src.millis(
                    "VEL_PLUGIN_COMPILE_WAIT_MS",
                    file.plugin_compile_wait_ms,
                    10_000,
                )?,
                max_code_bytes: src.get(
                    "VEL_PLUGIN_MAX_CODE_BYTES",
                    file.plugin_max_code_bytes,
                    4 * 1024 * 1024,
                )?,
                max_function_bytes: src.get(
                    "VEL_PLUGIN_MAX_FUNCTION_BYTES",
                    file.plugin_max_function_bytes,
                    64 * 1024,
                )?,
                org_quota_bytes: src.get(
                    "VEL_PLUGIN_ORG_QUOTA_BYTES",
                    file.plugin_org_quota_bytes,
                    100 * 1024 * 1024,
                )?,
                info_timeout: src.millis(
                    "VEL_PLUGIN_INFO_TIMEOUT_MS",
                    file.plugin_info_timeout_ms,
                    2_000,
                )?,
                org_share: src.get("VEL_PLUGIN_ORG_SHARE", file.plugin_org_share, 125)?,
                platform_reserve: src.get(
                    "VEL_PLUGIN_PLATFORM_RESERVE",
                    file.plugin_platform_reserve,
                    250,
                )?,
            },
            connections: ConnectionConfig {
                header_read_timeout: src.millis(
                    "VEL_HEADER_READ_TIMEOUT_MS",
                    file.header_read_timeout_ms,
                    10_000,
                )?,
                keepalive_timeout: src.millis(
                    "VEL_KEEPALIVE_TIMEOUT_MS",
                    file.keepalive_timeout_ms,
                    60_000,
                )?,
                body_read_timeout: src.millis(
                    "VEL_BODY_READ_TIMEOUT_MS",
                    file.body_read_timeout_ms,
                    30_000,
                )?,
                max_connections: src.get_parsed_opt("VEL_MAX_CONNECTIONS", file.max_connections)?,
            },
            outbound_allow_private: src.get(
                "VEL_OUTBOUND_ALLOW_PRIVATE",
                file.outbound_allow_private
                    .map(|s| parse_file::<AllowPrivate>("outbound_allow_private", &s))
                    .transpose()?,
                AllowPrivate::default(),
            )?,
            notify_url,
            operations,
            webhooks: WebhookConfig {
                allow_http: src.get("VEL_WEBHOOK_ALLOW_HTTP", file.webhook_allow_http, false)?,
                allow_private: src.get(
                    "VEL_WEBHOOK_ALLOW_PRIVATE",
                    file.webhook_allow_private
                        .map(|s| parse_file::<AllowPrivate>("webhook_allow_private", &s))
                        .transpose()?,
                    AllowPrivate::default(),
                )?,
                timeout: src.millis("VEL_WEBHOOK_TIMEOUT_MS", file.webhook_timeout_ms, 10_000)?,
                retries: src.get("VEL_WEBHOOK_RETRIES", file.webhook_retries, 3)?,
                retry_base: src.millis(
                    "VEL_WEBHOOK_RETRY_BASE_MS",
                    file.webhook_retry_base_ms,
                    5_000,
                )?,
                retry_max: src.millis(
                    "VEL_WEBHOOK_RETRY_MAX_MS",
                    file.webhook_retry_max_ms,
                    600_000,
                )?,
                disable_after: src.get(
                    "VEL_WEBHOOK_DISABLE_AFTER",
                    file.webhook_disable_after,
                    10,
                )?,
                workers: src.get("VEL_WEBHOOK_WORKERS", file.webhook_workers, 4)?,
                delivery_retention_days: src.get(
                    "VEL_WEBHOOK_DELIVERY_RETENTION_DAYS",
                    file.webhook_delivery_retention_days,
                    30,
                )?,
            },
        };
        config.check_ranges()?;
        Ok(config)
    }

    /// Range checks that parsing alone cannot express.
    fn check_ranges(&self) -> Result<(), ConfigError> {
        let bad = |name: &str, value: String, reason: &str| ConfigError::Invalid {
            name: name.into(),
            value,
            reason: reason.into(),
        };
        if self.db_max_connections == 0 {
            return Err(bad(
                "VEL_DB_MAX_CONNECTIONS",
                "0".into(),
                "must be at least 1",
            ));
        }
        if self.max_body_bytes < 1024 {
            return Err(bad(
                "VEL_MAX_BODY_BYTES",
                self.max_body_bytes.to_string(),
                "must be at least 1024",
            ));
        }
        if !(1..=20).contains(&self.tasks.batch_max_concurrency) {
            return Err(bad(
                "VEL_BATCH_MAX_CONCURRENCY",
                self.tasks.batch_max_concurrency.to_string(),
                "must be 1 to 20",
            ));
        }
        if !(1..=100_000).contains(&self.tasks.batch_max_tasks) {
            return Err(bad(
                "VEL_BATCH_MAX_TASKS",
                self.tasks.batch_max_tasks.to_string(),
                "must be 1 to 100000",
            ));
        }
        if self.tasks.batch_max_bytes < 1024 {
            return Err(bad(
                "VEL_BATCH_MAX_BYTES",
                self.tasks.batch_max_bytes.to_string(),
                "must be at least 1024",
            ));
        }
        if self.token_ttl.as_secs() < 60 {
            return Err(bad(
                "VEL_TOKEN_TTL_SECS",
                self.token_ttl.as_secs().to_string(),
                "must be at least 60",
            ));
        }
        for (name, value) in [
            (
                "VEL_MAX_UNFINISHED_TASKS",
                u64::from(self.tasks.max_unfinished_per_user),
            ),
            ("VEL_TASK_POLL_MS", millis(self.tasks.poll_interval)),
            ("VEL_SSE_KEEPALIVE_SECS", self.tasks.sse_keepalive.as_secs()),
            (
                "VEL_PLUGIN_RECONCILE_MS",
                millis(self.registry.reconcile_interval),
            ),
            ("VEL_USAGE_BATCH", u64::from(self.tasks.usage_batch)),
            (
                "VEL_USAGE_ROLLUP_INTERVAL_MS",
                millis(self.usage_rollup.interval),
            ),
            ("VEL_BUDGET_LEASE_TTL_MS", millis(self.budgets.lease_ttl)),
            ("VEL_BUDGET_FLUSH_MS", millis(self.budgets.flush_every)),
            (
                "VEL_USAGE_MINUTE_RETENTION_HOURS",
                self.usage_rollup.minute_retention.as_secs(),
            ),
            (
                "VEL_USAGE_HOUR_RETENTION_DAYS",
                self.usage_rollup.hour_retention.as_secs(),
            ),
        ] {
            if value == 0 {
                return Err(bad(name, "0".into(), "must be at least 1"));
            }
        }
        for (name, value) in [
            (
                "VEL_GATEWAY_IN_FLIGHT_PER_KEY",
                self.tasks.gateway_in_flight_per_key,
            ),
            (
                "VEL_GATEWAY_IN_FLIGHT_PER_ORG",
                self.tasks.gateway_in_flight_per_org,
            ),
        ] {
            if !(1..=100_000).contains(&value) {
                return Err(bad(name, value.to_string(), "must be between 1 and 100000"));
            }
        }
        if !(1_000..=86_400_000).contains(&millis(self.tasks.max_run)) {
            return Err(bad(
                "VEL_TASK_MAX_RUN_MS",
                millis(self.tasks.max_run).to_string(),
                "must be between 1000 (a second) and 86400000 (a day)",
            ));
        }
        if millis(self.tasks.usage_linger) > 60_000 {
            return Err(bad(
                "VEL_USAGE_LINGER_MS",
                millis(self.tasks.usage_linger).to_string(),
                "must be at most 60000",
            ));
        }
        if millis(self.tasks.lease) < 500 {
            return Err(bad(
                "VEL_TASK_LEASE_MS",
                millis(self.tasks.lease).to_string(),
                "must be at least 500",
            ));
        }
        if http::HeaderName::from_bytes(self.client_ip_header.as_bytes()).is_err() {
            return Err(bad(
                "VEL_CLIENT_IP_HEADER",
                self.client_ip_header.clone(),
                "must be an HTTP header name",
            ));
        }
        if !(1..=10).contains(&self.trusted_proxy_hops) {
            return Err(bad(
                "VEL_TRUSTED_PROXY_HOPS",
                self.trusted_proxy_hops.to_string(),
                "must be between 1 and 10",
            ));
        }
        for (name, value) in [
            (
                "VEL_HEADER_READ_TIMEOUT_MS",
                self.connections.header_read_timeout,
            ),
            (
                "VEL_KEEPALIVE_TIMEOUT_MS",
                self.connections.keepalive_timeout,
            ),
            (
                "VEL_BODY_READ_TIMEOUT_MS",
                self.connections.body_read_timeout,
            ),
        ] {
            let value = millis(value);
            if !(CONNECTION_TIMEOUT_MIN_MS..=CONNECTION_TIMEOUT_MAX_MS).contains(&value) {
                return Err(bad(
                    name,
                    value.to_string(),
                    &format!(
                        "must be between {CONNECTION_TIMEOUT_MIN_MS} and {CONNECTION_TIMEOUT_MAX_MS}"
                    ),
                ));
            }
        }
        if let Some(max) = self.connections.max_connections
            && !(1..=MAX_CONNECTIONS_LIMIT).contains(&max)
        {
            return Err(bad(
                "VEL_MAX_CONNECTIONS",
                max.to_string(),
                &format!("must be between 1 and {MAX_CONNECTIONS_LIMIT}"),
            ));
        }
        self.registry.check_ranges()?;
        if self.login_attempts_per_minute == 0 {
            return Err(bad(
                "VEL_LOGIN_ATTEMPTS_PER_MINUTE",
                "0".into(),
                "must be at least 1",
            ));
        }
        if argon2::Params::new(
            self.argon2_memory_kib,
            self.argon2_iterations,
            self.argon2_parallelism,
            None,
        )
        .is_err()
        {
            return Err(bad(
                "VEL_ARGON2_MEMORY_KIB",
                format!(
                    "{} (iterations {}, parallelism {})",
                    self.argon2_memory_kib, self.argon2_iterations, self.argon2_parallelism
                ),
                "not valid Argon2 parameters (memory >= 8 x parallelism KiB, iterations >= 1)",
            ));
        }
        if !crate::auth::password::is_valid_email(&self.admin_email) {
            return Err(bad(
                "VEL_ADMIN_EMAIL",
                self.admin_email.clone(),
                "not a valid email address",
            ));
        }
        if let Some(pw) = &self.admin_password
            && let Err(reason) = crate::auth::password::check_strength(pw)
        {
            return Err(bad("VEL_ADMIN_PASSWORD", "(hidden)".into(), &reason));
        }
        let w = &self.webhooks;
        for (name, value, min, max) in [
            ("VEL_WEBHOOK_TIMEOUT_MS", millis(w.timeout), 100, 300_000),
            ("VEL_WEBHOOK_RETRIES", u64::from(w.retries), 0, 20),
            (
                "VEL_WEBHOOK_RETRY_BASE_MS",
                millis(w.retry_base),
                10,
                3_600_000,
            ),
            (
                "VEL_WEBHOOK_RETRY_MAX_MS",
                millis(w.retry_max),
                millis(w.retry_base),
                86_400_000,
            ),
            (
                "VEL_WEBHOOK_DISABLE_AFTER",
                u64::from(w.disable_after),
                1,
                1_000,
            ),
            ("VEL_WEBHOOK_WORKERS", u64::from(w.workers), 0, 256),
        ] {
            if !(min..=max).contains(&value) {
                return Err(bad(
                    name,
                    value.to_string(),
                    &format!("must be between {min} and {max}"),
                ));
            }
        }
        Ok(())
    }
}

/// A duration in whole milliseconds, as the `*_MS` settings write it.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|err| ConfigError::File {
        path: path.to_path_buf(),
        reason: err.to_string(),
    })?;
    toml::from_str(&text).map_err(|err| ConfigError::File {
        path: path.to_path_buf(),
        reason: err.to_string(),
    })
}

/// ed25519 public keys: comma-separated, each 32 bytes in base64 or hex.
fn parse_trusted_keys(list: &str) -> Result<Vec<[u8; 32]>, ConfigError> {
    use base64::Engine as _;
    list.split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|k| {
            let bytes = hex::decode(k)
                .ok()
                .or_else(|| base64::engine::general_purpose::STANDARD.decode(k).ok())
                .unwrap_or_default();
            <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| ConfigError::Invalid {
                name: "VEL_PLUGIN_TRUSTED_KEYS".into(),
                value: k.to_string(),
                reason: "each key must be 32 bytes in base64 or hex".into(),
            })
        })
        .collect()
}

fn parse_file<T>(key: &str, value: &str) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|err: T::Err| ConfigError::Invalid {
        name: format!("vel.toml key `{key}`"),
        value: value.to_string(),
        reason: err.to_string(),
    })
}

/// Hide a password in a database URL before it is shown in an error.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let creds = &url[scheme_end + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load(&move |name: &str| map.get(name).cloned())
    }

    #[test]
    fn defaults_apply() {
        let c = load(&[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert!(c.database_url.starts_with("sqlite://"));
        assert_eq!(c.login_attempts_per_minute, 5);
        assert_eq!(c.plugin_cache_dir, c.data_dir.join("plugin-cache"));
        let c = load(&[("VEL_PLUGIN_CACHE_DIR", "/tmp/cache")]).unwrap();
        assert_eq!(c.plugin_cache_dir, PathBuf::from("/tmp/cache"));
    }

    #[test]
    fn the_notify_url_is_optional_and_checked() {
        assert_eq!(load(&[]).unwrap().notify_url, None);
        let c = load(&[("VEL_NOTIFY_URL", "https://hooks.example/vel")]).unwrap();
        assert_eq!(
            c.notify_url.map(|u| u.to_string()).as_deref(),
            Some("https://hooks.example/vel")
        );
        let err = load(&[("VEL_NOTIFY_URL", "ftp://u:s3cret@hooks.example/")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("VEL_NOTIFY_URL"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn invalid_setting_is_named() {
        let err = load(&[("VEL_LISTEN", "nope")]).unwrap_err().to_string();
        assert!(err.contains("VEL_LISTEN"), "{err}");
        let err = load(&[("DATABASE_URL", "mysql://x")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("DATABASE_URL"), "{err}");
        for (name, value) in [("VEL_USAGE_BATCH", "0"), ("VEL_USAGE_LINGER_MS", "60001")] {
            let err = load(&[(name, value)]).unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
        let err = load(&[("VEL_OUTBOUND_ALLOW_PRIVATE", "10.0.0.0/8,not a host")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("VEL_OUTBOUND_ALLOW_PRIVATE") && err.contains("not a host"),
            "{err}"
        );
        let c = load(&[("VEL_OUTBOUND_ALLOW_PRIVATE", " 10.0.0.0/8, llm.internal ")]).unwrap();
        assert_eq!(
            c.outbound_allow_private.to_string(),
            "10.0.0.0/8,llm.internal"
        );
        assert!(load(&[]).unwrap().outbound_allow_private.is_empty());
        let c = load(&[("VEL_USAGE_LINGER_MS", "0"), ("VEL_USAGE_BATCH", "1")]).unwrap();
        assert_eq!(
            (c.tasks.usage_linger, c.tasks.usage_batch),
            (Duration::ZERO, 1)
        );
        let err = load(&[("VEL_ADMIN_PASSWORD", "short")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("VEL_ADMIN_PASSWORD") && !err.contains("short\""),
            "{err}"
        );
    }

    #[test]
    fn connection_limits_have_defaults_and_ranges() {
        let c = load(&[]).unwrap().connections;
        assert_eq!(
            c,
            ConnectionConfig {
                header_read_timeout: Duration::from_millis(10_000),
                keepalive_timeout: Duration::from_millis(60_000),
                body_read_timeout: Duration::from_millis(30_000),
                max_connections: None,
            }
        );
        let c = load(&[
            ("VEL_HEADER_READ_TIMEOUT_MS", "100"),
            ("VEL_KEEPALIVE_TIMEOUT_MS", "3600000"),
            ("VEL_BODY_READ_TIMEOUT_MS", "250"),
            ("VEL_MAX_CONNECTIONS", "1"),
        ])
        .unwrap()
        .connections;
        assert_eq!(
            (
                millis(c.header_read_timeout),
                millis(c.keepalive_timeout),
                millis(c.body_read_timeout),
                c.max_connections
            ),
            (100, 3_600_000, 250, Some(1))
        );
        for (name, value) in [
            ("VEL_HEADER_READ_TIMEOUT_MS", "0"),
            ("VEL_HEADER_READ_TIMEOUT_MS", "99"),
            ("VEL_KEEPALIVE_TIMEOUT_MS", "3600001"),
            ("VEL_BODY_READ_TIMEOUT_MS", "-1"),
            ("VEL_BODY_READ_TIMEOUT_MS", "soon"),
            ("VEL_MAX_CONNECTIONS", "0"),
            ("VEL_MAX_CONNECTIONS", "1000001"),
            ("VEL_MAX_CONNECTIONS", "many"),
        ] {
            let err = load(&[(name, value)]).unwrap_err().to_string();
            assert!(err.contains(name), "{name}={value}: {err}");
        }
    }

    #[test]
    fn connection_limits_come_from_the_file() {
        let dir = std::env::temp_dir().join(format!("vel-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vel.toml");
        std::fs::write(
            &path,
            "header_read_timeout_ms = 2000\nkeepalive_timeout_ms = 5000\n\
             body_read_timeout_ms = 7000\nmax_connections = 64\n",
        )
        .unwrap();
        let path_text = path.display().to_string();
        let c = load(&[("VEL_CONFIG", &path_text)]).unwrap().connections;
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            (
                millis(c.header_read_timeout),
                millis(c.keepalive_timeout),
                millis(c.body_read_timeout),
                c.max_connections
            ),
            (2000, 5000, 7000, Some(64))
        );
    }

    #[test]
    fn webhook_settings_have_defaults_and_ranges() {
        let c = load(&[]).unwrap();
        assert_eq!(c.webhooks, WebhookConfig::default());
        assert!(!c.webhooks.allow_http && c.webhooks.allow_private.is_empty());
        assert_eq!(c.webhooks.timeout, Duration::from_secs(10));
        assert_eq!(c.webhooks.retries, 3);
        assert_eq!(c.webhooks.delivery_retention_days, 30);
        for (name, value) in [
            ("VEL_WEBHOOK_TIMEOUT_MS", "50"),
            ("VEL_WEBHOOK_RETRIES", "21"),
            ("VEL_WEBHOOK_RETRY_BASE_MS", "1"),
            ("VEL_WEBHOOK_RETRY_MAX_MS", "4999"),
            ("VEL_WEBHOOK_DISABLE_AFTER", "0"),
            ("VEL_WEBHOOK_ALLOW_PRIVATE", "not a range/"),
            ("VEL_WEBHOOK_ALLOW_HTTP", "maybe"),
            ("VEL_WEBHOOK_DELIVERY_RETENTION_DAYS", "-1"),
        ] {
            let err = load(&[(name, value)]).unwrap_err().to_string();
            assert!(err.contains(name), "{name}={value}: {err}");
        }
        let c = load(&[
            ("VEL_WEBHOOK_ALLOW_HTTP", "true"),
            ("VEL_WEBHOOK_ALLOW_PRIVATE", "127.0.0.0/8"),
            ("VEL_WEBHOOK_RETRIES", "0"),
        ])
        .unwrap();
        assert!(c.webhooks.allow_http);
        assert!(
            c.webhooks
                .allow_private
                .allows("127.0.0.1".parse().unwrap())
        );
        assert_eq!(c.webhooks.retries, 0);
    }

    #[test]
    fn plugin_compile_settings_are_range_checked() {
        let c = load(&[]).unwrap();
        assert_eq!(c.registry.compile_slots, 2);
        assert_eq!(c.registry.compile_timeout, Duration::from_millis(60_000));
        assert_eq!(c.registry.org_quota_bytes, 100 * 1024 * 1024);
        assert!(c.registry.max_function_bytes <= c.registry.max_code_bytes);
        for (name, value) in [
            ("VEL_PLUGIN_COMPILE_SLOTS", "0"),
            ("VEL_PLUGIN_COMPILE_SLOTS", "65"),
            ("VEL_PLUGIN_COMPILE_TIMEOUT_MS", "10"),
            ("VEL_PLUGIN_INFO_TIMEOUT_MS", "5"),
            ("VEL_PLUGIN_COMPILE_WAIT_MS", "600001"),
            ("VEL_PLUGIN_MAX_CODE_BYTES", "100"),
            ("VEL_PLUGIN_MAX_FUNCTION_BYTES", "100"),
            ("VEL_PLUGIN_MAX_UPLOAD_BYTES", "0"),
            ("VEL_PLUGIN_ORG_QUOTA_BYTES", "-1"),
        ] {
            let err = load(&[(name, value)]).unwrap_err().to_string();
            assert!(err.contains(name), "{name}={value}: {err}");
        }
        // A function cannot be larger than all the code together.
        let err = load(&[
            ("VEL_PLUGIN_MAX_CODE_BYTES", "65536"),
            ("VEL_PLUGIN_MAX_FUNCTION_BYTES", "65537"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("VEL_PLUGIN_MAX_FUNCTION_BYTES"), "{err}");
        let c = load(&[
            ("VEL_PLUGIN_COMPILE_SLOTS", "1"),
            ("VEL_PLUGIN_COMPILE_WAIT_MS", "0"),
            ("VEL_PLUGIN_ORG_QUOTA_BYTES", "0"),
        ])
        .unwrap();
        assert_eq!(c.registry.compile_slots, 1);
        assert_eq!(c.registry.compile_wait, Duration::ZERO);
        assert_eq!(c.registry.org_quota_bytes, 0);
    }

    #[test]
    fn a_tenant_login_needs_postgres_on_both_urls() {
        // With the embedded SQLite there is no role to log in as.
        let err = load(&[("VEL_TENANT_DATABASE_URL", "postgres://t:pw@h/db")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("VEL_TENANT_DATABASE_URL"), "{err}");
        assert!(!err.contains("pw"), "the password leaked: {err}");
        let both = load(&[
            ("DATABASE_URL", "postgres://o@h/db"),
            ("VEL_TENANT_DATABASE_URL", "postgres://t@h/db"),
        ])
        .unwrap();
        assert_eq!(
            both.tenant_database_url.as_deref(),
            Some("postgres://t@h/db")
        );
        // Empty means unset.
        let unset = load(&[("VEL_TENANT_DATABASE_URL", "")]).unwrap();
        assert_eq!(unset.tenant_database_url, None);
    }

    #[test]
    fn url_password_is_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
    }
}
