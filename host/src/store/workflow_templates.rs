//! Workflow templates and their immutable versions. A template row holds
//! what changes (its latest version, its visibility); each version row is
//! written once and never updated. Reads take the caller's organization
//! and user and return only what they may see: their organization's
//! templates (private ones to their creator only) and every public one.

use sqlx::{AnyConnection, FromRow};

use super::{new_id, now_ms};

/// Who may see a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Its creator only.
    Private,
    /// Its organization.
    Organization,
    /// Every organization, read-only (the marketplace).
    Public,
}

impl Visibility {
    /// The stored and serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Private => "private",
            Visibility::Organization => "organization",
            Visibility::Public => "public",
        }
    }

    /// Parse a stored or requested name.
    pub fn parse(s: &str) -> Option<Visibility> {
        Some(match s {
            "private" => Visibility::Private,
            "organization" => Visibility::Organization,
            "public" => Visibility::Public,
            _ => return None,
        })
    }
}

/// A stored visibility this server does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown template visibility {0:?}")]
pub struct UnknownVisibility(String);

impl TryFrom<String> for Visibility {
    type Error = UnknownVisibility;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Visibility::parse(&s).ok_or(UnknownVisibility(s))
    }
}

/// A stored template (its latest state; versions are separate rows).
#[derive(Debug, Clone, FromRow)]
pub struct Template {
    /// Text UUID.
    pub id: String,
    /// Owning organization; `None` for the platform's built-ins.
    pub org_id: Option<String>,
    /// Unique within its organization (or the platform).
    pub name: String,
    /// Who may see it.
    #[sqlx(try_from = "String")]
    pub visibility: Visibility,
    /// Who created it.
    pub owner_id: Option<String>,
    /// Its newest version (1-based).
    pub latest_version: i64,
    /// 1 when it ships with the server.
    pub builtin: i64,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms of its latest version.
    pub updated_at: i64,
}

const COLUMNS: &str = "id, org_id, name, visibility, owner_id, latest_version, builtin, \
     created_at, updated_at";

/// One immutable version of a template.
#[derive(Debug, Clone, FromRow)]
pub struct TemplateVersion {
    /// The template.
    pub template_id: String,
    /// 1-based.
    pub version: i64,
    /// What it is for.
    pub description: String,
    /// JSON definition with `{{vars.…}}` placeholders.
    pub definition: String,
    /// JSON: variable name → declaration.
    pub variables: String,
    /// The visibility this version set.
    #[sqlx(try_from = "String")]
    pub visibility: Visibility,
    /// JSON: the workflow or template it was made from.
    pub source: Option<String>,
    /// Who wrote it.
    pub created_by: Option<String>,
    /// Unix ms.
    pub created_at: i64,
}

const VERSION_COLUMNS: &str = "template_id, version, description, definition, variables, \
     visibility, source, created_by, created_at";

/// Who is looking: rows are filtered to what this caller may see.
#[derive(Debug, Clone, Copy)]
pub struct Viewer<'a> {
    /// The caller's organization.
    pub org_id: &'a str,
    /// The caller.
    pub user_id: &'a str,
}

/// SQL condition (on `workflow_templates`, placeholders `$1` org, `$2`
/// user) of what a viewer may see.
const VISIBLE: &str = "(visibility = 'public' OR (org_id = $1 \
     AND (visibility = 'organization' OR owner_id = $2)))";

/// Fields of a new version (and, for version 1, of the template).
#[derive(Debug, Clone)]
pub struct NewVersion {
    /// Owning organization; `None` for the platform.
    pub org_id: Option<String>,
    /// The template's name.
    pub name: String,
    /// Who writes it.
    pub created_by: Option<String>,
    /// What it is for.
    pub description: String,
    /// JSON definition.
    pub definition: String,
    /// JSON variables.
    pub variables: String,
    /// Visibility it sets.
    pub visibility: Visibility,
    /// JSON: where it was made from.
    pub source: Option<String>,
    /// Ships with the server.
    pub builtin: bool,
}

fn scope(org_id: Option<&str>) -> &str {
    org_id.unwrap_or("platform")
}

/// The template named `name` in the organization (`None`: the
/// platform), whatever its visibility.
pub async fn by_name(
    conn: &mut AnyConnection,
    org_id: Option<&str>,
    name: &str,
) -> Result<Option<Template>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM workflow_templates WHERE scope = $1 AND name = $2"
    )))
    .bind(scope(org_id))
    .bind(name)
    .fetch_optional(conn)
    .await
}

/// Insert a template with its version 1.
pub async fn insert(
    conn: &mut AnyConnection,
    new: &NewVersion,
) -> Result<(Template, TemplateVersion), sqlx::Error> {
    let now = now_ms();
    let template: Template = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO workflow_templates (id, org_id, scope, name, visibility, owner_id, \
             latest_version, builtin, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8, $8) RETURNING {COLUMNS}"
    )))
    .bind(new_id())
    .bind(&new.org_id)
    .bind(scope(new.org_id.as_deref()))
    .bind(&new.name)
    .bind(new.visibility.as_str())
    .bind(&new.created_by)
    .bind(i64::from(new.builtin))
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    let version = insert_version(conn, &template.id, 1, new, now).await?;
    Ok((template, version))
}

/// Add version `latest + 1` to `template` unless another was added since
/// it read `latest`. `None` when one was.
pub async fn add_version(
    conn: &mut AnyConnection,
    template: &Template,
    new: &NewVersion,
) -> Result<Option<(Template, TemplateVersion)>, sqlx::Error> {
    let now = now_ms();
    let next = template.latest_version + 1;
    let updated: Option<Template> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE workflow_templates SET latest_version = $1, visibility = $2, updated_at = $3 \
         WHERE id = $4 AND latest_version = $5 RETURNING {COLUMNS}"
    )))
    .bind(next)
    .bind(new.visibility.as_str())
    .bind(now)
    .bind(&template.id)
    .bind(template.latest_version)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(updated) = updated else {
        return Ok(None);
    };
    let version = insert_version(conn, &template.id, next, new, now).await?;
    Ok(Some((updated, version)))
}

async fn insert_version(
    conn: &mut AnyConnection,
    template_id: &str,
    version: i64,
    new: &NewVersion,
    now: i64,
) -> Result<TemplateVersion, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO workflow_template_versions (template_id, version, org_id, description, \
             definition, variables, visibility, source, created_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {VERSION_COLUMNS}"
    )))
    .bind(template_id)
    .bind(version)
    .bind(&new.org_id)
    .bind(&new.description)
    .bind(&new.definition)
    .bind(&new.variables)
    .bind(new.visibility.as_str())
    .bind(&new.source)
    .bind(&new.created_by)
    .bind(now)
    .fetch_one(conn)
    .await
}

/// A template `viewer` may see.
pub async fn get(
    conn: &mut AnyConnection,
    viewer: Viewer<'_>,
    id: &str,
) -> Result<Option<Template>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM workflow_templates WHERE {VISIBLE} AND id = $3"
    )))
    .bind(viewer.org_id)
    .bind(viewer.user_id)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Version `version` of a template (read [`get`] first: this does not
/// check visibility).
pub async fn version(
    conn: &mut AnyConnection,
    template_id: &str,
    version: i64,
) -> Result<Option<TemplateVersion>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {VERSION_COLUMNS} FROM workflow_template_versions \
         WHERE template_id = $1 AND version = $2"
    )))
    .bind(template_id)
    .bind(version)
    .fetch_optional(conn)
    .await
}

/// Set the visibility of the organization's template `id` (its versions
/// keep the visibility each set). `None` when the organization has no
/// such template.
pub async fn set_visibility(
    conn: &mut AnyConnection,
    org_id: &str,
    id: &str,
    visibility: Visibility,
) -> Result<Option<Template>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE workflow_templates SET visibility = $1 WHERE org_id = $2 AND id = $3 \
         RETURNING {COLUMNS}"
    )))
    .bind(visibility.as_str())
    .bind(org_id)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Delete the organization's template `id` with its versions. Workflows
/// started from it keep their own copy of the definition and the id it
/// had. Returns whether it existed.
pub async fn delete(conn: &mut AnyConnection, org_id: &str, id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query("DELETE FROM workflow_template_versions WHERE org_id = $1 AND template_id = $2")
        .bind(org_id)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    let done = sqlx::query("DELETE FROM workflow_templates WHERE org_id = $1 AND id = $2")
        .bind(org_id)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Every version of a template, oldest first (read [`get`] first).
pub async fn versions(
    conn: &mut AnyConnection,
    template_id: &str,
) -> Result<Vec<TemplateVersion>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {VERSION_COLUMNS} FROM workflow_template_versions \
         WHERE template_id = $1 ORDER BY version"
    )))
    .bind(template_id)
    .fetch_all(conn)
    .await
}

/// Filters of the template list.
#[derive(Debug, Clone, Default)]
pub struct TemplateFilter {
    /// Only this visibility.
    pub visibility: Option<Visibility>,
    /// Only this name.
    pub name: Option<String>,
}

/// A page of the templates `viewer` may see, with their latest versions,
/// built-ins first then by name; and the total.
pub async fn page(
    conn: &mut AnyConnection,
    viewer: Viewer<'_>,
    filter: &TemplateFilter,
    limit: i64,
    offset: i64,
) -> Result<(Vec<(Template, TemplateVersion)>, i64), sqlx::Error> {
    let condition = format!(
        "{VISIBLE} AND (CAST($3 AS TEXT) IS NULL OR visibility = $3) \
         AND (CAST($4 AS TEXT) IS NULL OR name = $4)"
    );
    let visibility = filter.visibility.map(Visibility::as_str);
    let (total,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM workflow_templates WHERE {condition}"
    )))
    .bind(viewer.org_id)
    .bind(viewer.user_id)
    .bind(visibility)
    .bind(&filter.name)
    .fetch_one(&mut *conn)
    .await?;
    let templates: Vec<Template> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM workflow_templates WHERE {condition} \
         ORDER BY builtin DESC, name, id LIMIT $5 OFFSET $6"
    )))
    .bind(viewer.org_id)
    .bind(viewer.user_id)
    .bind(visibility)
    .bind(&filter.name)
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(templates.len());
    for t in templates {
        if let Some(v) = version(conn, &t.id, t.latest_version).await? {
            out.push((t, v));
        }
    }
    Ok((out, total))
}

/// Record on a workflow the template version it was started from.
pub async fn link_workflow(
    conn: &mut AnyConnection,
    org_id: &str,
    workflow_id: &str,
    template_id: &str,
    version: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE workflows SET template_id = $1, template_version = $2 \
         WHERE org_id = $3 AND id = $4",
    )
    .bind(template_id)
    .bind(version)
    .bind(org_id)
    .bind(workflow_id)
    .execute(conn)
    .await?;
    Ok(())
}
