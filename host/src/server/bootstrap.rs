//! First start: create the `default` organization and the platform admin
//! (from `VEL_ADMIN_EMAIL` / `VEL_ADMIN_PASSWORD`, or a generated password
//! printed once).

use crate::auth::password::{self, PasswordHasher};
use crate::config::Config;
use crate::store::{self, Db, new_id, now_ms, users::User};

/// Name of the organization created on first start.
pub(super) const DEFAULT_ORG: &str = "default";

/// Create the first platform admin when none exists. Safe when several
/// instances start at once: the loser of the race sees a unique violation and
/// leaves the winner's admin in place.
pub(super) async fn ensure_platform_admin(
    db: &Db,
    config: &Config,
    hasher: &PasswordHasher,
) -> anyhow::Result<()> {
    {
        let mut conn = db.platform_pool().acquire().await?;
        if store::users::platform_admin_exists(&mut conn).await? {
            return Ok(());
        }
    }
    let (password, generated) = match &config.admin_password {
        Some(p) => (p.clone(), false),
        None => (password::generate(), true),
    };
    let hash = {
        let hasher = hasher.clone();
        let password = password.clone();
        tokio::task::spawn_blocking(move || hasher.hash(&password)).await??
    };
    let email = config.admin_email.trim().to_lowercase();
    let now = now_ms();
    let user = User {
        id: new_id(),
        email: email.clone(),
        name: Some("Platform admin".into()),
        password_hash: hash,
        platform_role: Some("admin".into()),
        session_epoch: 0,
        created_at: now,
        updated_at: now,
    };
    let result: Result<(), sqlx::Error> = async {
        let mut tx = db.platform().await?;
        let org = match store::organizations::find_by_name(&mut tx, DEFAULT_ORG).await? {
            Some(org) => org,
            None => {
                let org = store::organizations::insert(&mut tx, DEFAULT_ORG).await?;
                if config.demo_mock {
                    insert_mock_integration(&mut tx, &org.id).await?;
                }
                org
            }
        };
        store::users::insert(&mut tx, &user).await?;
        store::organizations::add_member(&mut tx, &org.id, &user.id, "org_admin").await?;
        tx.commit().await
    }
    .await;
    match result {
        Ok(()) => {
            if generated {
                // Printed once, on stderr: stdout carries only the `listening on` line.
                eprintln!(
                    "vel: created platform admin {email} with generated password: {password}\n\
                     vel: this password is shown only once; set VEL_ADMIN_PASSWORD to choose one"
                );
            } else {
                tracing::info!(%email, "created platform admin");
            }
            Ok(())
        }
        Err(e) if store::is_unique_violation(&e) => {
            tracing::info!("another instance created the platform admin first");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// The offline `mock` provider as an integration of the default
/// organization, so a fresh server runs tasks before any key is configured.
async fn insert_mock_integration(
    conn: &mut sqlx::AnyConnection,
    org_id: &str,
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    store::integrations::insert(
        conn,
        &store::integrations::Integration {
            id: new_id(),
            org_id: org_id.to_string(),
            name: "mock".into(),
            provider: "mock".into(),
            plugin: "mock".into(),
            base_url: None,
            default_model: Some("echo".into()),
            timeout_ms: 30_000,
            key_ciphertext: None,
            key_fingerprint: None,
            status: "active".into(),
            last_test_at: None,
            last_test_result: None,
            created_by: None,
            created_at: now,
            updated_at: now,
        },
    )
    .await
}
