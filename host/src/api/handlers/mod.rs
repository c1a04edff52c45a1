//! One module per resource; each exposes its routes for the router.

pub mod agent_test;
pub mod agents;
pub mod api_keys;
pub mod audit_logs;
pub mod auth;
pub mod connectivity;
pub mod gateway;
pub mod integrations;
pub mod invitations;
pub mod metrics;
pub mod organizations;
pub mod plugins;
pub mod tasks;
pub mod users;

pub(crate) use crate::validation::check_text;

/// Refuse a destination host about to be stored (a base URL's, a plugin
/// manifest's outbound host) when it names a restricted address (loopback,
/// private, link-local, …) the operator has not allowed
/// (`VEL_OUTBOUND_ALLOW_PRIVATE`). Names that resolve to such addresses are
/// refused when a connection is made.
pub(crate) fn check_destination(
    errors: &mut super::error::FieldErrors,
    field: &str,
    host: &str,
    allow: &vel_runtime::AllowPrivate,
) {
    if let Some(kind) = allow.refused_host(host) {
        errors.add(
            field,
            &format!(
                "`{host}` is a {kind} address: outbound requests may not go there (destination address not allowed)"
            ),
        );
    }
}

/// Lower-case slug rule for plugin, provider and policy names (the
/// registry's rule for plugin names).
pub(crate) fn is_slug(s: &str) -> bool {
    crate::plugins::manifest::is_plugin_name(s)
}
