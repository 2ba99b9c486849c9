//! The one place errors become HTTP answers: `{"error": code, "message": text}` with the
//! right status. User errors say what was wrong; an unreachable store is 503 with
//! `Retry-After`; anything else is an opaque 500, logged with its cause.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::ingest::IngestError;
use crate::store::CommandError;

#[derive(Debug)]
pub enum ApiError {
    /// A delivery or request that is wrong in itself; 400 or 401 by its kind.
    Ingest(IngestError),
    /// The body is over the limit.
    TooLarge {
        limit: usize,
    },
    /// The sender has no secret configured, so its endpoint is off.
    SourceDisabled {
        source: String,
        setting: String,
    },
    /// Postgres could not be reached; nothing was recorded.
    Unavailable(String),
    /// A bug or an unexpected failure; the cause is logged, not shown.
    Internal(String),
    /// No valid credentials.
    Unauthenticated,
    /// Known, but not allowed.
    Forbidden(String),
    NotFound(String),
    /// The state does not allow it (already decided, changed meanwhile).
    Conflict {
        code: &'static str,
        message: String,
    },
    BadRequest {
        code: &'static str,
        message: String,
    },
}

impl<E: std::error::Error> From<CommandError<E>> for ApiError {
    fn from(error: CommandError<E>) -> Self {
        match error {
            CommandError::Unavailable(cause) => ApiError::Unavailable(cause),
            // Another change to the same record committed first: the person may try again.
            CommandError::Conflict => ApiError::Conflict {
                code: "changed_meanwhile",
                message: "Someone else changed this at the same moment; try again.".into(),
            },
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// Every channel's refusal of a decision, as the API and the pages answer it.
impl From<crate::decisions::DecisionError> for ApiError {
    fn from(error: crate::decisions::DecisionError) -> Self {
        use crate::decisions::DecisionError as D;
        let conflict = |code, error: D| ApiError::Conflict {
            code,
            message: error.to_string(),
        };
        match error {
            D::NotFound(_) => ApiError::NotFound(error.to_string()),
            D::Forbidden(message) => ApiError::Forbidden(message),
            D::Expired => conflict("expired", error),
            D::AlreadyDecided(_) => conflict("already_decided", error),
            D::AlreadyApproved(_) => conflict("already_approved", error),
            D::AlreadyRejected(_) => conflict("already_rejected", error),
            D::PayloadChanged(_) => conflict("payload_changed", error),
            D::Raced => conflict("changed", error),
            D::NotNow(_) => conflict("not_now", error),
            D::Unavailable(cause) => ApiError::Unavailable(cause),
            D::Internal(cause) => ApiError::Internal(cause),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if crate::store::is_unavailable(&error) {
            ApiError::Unavailable(error.to_string())
        } else {
            ApiError::Internal(error.to_string())
        }
    }
}

impl From<crate::auth::Forbidden> for ApiError {
    fn from(error: crate::auth::Forbidden) -> Self {
        ApiError::Forbidden(error.to_string())
    }
}

impl From<IngestError> for ApiError {
    fn from(error: IngestError) -> Self {
        ApiError::Ingest(error)
    }
}

fn body(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": code, "message": message })),
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Ingest(error) => {
                let status = if error.is_unauthenticated() {
                    StatusCode::UNAUTHORIZED
                } else {
                    StatusCode::BAD_REQUEST
                };
                body(status, error.code(), error.to_string())
            }
            ApiError::TooLarge { limit } => body(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body is over the {limit} byte limit"),
            ),
            ApiError::SourceDisabled { source, setting } => body(
                StatusCode::SERVICE_UNAVAILABLE,
                "source_disabled",
                format!("{source} webhooks are disabled: set {setting} to enable them"),
            ),
            ApiError::Unavailable(cause) => {
                tracing::warn!(%cause, "event store unreachable");
                let mut response = body(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the event store is unreachable; nothing was recorded, please retry".into(),
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
                response
            }
            ApiError::Unauthenticated => {
                let mut response = body(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "sign in, or send Authorization: Bearer <token>".into(),
                );
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
                response
            }
            ApiError::Forbidden(message) => body(StatusCode::FORBIDDEN, "forbidden", message),
            ApiError::NotFound(message) => body(StatusCode::NOT_FOUND, "not_found", message),
            ApiError::Conflict { code, message } => body(StatusCode::CONFLICT, code, message),
            ApiError::BadRequest { code, message } => body(StatusCode::BAD_REQUEST, code, message),
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "request failed");
                body(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "something went wrong; it has been logged".into(),
                )
            }
        }
    }
}

/// Every error: a code to match on and a sentence to show.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;

    #[test]
    fn a_command_that_lost_a_race_is_a_conflict_and_an_unreachable_store_is_unavailable() {
        let status = |error: CommandError<std::fmt::Error>| {
            ApiError::from(error).into_response().status().as_u16()
        };
        assert_eq!(status(CommandError::Conflict), 409);
        assert_eq!(status(CommandError::Unavailable("down".into())), 503);
        assert_eq!(status(CommandError::Internal("bug".into())), 500);
    }
}
