//! Who an API request is: the bearer token it carries, and the person behind it.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::error::ApiError;
use super::AppState;
use crate::auth::Actor;
use crate::projections::users::actor_for_token;

/// The request's `Authorization: Bearer` token, if it has one.
pub(super) fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The person behind the request's bearer token.
pub struct Authenticated(pub Actor);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or(ApiError::Unauthenticated)?;
        let actor = actor_for_token(state.store.pool(), token, state.clock.now())
            .await?
            .ok_or(ApiError::Unauthenticated)?;
        Ok(Authenticated(actor))
    }
}
