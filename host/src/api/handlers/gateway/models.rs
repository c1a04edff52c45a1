//! `GET /v1/models` and `GET /v1/models/{id}`: the models the
//! organization's active integrations offer, as OpenAI lists and describes
//! them. An id is `auto`, `integration/model` (its slash kept as is, or
//! sent as `%2F` as the SDKs do) or a bare model.

use axum::Json;
use axum::extract::State;

use super::error::{dispatch_error, model_not_found};
use super::{AUTO, GatewayError, ModelEntry, ModelList, OpenAiErrorBody, secs};
use crate::api::extract::ApiPath;
use crate::auth::Principal;
use crate::orchestrator::catalog::Catalog;
use crate::state::AppState;
use crate::store::now_ms;

/// Every model of `catalog`: `auto`, each `integration/model` (chat models,
/// then embedding models), then each distinct model bare (owned by the
/// first integration offering it).
fn entries(catalog: &Catalog) -> Vec<ModelEntry> {
    let first_created = catalog
        .targets
        .iter()
        .map(|t| secs(t.integration.created_at))
        .min()
        .unwrap_or_else(|| secs(now_ms()));
    let mut data = vec![ModelEntry {
        id: AUTO.to_string(),
        object: "model",
        created: first_created,
        owned_by: "vel".to_string(),
    }];
    let mut bare: Vec<ModelEntry> = Vec::new();
    for t in &catalog.targets {
        let chat = t.models.iter().map(|m| &m.id);
        let embedding = t.deployed.plugin.embedding_models().iter().map(|m| &m.id);
        for id in chat.chain(embedding) {
            data.push(ModelEntry {
                id: format!("{}/{}", t.integration.name, id),
                object: "model",
                created: secs(t.integration.created_at),
                owned_by: t.integration.name.clone(),
            });
            if !bare.iter().any(|b| &b.id == id) {
                bare.push(ModelEntry {
                    id: id.clone(),
                    object: "model",
                    created: secs(t.integration.created_at),
                    owned_by: t.integration.name.clone(),
                });
            }
        }
    }
    data.extend(bare);
    data
}

/// The organization's catalogue, or the gateway's error when it cannot be read.
async fn catalog_of(
    state: &AppState,
    p: &Principal,
) -> Result<std::sync::Arc<Catalog>, GatewayError> {
    state
        .dispatcher
        .catalog(&p.org_id)
        .await
        .map_err(|e| dispatch_error(&e, None))
}

/// The models of the organization's active integrations: each as
/// `integration/model`, each distinct model bare, and `auto`.
#[utoipa::path(get, path = "/v1/models", tag = "gateway",
    responses((status = 200, body = ModelList), (status = 401, body = OpenAiErrorBody)),
    security(("bearer" = [])))]
pub async fn models(
    State(state): State<AppState>,
    p: Principal,
) -> Result<Json<ModelList>, GatewayError> {
    let catalog = catalog_of(&state, &p).await?;
    tracing::debug!(org_id = %p.org_id, "listing models");
    Ok(Json(ModelList {
        object: "list",
        data: entries(&catalog),
    }))
}

/// One model, as `GET /v1/models` lists it: `auto`, `integration/model`
/// (the slash as is or as `%2F`) or a bare model.
#[utoipa::path(get, path = "/v1/models/{*id}", tag = "gateway",
    params(("id" = String, Path, description = "`auto`, `integration/model` or a model, as `GET /v1/models` lists it")),
    responses((status = 200, body = ModelEntry),
              (status = 401, body = OpenAiErrorBody),
              (status = 404, description = "`model_not_found`: no active integration offers it", body = OpenAiErrorBody)),
    security(("bearer" = [])))]
pub async fn model(
    State(state): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ModelEntry>, GatewayError> {
    let catalog = catalog_of(&state, &p).await?;
    tracing::debug!(org_id = %p.org_id, model = %id, "describing a model");
    entries(&catalog)
        .into_iter()
        .find(|m| m.id == id)
        .map(Json)
        .ok_or_else(|| model_not_found(&id))
}
