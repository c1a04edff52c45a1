//! One module per resource; each exposes its routes for the router.

pub mod agent_test;
pub mod agents;
pub mod alerts;
pub mod analytics;
pub mod api_keys;
pub mod audit_logs;
pub mod auth;
pub mod batches;
pub mod benchmarks;
pub mod budgets;
pub mod connectivity;
pub mod gateway;
pub mod integrations;
pub mod invitations;
pub mod metrics;
pub mod organizations;
pub mod plugins;
pub mod rate_limits;
pub mod roles;
pub mod task_export;
pub mod tasks;
pub mod users;
pub mod webhooks;
pub mod workflow_templates;
pub mod workflows;

pub(crate) use crate::validation::{check_destination, check_text};

/// Lower-case slug rule for plugin, provider and policy names (the
/// registry's rule for plugin names).
pub(crate) fn is_slug(s: &str) -> bool {
    crate::plugins::manifest::is_plugin_name(s)
}
