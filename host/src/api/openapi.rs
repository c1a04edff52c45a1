//! The OpenAPI document's frame (title, security scheme, tags) and the
//! handler that serves it at `GET /api/openapi.json`.

use std::sync::Arc;

use axum::Json;
use axum::extract::Extension;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// Title, description, tags and the bearer security scheme; the paths come
/// from the handlers via `utoipa-axum`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "vel",
        description = "Multi-provider AI task orchestration with WebAssembly plugins. \
                       Errors always have the shape {\"error\":{\"code\",\"message\",\"details\"}}."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Tokens"),
        (name = "users", description = "Users"),
        (name = "organizations", description = "Tenants, members and roles"),
        (name = "agents", description = "Agent configuration"),
        (name = "integrations", description = "Provider credentials and settings"),
        (name = "api-keys", description = "Keys for machine clients"),
        (name = "audit", description = "Audit trail"),
        (name = "plugins", description = "The plugin registry: upload, activate, roll back, statistics"),
        (name = "system", description = "Health and this document"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT or vel_ API key")
                    .build(),
            ),
        );
    }
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "system",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn document(
    Extension(doc): Extension<Arc<utoipa::openapi::OpenApi>>,
) -> Json<utoipa::openapi::OpenApi> {
    Json((*doc).clone())
}
