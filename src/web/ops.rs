//! Operations endpoints: liveness, readiness (Postgres reachable and every subscription
//! within its lag bound) and Prometheus metrics.
//!
//! What they tell depends on who asks. On the metrics listener (`EXECOPS_METRICS_ADDR`),
//! which is meant to be private, everything. On the main listener, `/readyz` tells the
//! anonymous only ready or not ready, and its reasons to a bearer of `EXECOPS_METRICS_TOKEN`
//! or an admin's API token; `/metrics` answers only those (and is not served there at all
//! when the metrics listener is set).

use std::time::Duration;

use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::AppState;
use crate::domain::Role;
use crate::projections::event_counts;
use crate::projections::users::actor_for_token;
use crate::store::subscription::backlog;
use crate::telemetry::{EventTypeLabels, SubscriptionLabels};

pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

#[derive(Serialize)]
struct Readiness {
    status: &'static str,
    database: String,
    subscriptions: Vec<SubscriptionReadiness>,
    reasons: Vec<String>,
}

#[derive(Serialize)]
struct SubscriptionReadiness {
    name: String,
    active_here: bool,
    lag_events: i64,
    lag_seconds: f64,
}

/// Who may read the details: the metrics listener marks its requests with this.
#[derive(Clone, Copy, Debug)]
pub struct Private;

/// Whether the request may read reasons and metrics.
async fn insider(state: &AppState, parts: &Parts) -> Result<bool, sqlx::Error> {
    if parts.extensions.get::<Private>().is_some() {
        return Ok(true);
    }
    let Some(token) = super::credentials::bearer(parts) else {
        return Ok(false);
    };
    if let Some(expected) = &state.config.metrics_token {
        if bool::from(token.as_bytes().ct_eq(expected.expose_secret().as_bytes())) {
            return Ok(true);
        }
    }
    Ok(
        actor_for_token(state.store.pool(), token, state.clock.now())
            .await?
            .is_some_and(|actor| actor.role == Role::Admin),
    )
}

#[tracing::instrument(skip_all)]
pub async fn readyz(State(state): State<AppState>, parts: Parts) -> Response {
    let (code, body) = readiness(&state).await;
    match insider(&state, &parts).await {
        Ok(true) => (code, Json(body)).into_response(),
        _ => (code, Json(serde_json::json!({ "status": body.status }))).into_response(),
    }
}

async fn readiness(state: &AppState) -> (StatusCode, Readiness) {
    let pool = state.store.pool();
    let mut reasons = Vec::new();
    let database =
        match tokio::time::timeout(Duration::from_secs(2), crate::store::ping(pool)).await {
            Ok(Ok(_)) => "ok".to_string(),
            Ok(Err(e)) => format!("unreachable: {e}"),
            Err(_) => "unreachable: no answer within 2 s".to_string(),
        };
    if database != "ok" {
        reasons.push(format!("postgres is {database}"));
    }
    let mut subscriptions = Vec::new();
    if reasons.is_empty() {
        let now = chrono::Utc::now();
        for status in state.subscriptions.statuses() {
            match backlog(pool, &status.name).await {
                Ok(b) => {
                    let lag = b.lag_seconds(now);
                    if lag > state.config.max_subscriber_lag.as_secs_f64() {
                        reasons.push(format!(
                            "subscription {} is {lag:.1} s behind (bound {} s)",
                            status.name,
                            state.config.max_subscriber_lag.as_secs()
                        ));
                    }
                    subscriptions.push(SubscriptionReadiness {
                        name: status.name.clone(),
                        active_here: status.is_active(),
                        lag_events: b.events,
                        lag_seconds: lag,
                    });
                }
                Err(e) => reasons.push(format!("lag of {} unknown: {e}", status.name)),
            }
        }
    }
    let ready = reasons.is_empty();
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" },
        database,
        subscriptions,
        reasons,
    };
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body)
}

#[tracing::instrument(skip_all)]
pub async fn metrics(State(state): State<AppState>, parts: Parts) -> Response {
    match insider(&state, &parts).await {
        Ok(true) => {}
        Ok(false) => return ApiError::Unauthenticated.into_response(),
        Err(error) => return ApiError::from(error).into_response(),
    }
    let pool = state.store.pool();
    let now = chrono::Utc::now();
    // Figures read from Postgres are best effort: a scrape still answers when it is down.
    for status in state.subscriptions.statuses() {
        let labels = SubscriptionLabels {
            subscription: status.name.clone(),
        };
        state
            .metrics
            .subscription_active
            .get_or_create(&labels)
            .set(status.is_active() as i64);
        state
            .metrics
            .subscription_failures
            .get_or_create(&labels)
            .set(status.failures() as i64);
        if let Ok(b) = backlog(pool, &status.name).await {
            state
                .metrics
                .subscription_lag_events
                .get_or_create(&labels)
                .set(b.events);
            state
                .metrics
                .subscription_lag_seconds
                .get_or_create(&labels)
                .set(b.lag_seconds(now));
        }
    }
    if let Ok(counts) = event_counts::counts(pool).await {
        for (aggregate_type, event_type, events) in counts {
            state
                .metrics
                .log_events
                .get_or_create(&EventTypeLabels {
                    aggregate_type,
                    event_type,
                })
                .set(events);
        }
    }
    match state.metrics.render() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering metrics failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
