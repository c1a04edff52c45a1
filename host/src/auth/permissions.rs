//! Permissions: what a role lets its holder do in an organization. The four
//! built-in roles map to fixed sets; an organization may define roles of
//! its own from the same permissions (stored in `org_roles`).

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Role;

/// One thing a member may be allowed to do in their organization.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Read the organization's agents, tasks, workflows, templates,
    /// integrations (never their secrets), plugins and members.
    View,
    /// Read usage, latency and cost analytics, budgets and alerts, and
    /// export the task history.
    ViewAnalytics,
    /// Create, change, test and delete agents.
    CreateAgent,
    /// Run tasks (REST and the OpenAI-compatible gateway), workflows and
    /// workflow templates.
    ExecuteTask,
    /// Decide workflow approval steps.
    ApproveWorkflows,
    /// Acknowledge alerts.
    AcknowledgeAlerts,
    /// Set and remove budgets.
    ManageBudgets,
    /// Manage members, invitations, role assignments and custom roles.
    ManageUsers,
    /// Manage integrations (provider credentials) and test their connectivity.
    ManageIntegrations,
    /// Upload, activate, roll back, disable and delete the organization's plugins.
    ManagePlugins,
    /// Create and revoke API keys.
    ManageApiKeys,
    /// Read the organization's audit log.
    ViewAuditLog,
    /// Change the organization's settings (routing policy, stream failover,
    /// rate limits).
    ManageOrganization,
    /// Create, change, test and delete webhooks, and read their deliveries.
    ManageWebhooks,
}

impl Permission {
    /// Every permission, in documentation order.
    pub const ALL: [Permission; 14] = [
        Permission::View,
        Permission::ViewAnalytics,
        Permission::CreateAgent,
        Permission::ExecuteTask,
        Permission::ApproveWorkflows,
        Permission::AcknowledgeAlerts,
        Permission::ManageBudgets,
        Permission::ManageUsers,
        Permission::ManageIntegrations,
        Permission::ManagePlugins,
        Permission::ManageApiKeys,
        Permission::ViewAuditLog,
        Permission::ManageOrganization,
        Permission::ManageWebhooks,
    ];

    /// The stored and serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::View => "view",
            Permission::ViewAnalytics => "view_analytics",
            Permission::CreateAgent => "create_agent",
            Permission::ExecuteTask => "execute_task",
            Permission::ApproveWorkflows => "approve_workflows",
            Permission::AcknowledgeAlerts => "acknowledge_alerts",
            Permission::ManageBudgets => "manage_budgets",
            Permission::ManageUsers => "manage_users",
            Permission::ManageIntegrations => "manage_integrations",
            Permission::ManagePlugins => "manage_plugins",
            Permission::ManageApiKeys => "manage_api_keys",
            Permission::ViewAuditLog => "view_audit_log",
            Permission::ManageOrganization => "manage_organization",
            Permission::ManageWebhooks => "manage_webhooks",
        }
    }

    /// Parse a name.
    pub fn parse(name: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.as_str() == name)
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of permissions (a bit per [`Permission`]): cheap to copy and to
/// check on every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Permissions(u32);

impl Permissions {
    /// No permission at all.
    pub const NONE: Permissions = Permissions(0);

    /// Every permission.
    pub fn all() -> Permissions {
        Permissions::of(&Permission::ALL)
    }

    /// The set of `list`.
    pub fn of(list: &[Permission]) -> Permissions {
        Permissions(list.iter().fold(0, |bits, p| bits | p.bit()))
    }

    /// Whether `p` is in the set.
    pub fn has(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }

    /// Whether every permission of `other` is in this set.
    pub fn covers(self, other: Permissions) -> bool {
        self.0 & other.0 == other.0
    }

    /// The permissions in both sets: what a credential may do when it
    /// carries one set and its holder now holds the other.
    pub fn intersect(self, other: Permissions) -> Permissions {
        Permissions(self.0 & other.0)
    }

    /// The permissions in either set.
    pub fn union(self, other: Permissions) -> Permissions {
        Permissions(self.0 | other.0)
    }

    /// The permissions in the set, in documentation order.
    pub fn list(self) -> Vec<Permission> {
        Permission::ALL
            .into_iter()
            .filter(|p| self.has(*p))
            .collect()
    }

    /// The stored form: a JSON array of names.
    pub fn to_stored(self) -> String {
        serde_json::to_string(&self.list()).unwrap_or_else(|_| "[]".into())
    }

    /// Read the stored form; names this version does not know are skipped
    /// (a newer instance may have written them).
    pub fn from_stored(text: &str) -> Permissions {
        let names: Vec<String> = serde_json::from_str(text).unwrap_or_default();
        Permissions::of(
            &names
                .iter()
                .filter_map(|n| Permission::parse(n))
                .collect::<Vec<_>>(),
        )
    }
}

impl Role {
    /// The documented permission set of a built-in role (`admin` holds
    /// every permission in every organization).
    pub fn permissions(self) -> Permissions {
        use Permission::*;
        let viewer = [View, ViewAnalytics];
        let executor = [View, ViewAnalytics, ExecuteTask];
        let manager = [
            View,
            ViewAnalytics,
            ExecuteTask,
            CreateAgent,
            ApproveWorkflows,
            AcknowledgeAlerts,
        ];
        match self {
            Role::Admin | Role::OrgAdmin => Permissions::all(),
            Role::AgentManager => Permissions::of(&manager),
            Role::TaskExecutor => Permissions::of(&executor),
            Role::Viewer => Permissions::of(&viewer),
        }
    }
}

/// The permissions of the role named `name` in an organization: a
/// built-in role's set, else the custom role's stored set (`custom`, read
/// with the membership), else none (a role deleted meanwhile).
pub fn of_role(name: &str, custom: Option<&str>) -> Permissions {
    match Role::parse(name) {
        Some(role) if role.is_org_role() => role.permissions(),
        Some(_) => Permissions::NONE,
        None => custom.map(Permissions::from_stored).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ladder_of_built_in_roles_is_kept() {
        let ladder = [
            Role::OrgAdmin,
            Role::AgentManager,
            Role::TaskExecutor,
            Role::Viewer,
        ];
        for pair in ladder.windows(2) {
            let (stronger, weaker) = (pair[0].permissions(), pair[1].permissions());
            assert!(stronger.covers(weaker), "{:?} ⊉ {:?}", pair[0], pair[1]);
            assert_ne!(stronger, weaker);
        }
        assert!(Role::Viewer.permissions().has(Permission::ViewAnalytics));
        assert!(!Role::Viewer.permissions().has(Permission::ExecuteTask));
        assert!(
            !Role::AgentManager
                .permissions()
                .has(Permission::ManageUsers)
        );
    }

    #[test]
    fn stored_sets_round_trip_and_skip_unknown_names() {
        let set = Permissions::of(&[Permission::ViewAnalytics, Permission::ManageBudgets]);
        assert_eq!(Permissions::from_stored(&set.to_stored()), set);
        assert_eq!(
            Permissions::from_stored(r#"["view", "teleport"]"#),
            Permissions::of(&[Permission::View])
        );
        assert_eq!(Permissions::from_stored("not json"), Permissions::NONE);
    }

    #[test]
    fn custom_roles_resolve_from_their_stored_set() {
        assert_eq!(of_role("viewer", None), Role::Viewer.permissions());
        assert_eq!(of_role("admin", None), Permissions::NONE);
        assert_eq!(
            of_role("analyst", Some(r#"["view_analytics"]"#)),
            Permissions::of(&[Permission::ViewAnalytics])
        );
        assert_eq!(of_role("gone", None), Permissions::NONE);
    }
}
