//! What every request handler shares: database, configuration, keys,
//! plugins.

use std::sync::Arc;
use std::time::Instant;

use crate::auth::jwt::JwtKeys;
use crate::auth::password::PasswordHasher;
use crate::config::Config;
use crate::plugins::Plugins;
use crate::secrets::MasterKey;
use crate::store::Db;

/// Shared, cheaply cloned application state.
#[derive(Debug, Clone)]
pub struct AppState {
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
    /// When the server started (for uptime).
    pub started: Instant,
}
