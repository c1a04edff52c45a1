//! Roles as an organization manages them: the four built-in roles and its
//! own custom roles, who may grant which (no one grants what they do not
//! hold), and assigning a member's role. Every change is audited and ends
//! the cached verification of every credential it affects.

use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::permissions::of_role;
use super::{Forbidden, Permission, Permissions, Principal, Role, verified};
use crate::audit::{self, ClientInfo};
use crate::state::AppState;
use crate::store::organizations::Member;
use crate::store::roles::RoleRow;
use crate::store::{self, Tx, now_ms};
use crate::validation::{FieldErrors, Invalid};

/// Why a role operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    /// The input is wrong; every problem by field.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The caller would grant more than they hold.
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
    /// No such role or member in the organization.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The change conflicts with the organization's state.
    #[error("{0}")]
    Conflict(String),
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] sqlx::Error),
}

/// A role as listed: built-in or the organization's own.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RoleView {
    /// Name members, invitations and API keys carry.
    pub name: String,
    /// For people.
    pub description: Option<String>,
    /// What it allows.
    pub permissions: Vec<Permission>,
    /// One of the four built-in roles (cannot be changed).
    pub built_in: bool,
}

/// A custom role's definition.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleRequest {
    /// Name (creation only; 1–50 of `a-z`, `0-9`, `_`, `-`, not a built-in role's).
    #[serde(default)]
    pub name: Option<String>,
    /// For people (at most 500 characters).
    #[serde(default)]
    pub description: Option<String>,
    /// What it allows; at most what the caller holds.
    pub permissions: Vec<Permission>,
}

const BUILT_IN: [(Role, &str); 4] = [
    (
        Role::OrgAdmin,
        "Everything in the organization: members, roles, integrations, plugins, keys, budgets, settings.",
    ),
    (
        Role::AgentManager,
        "Creates and configures agents, runs tasks, approves workflows, acknowledges alerts.",
    ),
    (Role::TaskExecutor, "Runs tasks and workflows; reads."),
    (Role::Viewer, "Reads the organization's work and analytics."),
];

/// The built-in roles with their documented permission sets.
pub fn built_in() -> Vec<RoleView> {
    BUILT_IN
        .into_iter()
        .map(|(role, description)| RoleView {
            name: role.as_str().to_string(),
            description: Some(description.to_string()),
            permissions: role.permissions().list(),
            built_in: true,
        })
        .collect()
}

fn view(row: RoleRow) -> RoleView {
    RoleView {
        permissions: Permissions::from_stored(&row.permissions).list(),
        name: row.name,
        description: row.description,
        built_in: false,
    }
}

/// The permissions `name` gives in `org_id`: a built-in organization role
/// or one of the organization's custom roles; `None` when there is none.
pub async fn resolve(
    conn: &mut sqlx::AnyConnection,
    org_id: &str,
    name: &str,
) -> Result<Option<Permissions>, sqlx::Error> {
    if let Some(role) = Role::parse(name) {
        return Ok(role.is_org_role().then(|| role.permissions()));
    }
    let custom = store::roles::get(conn, org_id, name).await?;
    Ok(custom.map(|r| of_role(name, Some(&r.permissions))))
}

/// The permissions of role `name` (the request's `field`), once sure it
/// exists in `org_id` (422 otherwise) and `who` holds every one of them
/// (403 otherwise): no one grants what they do not hold.
pub async fn grantable(
    conn: &mut sqlx::AnyConnection,
    who: &Principal,
    org_id: &str,
    field: &str,
    name: &str,
) -> Result<Permissions, RoleError> {
    let granted = resolve(conn, org_id, name).await?.ok_or_else(|| {
        Invalid::field(
            field,
            "must be a built-in organization role (org_admin, agent_manager, task_executor, \
             viewer) or one of the organization's roles",
        )
    })?;
    covered(who, granted)?;
    Ok(granted)
}

/// [`Forbidden`] naming the first permission of `granted` that `who` lacks.
fn covered(who: &Principal, granted: Permissions) -> Result<(), Forbidden> {
    match granted.list().into_iter().find(|p| !who.can(*p)) {
        Some(missing) => Err(Forbidden::Permission(missing)),
        None => Ok(()),
    }
}

/// Built-in and custom roles of the organization `tx` works in.
pub async fn list(tx: &mut Tx, org_id: &str) -> Result<Vec<RoleView>, RoleError> {
    let mut roles = built_in();
    roles.extend(store::roles::list(tx, org_id).await?.into_iter().map(view));
    Ok(roles)
}

fn check_definition(req: &RoleRequest, errors: &mut FieldErrors) {
    if let Some(d) = &req.description {
        errors.check(
            d.chars().count() <= 500,
            "description",
            "must be at most 500 characters",
        );
    }
    errors.check(
        !req.permissions.is_empty(),
        "permissions",
        "must name at least one permission",
    );
}

/// Define a custom role in `org_id` (within `tx`), audited.
pub async fn create(
    mut tx: Tx,
    who: &Principal,
    client: &ClientInfo,
    org_id: &str,
    req: RoleRequest,
) -> Result<RoleView, RoleError> {
    let mut errors = FieldErrors::new();
    let name = req.name.clone().unwrap_or_default();
    let valid_name = (1..=50).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    errors.check(
        valid_name,
        "name",
        "must be 1–50 characters of a-z, 0-9, _ and -",
    );
    errors.check(
        Role::parse(&name).is_none(),
        "name",
        "is a built-in role's name",
    );
    check_definition(&req, &mut errors);
    errors.finish()?;
    let permissions = Permissions::of(&req.permissions);
    covered(who, permissions)?;
    let now = now_ms();
    let row = RoleRow {
        org_id: org_id.to_string(),
        name,
        description: req.description,
        permissions: permissions.to_stored(),
        created_at: now,
        updated_at: now,
    };
    if !store::roles::insert(&mut tx, &row).await? {
        return Err(RoleError::Conflict(format!(
            "the organization already has a role named {}",
            row.name
        )));
    }
    audit::record_for(
        &mut tx,
        Some(org_id),
        Some(&who.user_id),
        client,
        "role_created",
        json!({ "role": row.name, "permissions": permissions.list() }),
    )
    .await?;
    tx.commit().await?;
    Ok(view(row))
}

/// Change a custom role's description and permissions, audited; every
/// credential carrying it is verified again at once.
pub async fn update(
    state: &AppState,
    mut tx: Tx,
    who: &Principal,
    client: &ClientInfo,
    (org_id, name): (&str, &str),
    req: RoleRequest,
) -> Result<RoleView, RoleError> {
    let mut errors = FieldErrors::new();
    errors.check(
        req.name.as_deref().is_none_or(|n| n == name),
        "name",
        "cannot be changed; create a new role",
    );
    check_definition(&req, &mut errors);
    errors.finish()?;
    if Role::parse(name).is_some() {
        return Err(RoleError::Conflict(format!(
            "{name} is a built-in role and cannot be changed"
        )));
    }
    let before = store::roles::get(&mut tx, org_id, name)
        .await?
        .ok_or(RoleError::NotFound("role"))?;
    let old = Permissions::from_stored(&before.permissions);
    let new = Permissions::of(&req.permissions);
    // Changing what a role allows grants (or takes) each permission to
    // everyone holding it: the caller must hold both sets.
    covered(who, old.union(new))?;
    let row = RoleRow {
        description: req.description,
        permissions: new.to_stored(),
        updated_at: now_ms(),
        ..before
    };
    store::roles::update(&mut tx, &row).await?;
    audit::record_for(
        &mut tx,
        Some(org_id),
        Some(&who.user_id),
        client,
        "role_updated",
        json!({ "role": name, "from": old.list(), "to": new.list() }),
    )
    .await?;
    let holders = store::roles::holders(&mut tx, org_id, name).await?;
    let mut users = holders.members;
    users.extend(holders.key_creators);
    verified::commit_users_change(state, tx, &users).await?;
    Ok(view(row))
}

/// Delete a custom role nobody carries (409 otherwise), audited.
pub async fn delete(
    mut tx: Tx,
    who: &Principal,
    client: &ClientInfo,
    org_id: &str,
    name: &str,
) -> Result<(), RoleError> {
    if Role::parse(name).is_some() {
        return Err(RoleError::Conflict(format!(
            "{name} is a built-in role and cannot be deleted"
        )));
    }
    let row = store::roles::get(&mut tx, org_id, name)
        .await?
        .ok_or(RoleError::NotFound("role"))?;
    covered(who, Permissions::from_stored(&row.permissions))?;
    let holders = store::roles::holders(&mut tx, org_id, name).await?;
    if !holders.members.is_empty() || !holders.key_creators.is_empty() || holders.invitations > 0 {
        return Err(RoleError::Conflict(format!(
            "{name} is carried by {} member(s), the API keys of {} user(s) and {} pending \
             invitation(s); assign another role first",
            holders.members.len(),
            holders.key_creators.len(),
            holders.invitations
        )));
    }
    store::roles::delete(&mut tx, org_id, name).await?;
    audit::record_for(
        &mut tx,
        Some(org_id),
        Some(&who.user_id),
        client,
        "role_deleted",
        json!({ "role": name }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Give member `user_id` of `org_id` the role `name` (the last org_admin
/// cannot be demoted), audited. The caller must hold every permission of
/// both the member's current role and the new one.
pub async fn assign(
    state: &AppState,
    mut tx: Tx,
    who: &Principal,
    client: &ClientInfo,
    (org_id, user_id): (&str, &str),
    name: &str,
) -> Result<Member, RoleError> {
    let granted = grantable(&mut tx, who, org_id, "role", name).await?;
    let current = store::organizations::get_member(&mut tx, org_id, user_id)
        .await?
        .ok_or(RoleError::NotFound("member"))?;
    let custom = store::roles::get(&mut tx, org_id, &current.role).await?;
    covered(
        who,
        of_role(
            &current.role,
            custom.as_ref().map(|r| r.permissions.as_str()),
        ),
    )?;
    if current.role == Role::OrgAdmin.as_str()
        && name != Role::OrgAdmin.as_str()
        && store::organizations::count_admins(&mut tx, org_id).await? <= 1
    {
        return Err(RoleError::Conflict(
            "the organization's last org_admin cannot be demoted".into(),
        ));
    }
    store::organizations::set_role(&mut tx, org_id, user_id, name).await?;
    // The member's keys that carry more than the new role now act with less.
    let mut limited_keys = Vec::new();
    for key in store::api_keys::live_of_creator(&mut tx, org_id, user_id).await? {
        let carried = resolve(&mut tx, org_id, &key.role).await?;
        if carried.is_some_and(|c| !granted.covers(c)) {
            limited_keys.push(key.id);
        }
    }
    audit::record_for(
        &mut tx,
        Some(org_id),
        Some(&who.user_id),
        client,
        "member_role_changed",
        json!({ "user_id": user_id, "from": current.role, "to": name,
                "limited_api_key_ids": limited_keys }),
    )
    .await?;
    let member = store::organizations::get_member(&mut tx, org_id, user_id)
        .await?
        .ok_or(RoleError::NotFound("member"))?;
    verified::commit_user_change(state, tx, user_id).await?;
    Ok(member)
}
