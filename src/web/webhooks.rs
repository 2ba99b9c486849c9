//! `POST /webhooks/...`: read the body within the limit, verify and parse it with the
//! sender's module, record each event through the `Inbound` aggregate, and only then answer
//! 2xx. A duplicate is answered 2xx and records nothing.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, MethodRouter};
use axum::Json;
use chrono::Utc;
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use tracing::Instrument;

use super::error::ApiError;
use super::AppState;
use crate::commands::Receipt;
use crate::ingest::{github, hubspot, intercom, slack, standard, stripe, IngestError, Ingested};
use crate::projections::proposals::todays_moves;
use crate::store::Metadata;

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
    let mut metadata = Metadata::default().request(super::request_id(headers));
    for (key, header) in [
        ("user_agent", "user-agent"),
        ("slack_retry_num", "x-slack-retry-num"),
    ] {
        if let Some(value) = headers.get(header).and_then(|v| v.to_str().ok()) {
            metadata = metadata.with(key, value);
        }
    }
    metadata.into()
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

/// A built-in sender whose endpoint is: find its secret, read the body within the limit,
/// verify and parse it, record it.
pub struct Sender {
    source: &'static str,
    /// The setting that holds its secret, named when it is missing.
    setting: &'static str,
    verify: Verify,
}

pub const STRIPE: Sender = Sender {
    source: "stripe",
    setting: "STRIPE_WEBHOOK_SECRET",
    verify: stripe::verify,
};
pub const GITHUB: Sender = Sender {
    source: "github",
    setting: "GITHUB_WEBHOOK_SECRET",
    verify: github::verify,
};
pub const SLACK_EVENTS: Sender = Sender {
    source: "slack",
    setting: "SLACK_SIGNING_SECRET",
    verify: slack::verify_event,
};
pub const SLACK_COMMANDS: Sender = Sender {
    source: "slack",
    setting: "SLACK_SIGNING_SECRET",
    verify: slack::verify_command,
};
pub const SLACK_INTERACTIONS: Sender = Sender {
    source: "slack",
    setting: "SLACK_SIGNING_SECRET",
    verify: slack::verify_interaction,
};
pub const INTERCOM: Sender = Sender {
    source: "intercom",
    setting: "INTERCOM_CLIENT_SECRET",
    verify: intercom::verify,
};

async fn take(
    state: &AppState,
    sender: &Sender,
    headers: &HeaderMap,
    body: Body,
) -> Result<Ingested, ApiError> {
    let secret = secret(state, sender.source, sender.setting)?;
    let body = read_body(body, state.config.webhook_max_body_bytes).await?;
    Ok((sender.verify)(secret, headers, &body, state.clock.now())?)
}

/// The endpoint of a sender that needs nothing beyond [`take`] and [`record`].
pub fn endpoint(sender: &'static Sender) -> MethodRouter<AppState> {
    post(
        move |State(state): State<AppState>, headers: HeaderMap, body: Body| {
            async move {
                let ingested = take(&state, sender, &headers, body).await?;
                Ok::<_, ApiError>(Json(record(&state, &headers, ingested).await?))
            }
            .instrument(tracing::info_span!("webhook", source = sender.source))
        },
    )
}

/// The one signal a Slack delivery carries (Slack sends one event a request).
fn slack_payload(ingested: &Ingested) -> Option<&Value> {
    match ingested {
        Ingested::Signals(signals) => signals.first().map(|s| &s.payload),
        Ingested::Reply(_) => None,
    }
}

fn accepted(answer: &Value) -> bool {
    answer["status"] == "accepted"
}

/// How long an interaction's answer may wait for its decision before Slack's 3 s are at
/// risk; past it the decision and the message update finish after the acknowledgement.
const SLACK_ACK_BUDGET: std::time::Duration = std::time::Duration::from_millis(2_000);

#[tracing::instrument(skip_all, fields(source = "slack"))]
pub async fn slack_commands(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let ingested = take(&state, &SLACK_COMMANDS, &headers, body).await?;
    let payload = slack_payload(&ingested).cloned().unwrap_or(Value::Null);
    let asked = match payload.get("command").and_then(Value::as_str) {
        Some("/execops") => Some(slack::command(&payload)?),
        _ => None,
    };
    let mut answer = record(&state, &headers, ingested).await?;
    let team = payload.get("team_id").and_then(Value::as_str);
    let member = payload
        .get("user_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut blocks = None;
    let text = match asked {
        None => "ExecOps received your command.".to_string(),
        Some(slack::Command::TodaysMoves) => {
            match super::slack::may_read(&state, team, member).await {
                Ok(()) => todays_moves_text(&state).await?,
                Err(refused) => refused,
            }
        }
        Some(slack::Command::Help(why)) => match why {
            Some(why) => format!("{why}.\n{}", super::slack::HELP),
            None => super::slack::HELP.to_string(),
        },
        Some(slack::Command::Decide { .. }) if !accepted(&answer) => {
            "This command was already received; it was not run again.".to_string()
        }
        Some(slack::Command::Decide {
            approve,
            proposal_id,
            reason,
            user_id,
            team_id,
            response_url,
        }) => {
            let work = tokio::spawn({
                let state = state.clone();
                let metadata = metadata(&headers);
                async move {
                    let team = team_id.as_deref();
                    if approve {
                        super::slack::ask_to_approve(&state, team, &user_id, &proposal_id).await
                    } else {
                        let text = super::slack::run_command(
                            &state,
                            team,
                            &user_id,
                            &proposal_id,
                            approve,
                            reason,
                            metadata,
                        )
                        .await;
                        (text, None)
                    }
                }
            });
            let (text, shown) =
                super::slack::within_budget(&state, work, SLACK_ACK_BUDGET, response_url).await;
            blocks = shown;
            text
        }
    };
    // Slack shows `text` to the person who typed the command, and only to them.
    answer["response_type"] = json!("ephemeral");
    answer["text"] = json!(text);
    if let Some(blocks) = blocks {
        answer["blocks"] = blocks;
    }
    Ok(Json(answer))
}

/// `POST /webhooks/slack/interactions`: recorded like any delivery; a click on an ExecOps
/// button is then decided, once, for the person linked to the Slack member.
#[tracing::instrument(skip_all, fields(source = "slack"))]
pub async fn slack_interactions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let ingested = take(&state, &SLACK_INTERACTIONS, &headers, body).await?;
    let click = match slack_payload(&ingested) {
        Some(payload) => slack::click(payload)?,
        None => None,
    };
    let answer = record(&state, &headers, ingested).await?;
    if let (Some(click), true) = (click, accepted(&answer)) {
        let work = tokio::spawn(super::slack::act_on_click(
            state.clone(),
            click,
            metadata(&headers),
        ));
        // Usually done well within the budget; if not, it carries on after the answer.
        let _ = tokio::time::timeout(SLACK_ACK_BUDGET, work).await;
    }
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

#[tracing::instrument(skip_all, fields(source = "hubspot"))]
pub async fn hubspot(
    State(state): State<AppState>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let secret = secret(&state, "hubspot", "HUBSPOT_CLIENT_SECRET")?;
    // HubSpot signs the whole URL it called. Rebuilt from the request's `Host`, that URL
    // would be whatever the sender says it is, so only the configured one is trusted.
    let Some(base) = &state.config.public_url else {
        return Err(ApiError::SourceDisabled {
            source: "hubspot".into(),
            setting: "EXECOPS_PUBLIC_URL (HubSpot signs the full URL it called)".into(),
        });
    };
    let body = read_body(body, state.config.webhook_max_body_bytes).await?;
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let called = format!("{base}{path}");
    let ingested = hubspot::verify(
        secret,
        method.as_str(),
        &called,
        &headers,
        &body,
        state.clock.now(),
    )?;
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
    let ingested = standard::verify(&source, &key, &headers, &body, state.clock.now())?;
    Ok(Json(record(&state, &headers, ingested).await?).into_response())
}
