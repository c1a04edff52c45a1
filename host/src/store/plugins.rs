//! The plugin registry's tables: content-addressed component bytes
//! (`plugin_blobs`), named plugins per scope (`plugins`: the platform's or
//! one organization's) and their uploaded versions (`plugin_versions`).
//!
//! A plugin's kind and status are stored as text and its `builtin` flag as
//! an integer; rows carry them as [`PluginKind`], [`PluginStatus`] and
//! `bool`, converted here.

use std::fmt;
use std::str::FromStr;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, FromRow, Row};
use vel_runtime::PluginKind;

use super::parsed;

/// The scope of platform plugins (organizations use their id).
pub const PLATFORM: &str = "platform";

/// Whether calls may use a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginStatus {
    /// Its active version serves calls.
    Active,
    /// Nothing uses it until it is enabled again.
    Disabled,
}

impl PluginStatus {
    /// The stored and shown name: `active` or `disabled`.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginStatus::Active => "active",
            PluginStatus::Disabled => "disabled",
        }
    }
}

impl fmt::Display for PluginStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored status that is neither `active` nor `disabled`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown plugin status `{0}` (expected active or disabled)")]
pub struct UnknownStatus(pub String);

impl FromStr for PluginStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, UnknownStatus> {
        match s {
            "active" => Ok(PluginStatus::Active),
            "disabled" => Ok(PluginStatus::Disabled),
            other => Err(UnknownStatus(other.to_string())),
        }
    }
}

/// A named plugin.
#[derive(Debug, Clone)]
pub struct PluginRow {
    /// Text UUID.
    pub id: String,
    /// Owning organization; `None` for platform plugins.
    pub org_id: Option<String>,
    /// [`PLATFORM`] or the organization id.
    pub scope: String,
    /// Unique within the scope.
    pub name: String,
    /// The world it implements.
    pub kind: PluginKind,
    /// Whether calls use it.
    pub status: PluginStatus,
    /// The version calls use.
    pub active_version: Option<String>,
    /// The version a rollback returns to.
    pub previous_version: Option<String>,
    /// Ships with the server.
    pub builtin: bool,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

impl FromRow<'_, AnyRow> for PluginRow {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(PluginRow {
            id: row.try_get("id")?,
            org_id: row.try_get("org_id")?,
            scope: row.try_get("scope")?,
            name: row.try_get("name")?,
            kind: parsed(row, "kind")?,
            status: parsed(row, "status")?,
            active_version: row.try_get("active_version")?,
            previous_version: row.try_get("previous_version")?,
            builtin: row.try_get::<i64, _>("builtin")? != 0,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

const PLUGIN_COLUMNS: &str = "id, org_id, scope, name, kind, status, active_version, previous_version, builtin, created_at, updated_at";

/// One uploaded version.
#[derive(Debug, Clone, FromRow)]
pub struct VersionRow {
    /// Text UUID.
    pub id: String,
    /// The plugin.
    pub plugin_id: String,
    /// Copied from the plugin (for row-level security).
    pub org_id: Option<String>,
    /// Semantic version.
    pub version: String,
    /// Of the component bytes (`plugin_blobs`).
    pub sha256: String,
    /// Component size.
    pub size_bytes: i64,
    /// From the manifest.
    pub description: String,
    /// The manifest as uploaded.
    pub manifest: String,
    /// JSON of the component's `info()`.
    pub info: String,
    /// JSON array of hosts.
    pub outbound_hosts: String,
    /// JSON of the effective limits.
    pub limits: String,
    /// JSON schema of its settings.
    pub config_schema: Option<String>,
    /// 1 when its signature verified against a trusted key.
    pub signed: i64,
    /// Who approved its outbound hosts; `None` while awaiting approval.
    pub hosts_approved_by: Option<String>,
    /// When.
    pub hosts_approved_at: Option<i64>,
    /// Uploader (`None` for built-ins).
    pub uploaded_by: Option<String>,
    /// Unix ms.
    pub uploaded_at: i64,
    /// The platform admin who rejected its outbound hosts; a rejected
    /// version can never be approved or activated.
    pub rejected_by: Option<String>,
    /// When (Unix ms).
    pub rejected_at: Option<i64>,
    /// Why, as the platform admin wrote it.
    pub rejection_reason: Option<String>,
}

const VERSION_COLUMNS: &str = "id, plugin_id, org_id, version, sha256, size_bytes, description, manifest, info, \
    outbound_hosts, limits, config_schema, signed, hosts_approved_by, hosts_approved_at, uploaded_by, uploaded_at, \
    rejected_by, rejected_at, rejection_reason";

/// An active plugin version, as the registry loads it.
#[derive(Debug, Clone)]
pub struct ActiveRow {
    /// Owning organization; `None` for platform plugins.
    pub org_id: Option<String>,
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: PluginKind,
    /// Active version.
    pub version: String,
    /// Its bytes' digest.
    pub sha256: String,
    /// JSON limits.
    pub limits: String,
    /// JSON hosts.
    pub outbound_hosts: String,
    /// The manifest as stored (its capabilities are read from it).
    pub manifest: String,
    /// Approval (tenant providers with hosts cannot be active without it).
    pub hosts_approved_by: Option<String>,
}

impl FromRow<'_, AnyRow> for ActiveRow {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(ActiveRow {
            org_id: row.try_get("org_id")?,
            name: row.try_get("name")?,
            kind: parsed(row, "kind")?,
            version: row.try_get("version")?,
            sha256: row.try_get("sha256")?,
            limits: row.try_get("limits")?,
            outbound_hosts: row.try_get("outbound_hosts")?,
            manifest: row.try_get("manifest")?,
            hosts_approved_by: row.try_get("hosts_approved_by")?,
        })
    }
}

/// Store component bytes under their digest (a no-op when present).
pub async fn insert_blob(
    conn: &mut AnyConnection,
    sha256: &str,
    bytes: &[u8],
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO plugin_blobs (sha256, bytes, size_bytes, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (sha256) DO NOTHING",
    )
    .bind(sha256)
    .bind(bytes.to_vec())
    .bind(i64::try_from(bytes.len()).unwrap_or(i64::MAX))
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// The component bytes with this digest.
pub async fn blob(conn: &mut AnyConnection, sha256: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
    sqlx::query_scalar("SELECT bytes FROM plugin_blobs WHERE sha256 = $1")
        .bind(sha256)
        .fetch_optional(conn)
        .await
}

/// Delete the bytes when no version refers to them any more.
pub async fn delete_blob_if_unused(
    conn: &mut AnyConnection,
    sha256: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM plugin_blobs WHERE sha256 = $1 \
         AND NOT EXISTS (SELECT 1 FROM plugin_versions WHERE sha256 = $1)",
    )
    .bind(sha256)
    .execute(conn)
    .await?;
    Ok(())
}

/// The plugin called `name` in `scope`.
pub async fn find(
    conn: &mut AnyConnection,
    scope: &str,
    name: &str,
) -> Result<Option<PluginRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {PLUGIN_COLUMNS} FROM plugins WHERE scope = $1 AND name = $2"
    )))
    .bind(scope)
    .bind(name)
    .fetch_optional(conn)
    .await
}

/// The platform's plugins and the organization's own, by name.
pub async fn list_visible(
    conn: &mut AnyConnection,
    org_id: &str,
) -> Result<Vec<PluginRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {PLUGIN_COLUMNS} FROM plugins WHERE scope = $1 OR scope = $2 ORDER BY name, scope"
    )))
    .bind(PLATFORM)
    .bind(org_id)
    .fetch_all(conn)
    .await
}

/// Insert a plugin.
pub async fn insert_plugin(conn: &mut AnyConnection, p: &PluginRow) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO plugins ({PLUGIN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    )))
    .bind(&p.id)
    .bind(&p.org_id)
    .bind(&p.scope)
    .bind(&p.name)
    .bind(p.kind.as_str())
    .bind(p.status.as_str())
    .bind(&p.active_version)
    .bind(&p.previous_version)
    .bind(i64::from(p.builtin))
    .bind(p.created_at)
    .bind(p.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Write a plugin's active and previous versions and status.
pub async fn update_plugin(conn: &mut AnyConnection, p: &PluginRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE plugins SET status = $2, active_version = $3, previous_version = $4, updated_at = $5 \
         WHERE id = $1",
    )
    .bind(&p.id)
    .bind(p.status.as_str())
    .bind(&p.active_version)
    .bind(&p.previous_version)
    .bind(p.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Insert a version.
pub async fn insert_version(conn: &mut AnyConnection, v: &VersionRow) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO plugin_versions ({VERSION_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"
    )))
    .bind(&v.id)
    .bind(&v.plugin_id)
    .bind(&v.org_id)
    .bind(&v.version)
    .bind(&v.sha256)
    .bind(v.size_bytes)
    .bind(&v.description)
    .bind(&v.manifest)
    .bind(&v.info)
    .bind(&v.outbound_hosts)
    .bind(&v.limits)
    .bind(&v.config_schema)
    .bind(v.signed)
    .bind(&v.hosts_approved_by)
    .bind(v.hosts_approved_at)
    .bind(&v.uploaded_by)
    .bind(v.uploaded_at)
    .bind(&v.rejected_by)
    .bind(v.rejected_at)
    .bind(&v.rejection_reason)
    .execute(conn)
    .await?;
    Ok(())
}

/// Replace a built-in version's component (the binary that ships it was
/// rebuilt with the same version number).
pub async fn replace_builtin_component(
    conn: &mut AnyConnection,
    v: &VersionRow,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE plugin_versions SET sha256 = $2, size_bytes = $3, description = $4, manifest = $5, \
         info = $6, outbound_hosts = $7, limits = $8 WHERE id = $1",
    )
    .bind(&v.id)
    .bind(&v.sha256)
    .bind(v.size_bytes)
    .bind(&v.description)
    .bind(&v.manifest)
    .bind(&v.info)
    .bind(&v.outbound_hosts)
    .bind(&v.limits)
    .execute(conn)
    .await?;
    Ok(())
}

/// One version of a plugin.
pub async fn version(
    conn: &mut AnyConnection,
    plugin_id: &str,
    version: &str,
) -> Result<Option<VersionRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {VERSION_COLUMNS} FROM plugin_versions WHERE plugin_id = $1 AND version = $2"
    )))
    .bind(plugin_id)
    .bind(version)
    .fetch_optional(conn)
    .await
}

/// A version by id.
pub async fn version_by_id(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<Option<VersionRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {VERSION_COLUMNS} FROM plugin_versions WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Every version of a plugin, oldest first.
pub async fn versions(
    conn: &mut AnyConnection,
    plugin_id: &str,
) -> Result<Vec<VersionRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {VERSION_COLUMNS} FROM plugin_versions WHERE plugin_id = $1 ORDER BY uploaded_at, version"
    )))
    .bind(plugin_id)
    .fetch_all(conn)
    .await
}

/// An organization's plugin storage: the size of the components its
/// versions use. (Identical bytes always make the same name and version,
/// so an organization never stores the same component twice.)
pub async fn org_component_bytes(
    conn: &mut AnyConnection,
    org_id: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) FROM plugin_versions WHERE org_id = $1",
    )
    .bind(org_id)
    .fetch_one(conn)
    .await
}

/// Delete a version.
pub async fn delete_version(conn: &mut AnyConnection, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM plugin_versions WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Delete a plugin (with its last version).
pub async fn delete_plugin(conn: &mut AnyConnection, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM plugins WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Record the approval of a version's outbound hosts.
pub async fn approve_hosts(
    conn: &mut AnyConnection,
    id: &str,
    by: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE plugin_versions SET hosts_approved_by = $2, hosts_approved_at = $3 WHERE id = $1",
    )
    .bind(id)
    .bind(by)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Record the rejection of a version's outbound hosts.
pub async fn reject_hosts(
    conn: &mut AnyConnection,
    id: &str,
    by: &str,
    reason: Option<&str>,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE plugin_versions SET rejected_by = $2, rejected_at = $3, rejection_reason = $4 WHERE id = $1",
    )
    .bind(id)
    .bind(by)
    .bind(now)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(())
}

/// Tenant versions whose outbound hosts await a platform admin (neither
/// approved nor rejected).
pub async fn pending_approvals(conn: &mut AnyConnection) -> Result<Vec<VersionRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {VERSION_COLUMNS} FROM plugin_versions WHERE hosts_approved_by IS NULL AND rejected_by IS NULL \
         ORDER BY uploaded_at"
    )))
    .fetch_all(conn)
    .await
}

/// The name of a plugin by id.
pub async fn plugin_by_id(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<Option<PluginRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {PLUGIN_COLUMNS} FROM plugins WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Every enabled plugin's active version, in every scope (the registry's
/// whole state; a platform read).
pub async fn active_set(conn: &mut AnyConnection) -> Result<Vec<ActiveRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT p.org_id, p.name, p.kind, v.version, v.sha256, v.limits, v.outbound_hosts, v.manifest, v.hosts_approved_by \
         FROM plugins p JOIN plugin_versions v ON v.plugin_id = p.id AND v.version = p.active_version \
         WHERE p.status = $1",
    )
    .bind(PluginStatus::Active.as_str())
    .fetch_all(conn)
    .await
}
