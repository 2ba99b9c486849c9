//! `GET /api/v1/openapi.json`: the API described (OpenAPI 3.1), generated from the handlers
//! of the proposals, the audit log and the canvas, and the types they answer with.

use axum::Json;
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "ExecOps API", version = "1", description = "Proposals, decisions and the audit log. Every route needs `Authorization: Bearer <token>` (`execops token create EMAIL`)."),
    paths(
        super::api::list,
        super::api::get,
        super::api::approve,
        super::api::reject,
        super::audit::api,
        super::canvas::api
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// `GET /api/v1/openapi.json`: this API described (OpenAPI 3.1), generated from the handlers
/// and types above. It holds no data, so it needs no token.
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
