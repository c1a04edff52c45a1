//! What every request handler shares: database, configuration, keys,
//! plugins.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;

use crate::auth::jwt::JwtKeys;
use crate::auth::password::PasswordHasher;
use crate::config::Config;
use crate::orchestrator::dispatch::Dispatcher;
use crate::orchestrator::executor::Executor;
use crate::orchestrator::signals::Signals;
use crate::orchestrator::usage::UsageRecorder;
use crate::plugins::Plugins;
use crate::secrets::MasterKey;
use crate::store::Db;

/// Shared application state: one reference count to clone, since axum
/// clones the state for every extractor and middleware of every request.
/// Its fields are [`Services`]'s, reached through `Deref`.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    /// The state holding `services`.
    pub fn new(services: Services) -> AppState {
        AppState(Arc::new(services))
    }
}

impl Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// What every request handler shares.
#[derive(Debug)]
pub struct Services {
    /// The database.
    pub db: Db,
    /// Loaded configuration.
    pub config: Arc<Config>,
    /// Master key (encrypts integration keys).
    pub keys: Arc<MasterKey>,
    /// Access-token keys.
    pub jwt: Arc<JwtKeys>,
    /// Password hashing at the configured cost.
    pub passwords: Arc<PasswordHasher>,
    /// The plugin runtime and the loaded plugins.
    pub plugins: Plugins,
    /// Plans and runs completion requests (tasks and the gateway).
    pub dispatcher: Dispatcher,
    /// Wake-ups between task workers and watchers, across instances.
    pub signals: Signals,
    /// This instance's task workers.
    pub executor: Executor,
    /// Writes gateway requests as tasks, off the request path.
    pub usage: UsageRecorder,
    /// Recently verified API keys and access tokens.
    pub verified: Arc<crate::auth::verified::Verified>,
    /// Gateway requests in flight per credential and per organization.
    pub shares: Arc<crate::orchestrator::shares::Shares>,
    /// Rate limits per organization, user and API key, across instances.
    pub limits: Arc<crate::limits::RateLimiter>,
    /// Delivers messages to people through the operator's hook.
    pub notifier: crate::notify::Notifier,
    /// This instance's webhook delivery workers.
    pub deliveries: crate::webhooks::delivery::Deliveries,
    /// When the server started (for uptime).
    pub started: Instant,
}

impl Services {
    /// Commit a change to an organization's catalogue (its integrations,
    /// routing policy or budgets) and make every instance's dispatcher read
    /// it again: this one at once, the others on the signal sent with the
    /// commit.
    pub async fn commit_catalog_change(
        &self,
        tx: crate::store::Tx,
        org_id: &str,
    ) -> Result<(), sqlx::Error> {
        let signal = crate::orchestrator::signals::Signal::CatalogChanged(org_id.to_string());
        self.signals.commit_with(tx, signal).await?;
        self.dispatcher.forget_catalog(org_id);
        Ok(())
    }
}
