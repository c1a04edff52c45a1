//! Storage: one connection pool over SQLite or PostgreSQL, the embedded
//! migrations, and one module per table group.
//!
//! Both backends are served through `sqlx::Any` with portable SQL (`$n`
//! placeholders, text UUID ids, integer unix-millisecond timestamps, JSON as
//! text); see `docs/architecture.md`. Tenant-owned data is only reached
//! through [`Db::tenant`] (or the explicit [`Db::platform`] bypass), which on
//! PostgreSQL also sets the row-level-security context for the transaction.

pub mod agents;
pub mod alerts;
pub mod api_keys;
pub mod audit_logs;
pub mod batches;
pub mod benchmarks;
pub mod budgets;
pub mod cluster_slots;
pub mod email_changes;
pub mod integrations;
pub mod invitations;
pub mod jobs;
pub mod leases;
pub mod organizations;
pub mod plugins;
pub mod rate_limit_rules;
pub mod rate_limits;
pub mod roles;
pub mod sealed;
pub mod tasks;
pub mod tokens;
pub mod usage;
pub mod usage_buckets;
pub mod users;
pub mod webhooks;
pub mod workflow_templates;
pub mod workflows;
mod write_gate;

pub use write_gate::GateStats;

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, ConnectOptions, Connection, Executor};
use write_gate::{Held, WriteGate};

/// How long a statement waits for SQLite's write lock, and a writer for
/// the in-process write gate, before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Run at the start of a PostgreSQL transaction whose task writes raise no
/// notification of their own (see [`Db::tenant_relayed`]).
const RELAY: &str = "SET LOCAL app.relay TO on;";

/// A transaction on either backend. It dereferences to the connection, so
/// `&mut *tx` is what the store functions take.
pub struct Tx {
    inner: sqlx::Transaction<'static, sqlx::Any>,
    /// On SQLite, a writing transaction holds the write gate until it ends
    /// (declared after `inner`, so it is released after the transaction).
    _write_gate: Option<Held>,
}

impl Tx {
    /// Commit the transaction (and release the SQLite write gate).
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.inner.commit().await
    }

    /// Roll the transaction back (dropping it does too).
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.inner.rollback().await
    }
}

impl Deref for Tx {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.inner
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.inner
    }
}

impl std::fmt::Debug for Tx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx")
            .field("writes", &self._write_gate.is_some())
            .finish()
    }
}

/// Which database the server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default: one file in the data directory.
    Sqlite,
    /// A shared server, required to run several instances.
    Postgres,
}

impl Backend {
    /// Tell the backend from a database URL.
    pub fn from_url(url: &str) -> Backend {
        if url.starts_with("postgres") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }

    /// The backend a connection talks to, for the few statements whose
    /// best form differs between the two.
    pub fn of(conn: &AnyConnection) -> Backend {
        if conn.backend_name() == <sqlx::Postgres as sqlx::Database>::NAME {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }

    /// Lower-case name for health output and logs.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The PostgreSQL role the tenant pool's connections switch to, so that
/// row-level security applies (the connecting user may be a superuser or
/// the tables' owner, both of which bypass it): the policies show it the
/// rows of the organization named by `app.org_id`, and nothing of the
/// tables that belong to no tenant. Created by the first migration.
pub const APP_ROLE: &str = "vel_app";

/// The PostgreSQL role the platform pool's connections switch to: the
/// policies show it every row. Created by migration 0009.
pub const PLATFORM_ROLE: &str = "vel_platform";

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Errors opening or migrating the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or a statement failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The SQLite data directory could not be created.
    #[error("data directory: {0}")]
    DataDir(std::io::Error),
}

/// The shared handle to the database: cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    /// Connections acting as [`APP_ROLE`]: tenant work.
    pool: AnyPool,
    /// Connections acting as [`PLATFORM_ROLE`]: work across organizations.
    /// The same pool as `pool` on SQLite.
    platform_pool: AnyPool,
    backend: Backend,
    /// SQLite allows one writer at a time. Writers queue here, in order and
    /// woken the moment the previous one ends, instead of in SQLite's busy
    /// handler, which polls by sleeping 1, 2, 5, 10… ms and so added
    /// milliseconds to a request whenever a task worker was writing.
    write_gate: WriteGate,
    /// This instance's id. On PostgreSQL every connection of the pool
    /// carries it (`app.origin`), so the signals the database announces
    /// itself (migration 0004) name the instance that wrote, as
    /// [`crate::orchestrator::signals::Signals`] does for its own.
    origin: Arc<str>,
}

impl Db {
    /// Apply pending migrations over a dedicated connection as the
    /// connecting user (who owns the schema), not as the RLS role.
    pub async fn migrate(url: &str) -> Result<(), StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url);
        ensure_sqlite_dir(url)?;
        let options: AnyConnectOptions = url.parse()?;
        let mut conn = options.disable_statement_logging().connect().await?;
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATOR,
            Backend::Postgres => &POSTGRES_MIGRATOR,
        };
        migrator.run(&mut conn).await?;
        conn.close().await?;
        Ok(())
    }

    /// Migrate, then open the pools that serve requests. Platform work
    /// (crossing organizations) connects with `url`; tenant work with
    /// `tenant_url` when given (on PostgreSQL a login that is a member of
    /// [`APP_ROLE`] only, so it cannot switch to [`PLATFORM_ROLE`]), else
    /// with `url` too. Each pool holds at most `max_connections`.
    pub async fn open(
        url: &str,
        tenant_url: Option<&str>,
        max_connections: u32,
    ) -> Result<Db, StoreError> {
        Db::migrate(url).await?;
        let backend = Backend::from_url(url);
        let origin: Arc<str> = new_id().into();
        let (pool, platform_pool) = match backend {
            Backend::Sqlite => {
                let pool = connect_pool(url, backend, APP_ROLE, &origin, max_connections).await?;
                (pool.clone(), pool)
            }
            Backend::Postgres => (
                connect_pool(
                    tenant_url.unwrap_or(url),
                    backend,
                    APP_ROLE,
                    &origin,
                    max_connections,
                )
                .await?,
                connect_pool(url, backend, PLATFORM_ROLE, &origin, max_connections).await?,
            ),
        };
        Ok(Db {
            pool,
            platform_pool,
            backend,
            write_gate: WriteGate::default(),
            origin,
        })
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// This instance's id, the first word of every signal it sends.
    pub fn origin(&self) -> Arc<str> {
        self.origin.clone()
    }

    /// The platform pool, for statements outside a transaction on tables
    /// that belong to no tenant (users, tokens, counters).
    pub fn platform_pool(&self) -> &AnyPool {
        &self.platform_pool
    }

    /// What SQLite's write gate has seen (writers' waits and holds); `None`
    /// on PostgreSQL, which has no gate.
    pub fn write_gate_stats(&self) -> Option<GateStats> {
        (self.backend == Backend::Sqlite).then(|| self.write_gate.stats())
    }

    /// Open and idle connections, over both pools.
    pub fn connections(&self) -> (u32, usize) {
        let (mut size, mut idle) = (self.pool.size(), self.pool.num_idle());
        if self.backend == Backend::Postgres {
            size += self.platform_pool.size();
            idle += self.platform_pool.num_idle();
        }
        (size, idle)
    }

    /// Begin a transaction confined to one organization: on PostgreSQL the
    /// row-level-security policies see `app.org_id` for its duration.
    pub async fn tenant(&self, org_id: &str) -> Result<Tx, sqlx::Error> {
        self.begin_tenant(org_id, "").await
    }

    /// [`Db::tenant`], serialised on PostgreSQL with every other
    /// transaction begun with the same `key` (a transaction-scoped advisory
    /// lock, taken in the round trip that begins the transaction). On
    /// SQLite the write gate already serialises all writers.
    pub async fn tenant_serialised(&self, org_id: &str, key: &str) -> Result<Tx, sqlx::Error> {
        if self.backend == Backend::Sqlite {
            return self.begin().await;
        }
        if is_plain_id(key) {
            return self
                .begin_tenant(
                    org_id,
                    &format!("SELECT pg_advisory_xact_lock(hashtext('{key}'));"),
                )
                .await;
        }
        let mut tx = self.tenant(org_id).await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(key)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// [`Db::tenant`], and on PostgreSQL `extra` (statements ending in `;`)
    /// runs right after the transaction starts.
    async fn begin_tenant(&self, org_id: &str, extra: &str) -> Result<Tx, sqlx::Error> {
        if self.backend == Backend::Sqlite {
            return self.begin().await;
        }
        if is_plain_id(org_id) {
            // One round trip: the id is checked to be quoting-safe.
            return self
                .begin_postgres(
                    &self.pool,
                    format!("BEGIN; SELECT set_config('app.org_id', '{org_id}', true); {extra}"),
                )
                .await;
        }
        let mut tx = self
            .begin_postgres(&self.pool, format!("BEGIN; {extra}"))
            .await?;
        sqlx::query("SELECT set_config('app.org_id', $1, true)")
            .bind(org_id)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// Begin a read-only transaction confined to one organization. On
    /// SQLite it does not take the write lock, so reads never wait for
    /// writers; on PostgreSQL it is [`Db::tenant`].
    pub async fn tenant_read(&self, org_id: &str) -> Result<Tx, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.begin_read().await,
            Backend::Postgres => self.tenant(org_id).await,
        }
    }

    /// Begin a read-only transaction that may cross organizations (see
    /// [`Db::platform`] and [`Db::tenant_read`]).
    pub async fn platform_read(&self) -> Result<Tx, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.begin_read().await,
            Backend::Postgres => self.platform().await,
        }
    }

    /// [`Db::tenant`] for the writes of a task worker or the workflow
    /// engine, which signal nothing themselves on PostgreSQL (the task and
    /// workflow events, pending tasks, due workflows and webhook deliveries
    /// they write raise no notification, see migrations
    /// `0025_relayed_signals.sql` and `0027_relayed_workflow_signals.sql`):
    /// the writer announces them after the commit with
    /// [`crate::orchestrator::signals::Signals::announce`] and its kin.
    /// Its commit then does not queue behind every other notifying commit.
    pub async fn tenant_relayed(&self, org_id: &str) -> Result<Tx, sqlx::Error> {
        self.begin_tenant(org_id, RELAY).await
    }

    /// [`Db::tenant_relayed`] for bookkeeping that may be lost in a
    /// database crash without harm, because the work it records is redone
    /// (a run's progress reports): on PostgreSQL its commit does not wait
    /// for the WAL flush (`synchronous_commit = off`); it is still atomic
    /// and ordered.
    pub async fn tenant_relaxed_relayed(&self, org_id: &str) -> Result<Tx, sqlx::Error> {
        self.begin_tenant(
            org_id,
            &format!("SET LOCAL synchronous_commit TO OFF; {RELAY}"),
        )
        .await
    }

    /// Begin a transaction that may cross organizations. Only for operations
    /// that must: authentication before the tenant is known, and
    /// platform-admin endpoints. On PostgreSQL it runs on the platform
    /// pool, whose role the policies let see every row.
    pub async fn platform(&self) -> Result<Tx, sqlx::Error> {
        self.begin_platform("").await
    }

    /// [`Db::platform`] for bookkeeping that may be lost in a database
    /// crash without harm (see [`Db::tenant_relaxed_relayed`]): a worker's claim,
    /// which a crash at worst returns to the queue to be claimed again.
    pub async fn platform_relaxed(&self) -> Result<Tx, sqlx::Error> {
        self.begin_platform("SET LOCAL synchronous_commit TO OFF;")
            .await
    }

    /// [`Db::platform_relaxed`] and [`Db::tenant_relayed`] together: a task
    /// worker's claim.
    pub async fn platform_relaxed_relayed(&self) -> Result<Tx, sqlx::Error> {
        self.begin_platform(&format!("SET LOCAL synchronous_commit TO OFF; {RELAY}"))
            .await
    }

    /// [`Db::platform`], and on PostgreSQL `extra` (statements ending in
    /// `;`) runs right after the transaction starts.
    async fn begin_platform(&self, extra: &str) -> Result<Tx, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.begin().await,
            Backend::Postgres => {
                self.begin_postgres(&self.platform_pool, format!("BEGIN; {extra}"))
                    .await
            }
        }
    }

    /// Begin a transaction. On SQLite it first waits its turn at the write
    /// gate, then takes the write lock up front (`BEGIN IMMEDIATE`): a
    /// deferred transaction that reads and then writes while another
    /// connection writes fails at once with `SQLITE_BUSY` instead of
    /// waiting, and the task workers write in the background all the time.
    async fn begin(&self) -> Result<Tx, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => {
                let gate = self
                    .write_gate
                    .enter(SQLITE_BUSY_TIMEOUT)
                    .await
                    .ok_or(sqlx::Error::PoolTimedOut)?;
                Ok(Tx {
                    inner: self.pool.begin_with("BEGIN IMMEDIATE").await?,
                    _write_gate: Some(gate),
                })
            }
            Backend::Postgres => self.begin_postgres(&self.pool, "BEGIN".into()).await,
        }
    }

    /// Begin a PostgreSQL transaction with `statements` (starting with
    /// `BEGIN`), sent in one round trip.
    async fn begin_postgres(&self, pool: &AnyPool, statements: String) -> Result<Tx, sqlx::Error> {
        Ok(Tx {
            inner: pool.begin_with(sqlx::AssertSqlSafe(statements)).await?,
            _write_gate: None,
        })
    }

    /// Begin a deferred (reading) transaction: on SQLite it never waits
    /// for writers.
    async fn begin_read(&self) -> Result<Tx, sqlx::Error> {
        Ok(Tx {
            inner: self.pool.begin().await?,
            _write_gate: None,
        })
    }

    /// A trivial round trip, for the health check.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        conn.ping().await
    }

    /// Close the pools (graceful shutdown).
    pub async fn close(&self) {
        self.pool.close().await;
        self.platform_pool.close().await;
    }
}

/// A pool whose connections act as `role` (PostgreSQL) or carry the
/// SQLite settings every connection needs.
async fn connect_pool(
    url: &str,
    backend: Backend,
    role: &'static str,
    origin: &str,
    max_connections: u32,
) -> Result<AnyPool, StoreError> {
    // The origin is a uuid: safe to quote into the statement.
    let set_role = format!("SET ROLE {role}; SET app.origin = '{origin}'");
    let options: AnyConnectOptions = url.parse()?;
    let options = options.disable_statement_logging();
    let pool = AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .after_connect(move |conn, _meta| {
            let set_role = set_role.clone();
            Box::pin(async move {
                match backend {
                    Backend::Postgres => {
                        conn.execute(sqlx::AssertSqlSafe(set_role)).await?;
                    }
                    Backend::Sqlite => {
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        // Only writes outside a transaction still wait
                        // here; the others queue at the write gate first.
                        conn.execute(sqlx::AssertSqlSafe(format!(
                            "PRAGMA busy_timeout = {}",
                            SQLITE_BUSY_TIMEOUT.as_millis()
                        )))
                        .await?;
                        // 512 KiB of page cache per connection, a quarter
                        // of the default: the file stays in the OS page
                        // cache, and per-connection caches would otherwise
                        // be a large part of the server's resident memory.
                        conn.execute("PRAGMA cache_size = -512").await?;
                    }
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await?;
    Ok(pool)
}

fn ensure_sqlite_dir(url: &str) -> Result<(), StoreError> {
    if let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        let path = rest.split('?').next().unwrap_or(rest);
        if path.is_empty() || path == ":memory:" {
            return Ok(());
        }
        if let Some(parent) = std::path::Path::new(path).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(StoreError::DataDir)?;
        }
    }
    Ok(())
}

/// True when `id` can be written into SQL as a literal without escaping:
/// our ids are UUIDs (hex digits and dashes).
fn is_plain_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// A text column read through its type's [`FromStr`](std::str::FromStr);
/// a decode error for a stored name the type does not know.
fn parsed<T>(row: &sqlx::any::AnyRow, column: &str) -> Result<T, sqlx::Error>
where
    T: std::str::FromStr,
    T::Err: Into<sqlx::error::BoxDynError>,
{
    use sqlx::Row;
    row.try_get::<String, _>(column)?
        .parse()
        .map_err(|e: T::Err| sqlx::Error::ColumnDecode {
            index: column.to_string(),
            source: e.into(),
        })
}

/// Current time as unix milliseconds, the storage format of every timestamp.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A fresh id: a UUID v7 (text), unique and ordered by creation time.
///
/// Time-ordered ids make every insert land at the right-hand edge of the
/// primary-key and foreign-key indexes (`tasks`, `task_attempts`,
/// `audit_logs`…), so a write touches the few pages already in cache instead
/// of one random leaf page per index, on SQLite and PostgreSQL alike. Ids
/// are never secrets (credentials are random bytes of their own), so the
/// millisecond they carry reveals nothing the row's `created_at` does not.
/// Their random bits come from the thread's CSPRNG (uuid's `fast-rng`),
/// not from a `getrandom` system call per id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// True when `e` is a unique-constraint violation (duplicate name or email).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            matches!(db.kind(), sqlx::error::ErrorKind::UniqueViolation)
                || db
                    .code()
                    .is_some_and(|c| c == "23505" || c == "2067" || c == "1555")
                || db.message().contains("UNIQUE constraint failed")
        }
        _ => false,
    }
}

/// Whether `e` says the database is busy rather than broken: SQLite's
/// lock was held past its busy timeout (`SQLITE_BUSY`, `SQLITE_LOCKED` and
/// their extended codes), or PostgreSQL could not take a lock at once.
/// Callers may try again.
pub fn is_busy(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            c == "55P03"
                || c.parse::<u32>()
                    .is_ok_and(|code| matches!(code & 0xff, 5 | 6))
        }),
        _ => false,
    }
}

/// Unix milliseconds to RFC 3339 for API responses.
pub fn to_rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// RFC 3339 from the API to unix milliseconds; `None` when malformed.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        assert_eq!(
            parse_rfc3339(&to_rfc3339(1_700_000_000_123)),
            Some(1_700_000_000_123)
        );
        assert_eq!(
            parse_rfc3339("2025-01-31T12:00:00+01:00"),
            Some(1_738_321_200_000)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn ids_are_valid_and_ordered_by_creation() {
        let ids: Vec<String> = (0..2_000).map(|_| new_id()).collect();
        assert!(ids.iter().all(|id| is_plain_id(id) && id.len() == 36));
        // Strictly increasing as text: each insert lands after the last one
        // in every index on an id column.
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids out of order");
    }
}
