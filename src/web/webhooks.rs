//! `POST /webhooks/...`: read the body within the limit, verify and parse it with the
//! sender's module, record each event through the `Inbound` aggregate, and only then answer
//! 2xx. A duplicate is answered 2xx and records nothing.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;
use crate::ingest::{github, hubspot, intercom, slack, standard, stripe, IngestError, Ingested};
use crate::projections::proposals::todays_moves;
use crate::store::Receipt;

async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        let too_large = error
            .into_inner()
            .downcast_ref::<http_body_util::LengthLimitError>()
            .is_some();
        if too_large {
            ApiError::TooLarge { limit }
        } else {
            ApiError::Ingest(IngestError::MalformedJson(
                "the body could not be read".into(),
            ))
        }
    })
}

fn secret<'a>(state: &'a AppState, source: &str, setting: &str) -> Result<&'a str, ApiError> {
    state
        .config
        .webhooks
        .built_in(source)
        .map(|s| s.expose_secret())
        .ok_or_else(|| ApiError::SourceDisabled {
            source: source.to_string(),
            setting: setting.to_string(),
        })
}

/// Request context for the events' metadata: never business facts.
fn metadata(headers: &HeaderMap) -> HashMap<String, String> {
    let mut metadata = HashMap::new();
    for (key, header) in [
        ("request_id", "x-request-id"),
        ("user_agent", "user-agent"),
        ("slack_retry_num", "x-slack-retry-num"),
    ] {
        if let Some(value) = headers.get(header).and_then(|v| v.to_str().ok()) {
            metadata.insert(key.to_string(), value.to_string());
        }
    }
    metadata
}

/// Records what a verified delivery carried and says how it went.
async fn record(
    state: &AppState,
    headers: &HeaderMap,
    ingested: Ingested,
) -> Result<Value, ApiError> {
    let signals = match ingested {
        Ingested::Reply(reply) => return Ok(reply),
        Ingested::Signals(signals) => signals,
    };
    let mut results = Vec::with_capacity(signals.len());
    for signal in signals {
        let id = signal.inbound_id().to_string();
        let receipt = state.store.receive(signal, metadata(headers)).await?;
        results.push((id, receipt));
    }
    let status = |receipt: Receipt| match receipt {
        Receipt::Accepted => "accepted",
        Receipt::Duplicate => "duplicate",
    };
    Ok(match results.as_slice() {
        [(id, receipt)] => json!({ "status": status(*receipt), "id": id }),
        _ => {
            // A batch: accepted if anything in it was new.
            let any_new = results.iter().any(|(_, r)| *r == Receipt::Accepted);
            json!({
                "status": if any_new { "accepted" } else { "duplicate" },
                "events": results
                    .iter()
                    .map(|(id, r)| json!({ "id": id, "status": status(*r) }))
                    .collect::<Vec<_>>(),
            })
        }
    })
}

/// A sender's verification: secret, headers, raw body, now.
type Verify = fn(&str, &HeaderMap, &[u8], chrono::DateTime<Utc>) -> Result<Ingested, IngestError>;

/// What every built-in sender's endpoint does first: find its secret, read the body within
/// the limit, and verify and parse it.
async fn take(
    state: &AppState,
    (source, setting): (&str, &str),
    headers: &HeaderMap,
    body: Body,
    verify: Verify,
) -> Result<Ingested, ApiError> {
    let secret = secret(state, source, setting)?;
    let body = read_body(body, state.config.webhook_max_body_bytes).await?;
    Ok(verify(secret, headers, &body, Utc::now())?)
}

#[tracing::instrument(skip_all, fields(source = "stripe"))]
pub async fn stripe(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let ingested = take(
        &state,
        ("stripe", "STRIPE_WEBHOOK_SECRET"),
        &headers,
        body,
        stripe::verify,
    )
    .await?;
    Ok(Json(record(&state, &headers, ingested).await?))
}

#[tracing::instrument(skip_all, fields(source = "github"))]
pub async fn github(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let ingested = take(
        &state,
        ("github", "GITHUB_WEBHOOK_SECRET"),
        &headers,
        body,
        github::verify,
    )
    .await?;
    Ok(Json(record(&state, &headers, ingested).await?))
}

#[tracing::instrument(skip_all, fields(source = "slack"))]
pub async fn slack_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let ingested = take(
        &state,
        ("slack", "SLACK_SIGNING_SECRET"),
        &headers,
        body,
        slack::verify_event,
    )
    .await?;
    Ok(Json(record(&state, &headers, ingested).await?))
}

#[tracing::instrument(skip_all, fields(source = "slack"))]
pub async fn slack_commands(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let ingested = take(
        &state,
        ("slack", "SLACK_SIGNING_SECRET"),
        &headers,
        body,
        slack::verify_command,
    )
    .await?;
    let command = match &ingested {
        Ingested::Signals(signals) => signals
            .first()
            .and_then(|s| s.payload.get("command"))
            .and_then(Value::as_str)
            .map(str::to_string),
        Ingested::Reply(_) => None,
    };
    let mut answer = record(&state, &headers, ingested).await?;
    // Slack shows `text` to the person who typed the command, and only to them.
    answer["response_type"] = json!("ephemeral");
    answer["text"] = json!(match command.as_deref() {
        Some("/execops") => todays_moves_text(&state).await?,
        _ => "ExecOps received your command.".to_string(),
    });
    Ok(Json(answer))
}

/// `/execops`: the top of Today's Moves, read only.
async fn todays_moves_text(state: &AppState) -> Result<String, ApiError> {
    let (moves, total) = todays_moves(state.store.pool(), 5).await?;
    if moves.is_empty() {
        return Ok("Nothing is waiting for a decision.".to_string());
    }
    let mut text = format!("Today's Moves ({total} pending):\n");
    for (n, m) in moves.iter().enumerate() {
        text.push_str(&format!(
            "{}. [{}] {} ({}, score {})\n",
            n + 1,
            m.vertical,
            m.title,
            m.urgency,
            m.score
        ));
    }
    Ok(text)
}

#[tracing::instrument(skip_all, fields(source = "slack"))]
pub async fn slack_interactions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let ingested = take(
        &state,
        ("slack", "SLACK_SIGNING_SECRET"),
        &headers,
        body,
        slack::verify_interaction,
    )
    .await?;
    Ok(Json(record(&state, &headers, ingested).await?))
}

#[tracing::instrument(skip_all, fields(source = "hubspot"))]
pub async fn hubspot(
    State(state): State<AppState>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let secret = secret(&state, "hubspot", "HUBSPOT_CLIENT_SECRET")?;
    let body = read_body(body, state.config.webhook_max_body_bytes).await?;
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let called = match &state.config.public_url {
        Some(base) => format!("{base}{path}"),
        None => {
            let host = headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default();
            format!("http://{host}{path}")
        }
    };
    let ingested = hubspot::verify(
        secret,
        method.as_str(),
        &called,
        &headers,
        &body,
        Utc::now(),
    )?;
    Ok(Json(record(&state, &headers, ingested).await?))
}

#[tracing::instrument(skip_all, fields(source = "intercom"))]
pub async fn intercom(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let ingested = take(
        &state,
        ("intercom", "INTERCOM_CLIENT_SECRET"),
        &headers,
        body,
        intercom::verify,
    )
    .await?;
    Ok(Json(record(&state, &headers, ingested).await?))
}

#[tracing::instrument(skip_all, fields(source = %source))]
pub async fn standard(
    State(state): State<AppState>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Some(secret) = state.config.webhooks.standard.get(&source) else {
        return Err(ApiError::SourceDisabled {
            setting: format!("a {source}=whsec_… pair in EXECOPS_WEBHOOK_SECRETS"),
            source,
        });
    };
    let key = standard::decode_secret(secret.expose_secret()).map_err(ApiError::Internal)?;
    let body = read_body(body, state.config.webhook_max_body_bytes).await?;
    let ingested = standard::verify(&source, &key, &headers, &body, Utc::now())?;
    Ok(Json(record(&state, &headers, ingested).await?).into_response())
}
