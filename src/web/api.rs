//! The JSON API (`/api/v1`): proposals with cursor pagination, one proposal with its
//! history, and decisions. Every route needs `Authorization: Bearer <token>`; decisions go
//! through the same authorisation and the same aggregate commands as every other path.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

pub use super::card::ProposalItem;
use super::credentials::Authenticated;
use super::error::ApiError;
use super::error::ErrorBody;
use super::AppState;
use crate::auth::Permission;
use crate::decisions::{decide, settle, DecisionOutcome, DecisionRequest};
use crate::projections::proposals::{by_id, history, newest, Summary};
use crate::store::Metadata;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only proposals with this status.
    status: Option<String>,
    /// Only this vertical: money, engineering, customer, growth, ops.
    vertical: Option<String>,
    /// 1 to 200; 50 when left out.
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

fn encode_cursor(created_at: DateTime<Utc>, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}|{id}", created_at.timestamp_micros()))
}

pub fn decode_cursor(cursor: &str) -> Result<(DateTime<Utc>, String), ApiError> {
    let bad = || ApiError::BadRequest {
        code: "bad_cursor",
        message: "the cursor is not one this API gave".into(),
    };
    let text =
        String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?).map_err(|_| bad())?;
    let (micros, id) = text.split_once('|').ok_or_else(bad)?;
    let at = micros
        .parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(bad)?;
    Ok((at, id.to_string()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProposalPage {
    pub items: Vec<ProposalItem>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryEntry {
    pub sequence: i64,
    pub event_type: String,
    pub recorded_at: DateTime<Utc>,
    #[schema(value_type = Object)]
    pub data: Value,
    #[schema(value_type = Object)]
    pub metadata: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProposalDetail {
    #[serde(flatten)]
    pub proposal: ProposalItem,
    /// Every event of the proposal's stream, in order.
    pub history: Vec<HistoryEntry>,
}

/// What a decision did: `status` is `pending` while approvals short of the quorum gather.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionResult {
    pub id: String,
    pub status: String,
    pub approvals: usize,
    pub approvals_needed: u32,
    pub approved_by: Vec<String>,
    pub rejections: usize,
    pub rejections_needed: u32,
}

impl DecisionResult {
    fn new(id: String, outcome: DecisionOutcome) -> Self {
        Self {
            id,
            status: outcome.status.to_string(),
            approvals: outcome.approved_by.len(),
            approvals_needed: outcome.approvals_needed,
            approved_by: outcome.approved_by,
            rejections: outcome.rejected_by.len(),
            rejections_needed: outcome.rejections_needed,
        }
    }
}

/// Proposals, newest first.
#[utoipa::path(get, path = "/api/v1/proposals", params(ListQuery),
    responses((status = 200, body = ProposalPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Authenticated(actor): Authenticated,
    Query(query): Query<ListQuery>,
) -> Result<Json<ProposalPage>, ApiError> {
    actor.may(Permission::Read)?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::BadRequest {
            code: "bad_limit",
            message: "limit must be between 1 and 200".into(),
        });
    }
    let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let mut rows = newest(
        state.store.pool(),
        query.status.as_deref(),
        query.vertical.as_deref(),
        after,
        limit + 1,
    )
    .await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|p| encode_cursor(p.created_at, &p.id))
    } else {
        None
    };
    settle(&state.store, &state.clock, &mut rows, "api").await?;
    // Settling may have expired rows asked for as pending: they are that no longer.
    if let Some(status) = query.status.as_deref() {
        rows.retain(|row| row.status == status);
    }
    Ok(Json(ProposalPage {
        items: rows.into_iter().map(ProposalItem::from).collect(),
        next_cursor,
    }))
}

async fn summary(state: &AppState, id: &str) -> Result<Summary, ApiError> {
    by_id(state.store.pool(), id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no proposal {id}")))
}

/// One proposal with every event of its stream.
#[utoipa::path(get, path = "/api/v1/proposals/{id}", params(("id" = String, Path, description = "The proposal's id")),
    responses((status = 200, body = ProposalDetail), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<ProposalDetail>, ApiError> {
    actor.may(Permission::Read)?;
    let mut proposal = summary(&state, &id).await?;
    settle(
        &state.store,
        &state.clock,
        std::slice::from_mut(&mut proposal),
        "api",
    )
    .await?;
    let history = history(state.store.pool(), &id).await?;
    Ok(Json(ProposalDetail {
        proposal: ProposalItem::from(proposal),
        history: history
            .into_iter()
            .map(|step| HistoryEntry {
                sequence: step.sequence,
                event_type: step.event_type,
                recorded_at: step.recorded_at,
                data: step.data,
                metadata: step.metadata,
            })
            .collect(),
    }))
}

/// A decision's body. An approval needs the `payload_hash` the caller was shown (from
/// `GET /api/v1/proposals/{id}`), so that it binds exactly that action; a rejection needs
/// its `reason`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    comment: Option<String>,
    reason: Option<String>,
    /// The hash of the action the person was shown, from `GET /api/v1/proposals/{id}`.
    /// Required to approve (400 `missing_payload_hash` without it; 409 `payload_changed`
    /// when the action has changed since). A rejection without it rejects the current one.
    #[schema(example = "9b74c9897bac770ffc029102a200c5de1c3a2e43ea70d1a0f7d7bb32cba6f8f7")]
    payload_hash: Option<String>,
}

fn parse_body(bytes: &Bytes) -> Result<DecisionBody, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(DecisionBody::default());
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest {
        code: "malformed_json",
        message: format!("the body is not valid: {e}"),
    })
}

fn request_metadata(headers: &HeaderMap) -> HashMap<String, String> {
    Metadata::via("api")
        .request(super::request_id(headers))
        .into()
}

/// Approve a pending proposal.
#[utoipa::path(post, path = "/api/v1/proposals/{id}/approve", params(("id" = String, Path)),
    request_body(content = DecisionBody, content_type = "application/json"),
    responses((status = 200, body = DecisionResult), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn approve(
    State(state): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<DecisionResult>, ApiError> {
    // Who may not decide hears so before what their request lacks.
    actor.may(Permission::Decide)?;
    let body = parse_body(&body)?;
    let shown = body
        .payload_hash
        .filter(|h| !h.trim().is_empty())
        .ok_or_else(|| ApiError::BadRequest {
            code: "missing_payload_hash",
            message: format!(
                "an approval binds the action you were shown: send its payload_hash, as \
                 GET /api/v1/proposals/{id} gives it"
            ),
        })?;
    let request = DecisionRequest {
        approve: true,
        comment: body.comment,
        reason: None,
        shown_hash: Some(shown),
        metadata: request_metadata(&headers),
    };
    let outcome = decide(&state.store, &state.clock, &actor, &id, request).await?;
    Ok(Json(DecisionResult::new(id, outcome)))
}

/// Reject a pending proposal, with a reason.
#[utoipa::path(post, path = "/api/v1/proposals/{id}/reject", params(("id" = String, Path)),
    request_body(content = DecisionBody, content_type = "application/json"),
    responses((status = 200, body = DecisionResult), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn reject(
    State(state): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<DecisionResult>, ApiError> {
    let body = parse_body(&body)?;
    let reason = body
        .reason
        .filter(|r| !r.trim().is_empty())
        .ok_or(ApiError::BadRequest {
            code: "missing_reason",
            message: "a rejection needs a reason".into(),
        })?;
    let request = DecisionRequest {
        approve: false,
        comment: body.comment,
        reason: Some(reason),
        shown_hash: body.payload_hash,
        metadata: request_metadata(&headers),
    };
    let outcome = decide(&state.store, &state.clock, &actor, &id, request).await?;
    Ok(Json(DecisionResult::new(id, outcome)))
}
