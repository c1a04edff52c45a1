//! Integrations: an organization's provider credentials and settings. The
//! key is stored only as AES-256-GCM ciphertext plus a fingerprint.

use sqlx::{AnyConnection, FromRow};

use super::now_ms;

/// A stored integration.
#[derive(Debug, Clone, FromRow)]
pub struct Integration {
    /// Text UUID (also the encryption context of the key).
    pub id: String,
    /// Owning organization.
    pub org_id: String,
    /// Unique per organization.
    pub name: String,
    /// Provider kind (`openai`, `groq`, …).
    pub provider: String,
    /// Provider plugin that talks to it.
    pub plugin: String,
    /// Provider base URL.
    pub base_url: Option<String>,
    /// Model used when a request names none.
    pub default_model: Option<String>,
    /// Per-call timeout.
    pub timeout_ms: i64,
    /// `v2:KID:` (or, sealed before keys had ids, `v1:`) + base64
    /// AES-256-GCM; never returned by the API.
    pub key_ciphertext: Option<String>,
    /// `sha256:…` of the key, shown instead of it.
    pub key_fingerprint: Option<String>,
    /// `active` or `disabled`.
    pub status: String,
    /// Unix ms of the last connectivity test.
    pub last_test_at: Option<i64>,
    /// JSON text of the last test's outcome.
    pub last_test_result: Option<String>,
    /// Creator.
    pub created_by: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

const COLUMNS: &str = "id, org_id, name, provider, plugin, base_url, default_model, timeout_ms, key_ciphertext, \
    key_fingerprint, status, last_test_at, last_test_result, created_by, created_at, updated_at";

/// Insert an integration (the caller fills every field, including the id the key is bound to).
pub async fn insert(conn: &mut AnyConnection, i: &Integration) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO integrations (id, org_id, name, provider, plugin, base_url, default_model, timeout_ms, \
         key_ciphertext, key_fingerprint, status, last_test_at, last_test_result, created_by, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(&i.id)
    .bind(&i.org_id)
    .bind(&i.name)
    .bind(&i.provider)
    .bind(&i.plugin)
    .bind(&i.base_url)
    .bind(&i.default_model)
    .bind(i.timeout_ms)
    .bind(&i.key_ciphertext)
    .bind(&i.key_fingerprint)
    .bind(&i.status)
    .bind(i.last_test_at)
    .bind(&i.last_test_result)
    .bind(&i.created_by)
    .bind(i.created_at)
    .bind(i.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// One integration of the organization.
pub async fn get(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
) -> Result<Option<Integration>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM integrations WHERE org_id = $1 AND id = $2"
    )))
    .bind(org_id)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Every integration of the organization, by name.
pub async fn list(conn: &mut AnyConnection, org_id: &str) -> Result<Vec<Integration>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM integrations WHERE org_id = $1 ORDER BY name"
    )))
    .bind(org_id)
    .fetch_all(conn)
    .await
}

/// Store every mutable field of an integration.
pub async fn update(conn: &mut AnyConnection, i: &mut Integration) -> Result<(), sqlx::Error> {
    i.updated_at = now_ms();
    sqlx::query(
        "UPDATE integrations SET name = $1, provider = $2, plugin = $3, base_url = $4, default_model = $5, \
         timeout_ms = $6, key_ciphertext = $7, key_fingerprint = $8, status = $9, last_test_at = $10, \
         last_test_result = $11, updated_at = $12 WHERE org_id = $13 AND id = $14",
    )
    .bind(&i.name)
    .bind(&i.provider)
    .bind(&i.plugin)
    .bind(&i.base_url)
    .bind(&i.default_model)
    .bind(i.timeout_ms)
    .bind(&i.key_ciphertext)
    .bind(&i.key_fingerprint)
    .bind(&i.status)
    .bind(i.last_test_at)
    .bind(&i.last_test_result)
    .bind(i.updated_at)
    .bind(&i.org_id)
    .bind(&i.id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Delete an integration; false when there was none.
pub async fn delete(conn: &mut AnyConnection, org_id: &str, id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM integrations WHERE org_id = $1 AND id = $2")
        .bind(org_id)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Record the outcome of a connectivity test (only the test columns, so a
/// concurrent edit of the integration is not overwritten); false when the
/// integration no longer exists.
pub async fn record_test(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
    at: i64,
    result_json: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE integrations SET last_test_at = $1, last_test_result = $2 WHERE org_id = $3 AND id = $4",
    )
    .bind(at)
    .bind(result_json)
    .bind(org_id)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// One active integration's provider kind and last test, across every
/// organization: what the health check's provider reachability summarises.
#[derive(Debug, Clone, FromRow)]
pub struct TestState {
    /// Provider kind.
    pub provider: String,
    /// Unix ms of the last connectivity test.
    pub last_test_at: Option<i64>,
    /// JSON text of that test's outcome.
    pub last_test_result: Option<String>,
}

/// The last test of every active integration (all organizations; call in a
/// platform transaction).
pub async fn active_test_states(conn: &mut AnyConnection) -> Result<Vec<TestState>, sqlx::Error> {
    sqlx::query_as(
        "SELECT provider, last_test_at, last_test_result FROM integrations WHERE status = 'active'",
    )
    .fetch_all(conn)
    .await
}
