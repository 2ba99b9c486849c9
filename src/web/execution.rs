//! What people do about executions, on the pages: preview the exact requests, undo an
//! executed proposal within the window, resolve an uncertain execution (mark as done or
//! retry), and, for admins, the guardrails on `/settings`. Every one is a command on an
//! aggregate, so every one is in the audit log with its actor.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::error::ApiError;
use super::page::{csrf_refused, header_token, page_error, render, Chrome};
use super::session::Session;
use super::AppState;
use crate::adapters::{adapter_of, ACTION_TYPES};
use crate::auth::{Actor, Permission};
use crate::domain::guardrails::{GuardrailsCommand, GuardrailsError, Scope};
use crate::domain::{ProposalCommand, ProposalError, Status};
use crate::store::CommandError;
use crate::store::Metadata;

/// A refused proposal command, as a person should read it: sorted as every decision's
/// refusals are.
pub fn proposal_error(id: &str, error: CommandError<ProposalError>) -> ApiError {
    crate::decisions::DecisionError::of_command(id, error).into()
}

fn guardrails_error(error: CommandError<GuardrailsError>) -> ApiError {
    match error {
        CommandError::Refused(e) => ApiError::BadRequest {
            code: "guardrails",
            message: e.to_string(),
        },
        other => other.into(),
    }
}

fn metadata(headers: &HeaderMap, actor: &Actor) -> HashMap<String, String> {
    Metadata::via("page")
        .actor(&actor.email)
        .request(super::request_id(headers))
        .into()
}

#[derive(Deserialize)]
pub struct ActionForm {
    csrf: Option<String>,
    /// `done` or `retry` for an uncertain execution.
    resolution: Option<String>,
    note: Option<String>,
    /// Why an undo is asked for.
    reason: Option<String>,
}

/// Checks the CSRF token and the permission; the error is the page to answer with.
#[allow(clippy::result_large_err)]
fn allowed(
    session: &Session,
    headers: &HeaderMap,
    csrf: Option<&str>,
    permission: Permission,
) -> Result<(), Response> {
    if !session.check_csrf(csrf.or_else(|| header_token(headers))) {
        return Err(csrf_refused(session));
    }
    session
        .actor
        .may(permission)
        .map_err(|e| page_error(session, e.into()))
}

/// Records the person's command, if preparing it went well, and answers with the proposal
/// page (and a notice) or the error.
async fn record(
    state: &AppState,
    session: &Session,
    headers: &HeaderMap,
    id: &str,
    command: Result<ProposalCommand, ApiError>,
    notice: &str,
) -> Response {
    let result = match command {
        Ok(command) => state
            .store
            .proposal(id, command, metadata(headers, &session.actor))
            .await
            .map_err(|e| proposal_error(id, e)),
        Err(error) => Err(error),
    };
    match result {
        Ok(()) => {
            Redirect::to(&format!("/proposals/{id}?notice={notice}#execution")).into_response()
        }
        Err(error) => page_error(session, error),
    }
}

/// `POST /proposals/{id}/preview`: renders the exact requests without sending them and
/// records them in the proposal's timeline.
pub async fn preview(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    if let Err(page) = allowed(&session, &headers, form.csrf.as_deref(), Permission::Decide) {
        return page;
    }
    let command = async {
        let proposal = state
            .store
            .load_proposal(&id)
            .await
            .map_err(|e| proposal_error(&id, e))?;
        if proposal.status() == Status::NotDrafted {
            return Err(ApiError::NotFound(format!("no proposal {id}")));
        }
        let key = proposal.idempotency_key().unwrap_or_default();
        let requests = state
            .adapters
            .preview(proposal.action_type(), proposal.action(), &key)
            .map_err(|e| ApiError::BadRequest {
                code: "cannot_preview",
                message: e.to_string(),
            })?;
        Ok(ProposalCommand::Preview {
            actor: session.actor.email.clone(),
            requests: serde_json::to_value(requests).unwrap_or_default(),
        })
    }
    .await;
    record(&state, &session, &headers, &id, command, "previewed").await
}

/// `POST /proposals/{id}/undo`: asks for the executed action to be undone. The request is
/// recorded first (`RollbackRequested`); once as many people have asked as the approval
/// took, the executor carries the undo out behind the kill switch, rate limits and circuit
/// breaker, as it does every action.
pub async fn undo(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    if let Err(page) = allowed(&session, &headers, form.csrf.as_deref(), Permission::Decide) {
        return page;
    }
    let window = chrono::Duration::from_std(state.config.execution.undo_window)
        .unwrap_or_else(|_| chrono::Duration::hours(1));
    let command = async {
        let proposal = state
            .store
            .load_proposal(&id)
            .await
            .map_err(|e| proposal_error(&id, e))?;
        if let Some(limit) = state.adapters.rollback_limit(proposal.action_type()) {
            return Err(ApiError::Conflict {
                code: "cannot_undo",
                message: format!("This cannot be undone: {limit}."),
            });
        }
        Ok(ProposalCommand::RequestRollback {
            actor: session.actor.email.clone(),
            role: session.actor.role,
            reason: form
                .reason
                .clone()
                .filter(|r| !r.trim().is_empty())
                .unwrap_or_else(|| "undo asked for on the proposal page".into()),
            at: state.clock.now(),
            window,
        })
    }
    .await;
    record(&state, &session, &headers, &id, command, "undo-requested").await
}

/// `POST /proposals/{id}/resolve`: a person settles an uncertain (or failed) execution.
pub async fn resolve(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    if let Err(page) = allowed(&session, &headers, form.csrf.as_deref(), Permission::Decide) {
        return page;
    }
    let actor = session.actor.email.clone();
    let role = session.actor.role;
    let (command, notice) = match form.resolution.as_deref() {
        Some("done") => (
            Ok(ProposalCommand::MarkDone {
                actor,
                role,
                note: form.note.filter(|n| !n.trim().is_empty()),
            }),
            "marked-done",
        ),
        Some("retry") => (
            Ok(ProposalCommand::RequestRetry { actor, role }),
            "retrying",
        ),
        _ => (
            Err(ApiError::BadRequest {
                code: "bad_resolution",
                message: "Choose \"mark as done\" or \"retry\".".into(),
            }),
            "",
        ),
    };
    record(&state, &session, &headers, &id, command, notice).await
}

/// One row of the action types table on `/settings`.
pub struct ActionTypeRow {
    pub action_type: &'static str,
    pub adapter: &'static str,
    pub disabled: Option<String>,
    /// For a write: what enabling it lets ExecOps do.
    pub enabling_means: Option<&'static str>,
    pub rate_limit: u32,
    pub rate_limit_set: bool,
    pub undo: String,
}

pub struct SwitchRow {
    pub scope: String,
    pub label: String,
    pub engaged: Option<(String, String)>,
}

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    /// The signed-in person, the CSRF token and a notice, as `base.html` shows them.
    chrome: Chrome,
    may_change: bool,
    switches: Vec<SwitchRow>,
    action_types: Vec<ActionTypeRow>,
    circuits: Vec<(String, DateTime<Utc>)>,
    undo_minutes: u64,
    max_attempts: u32,
    /// Set when Slack decisions are taken from any workspace.
    slack_warning: Option<&'static str>,
}

fn scope_value(scope: &Scope) -> String {
    match scope {
        Scope::Global => "global".into(),
        Scope::ActionType(t) => format!("action_type:{t}"),
        Scope::Adapter(a) => format!("adapter:{a}"),
    }
}

/// `GET /settings`: guardrails as their stream tells them.
pub async fn settings(State(state): State<AppState>, session: Session) -> Response {
    let guardrails = match state.store.load_guardrails().await {
        Ok(g) => g,
        Err(error) => return page_error(&session, guardrails_error(error)),
    };
    let mut adapters: Vec<&'static str> = ACTION_TYPES.iter().map(|(_, a)| *a).collect();
    adapters.dedup();
    let mut scopes = vec![Scope::Global];
    scopes.extend(adapters.iter().map(|a| Scope::Adapter(a.to_string())));
    scopes.extend(
        ACTION_TYPES
            .iter()
            .map(|(t, _)| Scope::ActionType(t.to_string())),
    );
    let switches = scopes
        .into_iter()
        .map(|scope| SwitchRow {
            scope: scope_value(&scope),
            label: scope.to_string(),
            engaged: guardrails
                .engaged()
                .get(&scope)
                .map(|e| (e.actor.clone(), e.reason.clone())),
        })
        .collect();
    let default_rate = state.config.execution.default_rate_per_hour;
    let action_types = ACTION_TYPES
        .iter()
        .map(|(action_type, adapter)| ActionTypeRow {
            action_type,
            adapter,
            disabled: guardrails.disabled_reason(action_type),
            enabling_means: crate::adapters::what_enabling_means(action_type),
            rate_limit: guardrails.rate_limit(action_type, default_rate),
            rate_limit_set: guardrails.rate_limits().contains_key(*action_type),
            undo: match state.adapters.rollback_limit(action_type) {
                None => "yes".into(),
                Some(limit) => format!("no: {limit}"),
            },
        })
        .collect();
    render(
        StatusCode::OK,
        SettingsPage {
            chrome: Chrome::of(&session),
            may_change: session.actor.may(Permission::Administer).is_ok(),
            switches,
            action_types,
            circuits: guardrails
                .circuits()
                .iter()
                .map(|(a, t)| (a.clone(), *t))
                .collect(),
            undo_minutes: state.config.execution.undo_window.as_secs() / 60,
            max_attempts: state.config.execution.max_attempts,
            slack_warning: state.config.slack_workspace_warning(),
        },
    )
}

#[derive(Deserialize)]
pub struct GuardrailForm {
    csrf: Option<String>,
    /// `engage`, `release`, `disable`, `enable` or `rate_limit`.
    change: String,
    scope: Option<String>,
    action_type: Option<String>,
    reason: Option<String>,
    /// Empty goes back to the default.
    per_hour: Option<String>,
}

/// `POST /settings`: one change to the guardrails, by an admin.
pub async fn change_settings(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<GuardrailForm>,
) -> Response {
    if let Err(page) = allowed(
        &session,
        &headers,
        form.csrf.as_deref(),
        Permission::Administer,
    ) {
        return page;
    }
    let actor = session.actor.email.clone();
    let bad = |message: String| ApiError::BadRequest {
        code: "bad_setting",
        message,
    };
    let scope = || {
        form.scope
            .as_deref()
            .and_then(crate::adapters::parse_scope)
            .ok_or_else(|| bad("Choose what the kill switch covers.".into()))
    };
    let action_type = || {
        form.action_type
            .clone()
            .filter(|t| adapter_of(t).is_some())
            .ok_or_else(|| bad("Choose a known action type.".into()))
    };
    let reason = form
        .reason
        .clone()
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_default();
    let command = match form.change.as_str() {
        "engage" => scope().map(|scope| GuardrailsCommand::Engage {
            scope,
            actor,
            reason,
        }),
        "release" => scope().map(|scope| GuardrailsCommand::Release { scope, actor }),
        "disable" => action_type().map(|action_type| GuardrailsCommand::DisableActionType {
            action_type,
            actor,
            reason: if reason.is_empty() {
                "disabled on the settings page".into()
            } else {
                reason
            },
        }),
        "enable" => action_type()
            .map(|action_type| GuardrailsCommand::EnableActionType { action_type, actor }),
        "rate_limit" => action_type().and_then(|action_type| {
            let raw = form.per_hour.as_deref().unwrap_or("").trim();
            let per_hour = if raw.is_empty() {
                None
            } else {
                Some(raw.parse::<u32>().map_err(|_| {
                    bad(format!(
                        "{raw:?} is not a whole number of executions an hour"
                    ))
                })?)
            };
            Ok(GuardrailsCommand::SetRateLimit {
                action_type,
                per_hour,
                actor,
            })
        }),
        other => Err(bad(format!("{other:?} is not a change ExecOps knows"))),
    };
    let result = match command {
        Ok(command) => state
            .store
            .guardrails(command, metadata(&headers, &session.actor))
            .await
            .map_err(guardrails_error),
        Err(error) => Err(error),
    };
    match result {
        Ok(()) => Redirect::to("/settings").into_response(),
        Err(error) => page_error(&session, error),
    }
}
