//! `/links/{token}`: the approval links of emails. `GET` (and so `HEAD`) only shows the
//! proposal and what the link would do, with a button that POSTs; a mail scanner or a
//! prefetch that follows the link decides nothing. `POST` checks the link again, spends it
//! (once: its nonce is a primary key), takes the approver's current role, and decides
//! through [`decide`], the path every channel uses, with the payload hash the email showed.
//!
//! The POST carries no CSRF token: the link itself, unguessable and good for one decision
//! by one person, is the credential, and no session is involved. Cross-site form posts are
//! refused all the same.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Form;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::page::{render, Chrome};
use super::pages::Card;
use super::AppState;
use crate::decisions::{decide, DecisionError, DecisionRequest};
use crate::notify::links::{LinkClaims, LinkDecision, LinkError, LinkKey};
use crate::projections::proposals::by_id;
use crate::projections::users::credentials;
use crate::store::Metadata;

#[derive(Template)]
#[template(path = "link.html")]
struct ConfirmPage {
    /// The signed-in person, the CSRF token and a notice, as `base.html` shows them.
    chrome: Chrome,
    p: Card,
    may_decide: bool,
    token: String,
    approve: bool,
    verb: &'static str,
    verb_title: &'static str,
    approver: String,
    expires: DateTime<Utc>,
}

#[derive(Template)]
#[template(path = "link_message.html")]
struct MessagePage {
    /// The signed-in person, the CSRF token and a notice, as `base.html` shows them.
    chrome: Chrome,
    heading: String,
    message: String,
    proposal_href: Option<String>,
    sign_in: bool,
}

/// A page about the link: its status, a heading, a sentence, and where to go from here.
struct Message {
    status: StatusCode,
    heading: &'static str,
    text: String,
    proposal: Option<String>,
    sign_in: bool,
}

impl Message {
    fn new(status: StatusCode, heading: &'static str, text: impl Into<String>) -> Self {
        Self {
            status,
            heading,
            text: text.into(),
            proposal: None,
            sign_in: false,
        }
    }

    fn about(mut self, proposal: &str) -> Self {
        self.proposal = Some(format!("/proposals/{proposal}"));
        self
    }

    fn sign_in(mut self) -> Self {
        self.sign_in = true;
        self
    }

    fn into_response(self) -> Response {
        private(render(
            self.status,
            MessagePage {
                chrome: Chrome::anonymous(),
                heading: self.heading.into(),
                message: self.text,
                proposal_href: self.proposal,
                sign_in: self.sign_in,
            },
        ))
    }
}

/// Link pages hold a credential in their address: never cached, never indexed.
fn private(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "x-robots-tag",
        HeaderValue::from_static("noindex, nofollow"),
    );
    response
}

fn invalid() -> Message {
    Message::new(
        StatusCode::BAD_REQUEST,
        "This link is not valid",
        "It may have been copied incompletely or changed. Nothing was changed. Use the link \
         from the email as it is, or sign in to decide.",
    )
    .sign_in()
}

fn unavailable() -> Message {
    Message::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "Try again",
        "The database cannot be reached right now; nothing was changed and the link still \
         works.",
    )
}

fn status_sentence(status: &str) -> String {
    match status {
        "pending" => "It is still waiting for a decision.".into(),
        "approved" | "executing" | "succeeded" | "failed" | "uncertain" | "rolling_back"
        | "rolled_back" | "rollback_uncertain" => {
            format!("It was approved (now {}).", status.replace('_', " "))
        }
        other => format!("It is now {other}."),
    }
}

/// The link's claims, or the page that says why it cannot be used.
async fn checked(state: &AppState, token: &str) -> Result<LinkClaims, Message> {
    let key = LinkKey::load(state.store.pool(), &state.config.links)
        .await
        .map_err(|error| {
            tracing::warn!(%error, "the link key could not be loaded");
            unavailable()
        })?;
    match key.verify(token, state.clock.now()) {
        Ok(claims) => Ok(claims),
        Err(LinkError::Invalid) => Err(invalid()),
        Err(LinkError::Expired(claims)) => Err(Message::new(
            StatusCode::GONE,
            "This link has expired",
            format!(
                "It worked until {} UTC. Nothing was changed. Sign in to ExecOps to decide.",
                claims.expires_at().format("%Y-%m-%d %H:%M")
            ),
        )
        .about(&claims.proposal)
        .sign_in()),
    }
}

/// The page for a link already spent: what the link did, and where the proposal is now.
async fn already_used(state: &AppState, claims: &LinkClaims) -> Message {
    let used = crate::notify::links::use_of(state.store.pool(), &claims.nonce)
        .await
        .unwrap_or_default();
    let status = by_id(state.store.pool(), &claims.proposal)
        .await
        .ok()
        .flatten()
        .map(|p| status_sentence(&p.status))
        .unwrap_or_default();
    let what = match used {
        Some((outcome, at)) => format!(
            "It was used at {} UTC ({outcome}).",
            at.format("%Y-%m-%d %H:%M")
        ),
        None => "It was used.".into(),
    };
    Message::new(
        StatusCode::CONFLICT,
        "This link was already used",
        format!("Each link works once. {what} {status}"),
    )
    .about(&claims.proposal)
}

async fn is_used(state: &AppState, nonce: &str) -> Result<bool, sqlx::Error> {
    crate::notify::links::is_used(state.store.pool(), nonce).await
}

/// `GET /links/{token}`: shows what the link would do. It changes nothing, ever.
#[tracing::instrument(skip_all)]
pub async fn show(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let claims = match checked(&state, &token).await {
        Ok(claims) => claims,
        Err(page) => return page.into_response(),
    };
    match is_used(&state, &claims.nonce).await {
        Ok(false) => {}
        Ok(true) => return already_used(&state, &claims).await.into_response(),
        Err(_) => return unavailable().into_response(),
    }
    let proposal = match by_id(state.store.pool(), &claims.proposal).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            return Message::new(
                StatusCode::NOT_FOUND,
                "No such proposal",
                "The proposal this link is for is not known here.",
            )
            .into_response()
        }
        Err(_) => return unavailable().into_response(),
    };
    if proposal.status != "pending" {
        return Message::new(
            StatusCode::CONFLICT,
            "Already decided",
            format!(
                "Nothing is left to decide. {}",
                status_sentence(&proposal.status)
            ),
        )
        .about(&claims.proposal)
        .into_response();
    }
    if proposal.payload_hash != claims.payload_hash {
        return changed(&claims.proposal).into_response();
    }
    let approve = claims.decision == LinkDecision::Approve;
    private(render(
        StatusCode::OK,
        ConfirmPage {
            chrome: Chrome::anonymous(),
            p: proposal.into(),
            may_decide: false,
            token,
            approve,
            verb: claims.decision.verb(),
            verb_title: if approve { "Approve" } else { "Reject" },
            approver: claims.approver.clone(),
            expires: claims.expires_at(),
        },
    ))
}

fn changed(proposal: &str) -> Message {
    Message::new(
        StatusCode::CONFLICT,
        "The proposal changed",
        "What it would do is no longer what the email showed, so this link cannot decide \
         it. Nothing was changed. Open it in ExecOps to see the new version.",
    )
    .about(proposal)
}

#[derive(Debug, Default, Deserialize)]
pub struct LinkForm {
    comment: Option<String>,
    reason: Option<String>,
}

/// A form posted from another site: refused, though the link would be the credential.
fn cross_site(state: &AppState, headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if text("sec-fetch-site") == Some("cross-site") {
        return true;
    }
    let Some(origin) = text("origin") else {
        return false;
    };
    let host = text("host").unwrap_or_default();
    let own = state.config.public_base();
    !(origin == own || origin == format!("http://{host}") || origin == format!("https://{host}"))
}

fn non_empty(text: Option<String>) -> Option<String> {
    text.map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
}

/// `POST /links/{token}`: decides, once.
#[tracing::instrument(skip_all)]
pub async fn confirm(
    State(state): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    Form(form): Form<LinkForm>,
) -> Response {
    if cross_site(&state, &headers) {
        return Message::new(
            StatusCode::FORBIDDEN,
            "Not allowed",
            "This form was sent from another site. Nothing was changed.",
        )
        .into_response();
    }
    let claims = match checked(&state, &token).await {
        Ok(claims) => claims,
        Err(page) => return page.into_response(),
    };
    let approve = claims.decision == LinkDecision::Approve;
    let reason = non_empty(form.reason);
    if !approve && reason.is_none() {
        // Checked before the link is spent: the person can go back and give one.
        return Message::new(
            StatusCode::BAD_REQUEST,
            "A reason is needed",
            "A rejection needs a reason. Go back, give one, and confirm again; the link still \
             works.",
        )
        .into_response();
    }
    match spend_and_decide(
        &state,
        &claims,
        approve,
        non_empty(form.comment),
        reason,
        &headers,
    )
    .await
    {
        Ok(page) => page,
        Err(page) => page.into_response(),
    }
}

/// Spends the link and decides, in one transaction: a second POST of the same link waits on
/// the first's row and then finds it used; if the decision cannot be attempted (the store is
/// unreachable), the transaction rolls back and the link still works.
async fn spend_and_decide(
    state: &AppState,
    claims: &LinkClaims,
    approve: bool,
    comment: Option<String>,
    reason: Option<String>,
    headers: &HeaderMap,
) -> Result<Response, Message> {
    let pool = state.store.pool();
    let mut tx = pool.begin().await.map_err(|_| unavailable())?;
    let spent = crate::notify::links::spend(&mut tx, claims)
        .await
        .map_err(|_| unavailable())?;
    if !spent {
        drop(tx);
        return Err(already_used(state, claims).await);
    }
    // The person as they are now, not as they were when the email went out.
    let actor = match credentials(pool, &claims.approver).await {
        Ok(Some((actor, _))) => actor,
        Ok(None) => {
            let page = Message::new(
                StatusCode::FORBIDDEN,
                "Not allowed",
                format!(
                    "{} is no longer an ExecOps user. Nothing was changed.",
                    claims.approver
                ),
            );
            crate::notify::links::record_outcome(&mut tx, &claims.nonce, "refused: no such user")
                .await
                .map_err(|_| unavailable())?;
            tx.commit().await.map_err(|_| unavailable())?;
            return Err(page);
        }
        Err(_) => return Err(unavailable()),
    };
    let metadata = Metadata::via("email")
        .request(super::request_id(headers))
        .with("link_nonce", claims.nonce.clone())
        .into();
    let request = DecisionRequest {
        approve,
        comment,
        reason,
        shown_hash: Some(claims.payload_hash.clone()),
        metadata,
    };
    let id = claims.proposal.as_str();
    let (page, spent_as) = match decide(&state.store, &state.clock, &actor, id, request).await {
        Ok(outcome) if outcome.status == crate::domain::Status::Pending => {
            let heading = if approve {
                "Your approval is recorded"
            } else {
                "Your rejection is recorded"
            };
            let text = format!(
                "The proposal waits for more people: {}. This link no longer works.",
                outcome.summary()
            );
            let done = if approve { "approved" } else { "rejected" };
            (
                Message::new(StatusCode::OK, heading, &text).about(id),
                done.to_string(),
            )
        }
        Ok(_) => {
            let (heading, text) = if approve {
                (
                    "You approved it",
                    "It will run once the guardrails allow. This link no longer works.",
                )
            } else {
                (
                    "You rejected it",
                    "Nothing will run. This link no longer works.",
                )
            };
            let done = if approve { "approved" } else { "rejected" };
            (
                Message::new(StatusCode::OK, heading, text).about(id),
                done.to_string(),
            )
        }
        // Nothing was attempted: keep the link usable.
        Err(DecisionError::Unavailable(_)) => return Err(unavailable()),
        Err(DecisionError::Internal(cause)) => {
            tracing::error!(%cause, "a decision by email link failed");
            return Err(Message::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "It has been logged. Nothing was changed and the link still works.",
            ));
        }
        Err(DecisionError::PayloadChanged(_)) => {
            (changed(id), "refused: the proposal changed".to_string())
        }
        Err(DecisionError::Forbidden(message)) => (
            Message::new(
                StatusCode::FORBIDDEN,
                "Not allowed",
                format!("Nothing was changed: {message}."),
            )
            .about(id),
            format!("refused: {message}"),
        ),
        Err(error @ DecisionError::NotFound(_)) => (
            Message::new(StatusCode::NOT_FOUND, "No such proposal", error.to_string()),
            format!("refused: {error}"),
        ),
        Err(error) => (
            Message::new(
                StatusCode::CONFLICT,
                "Already decided",
                format!("Nothing was changed: {error}."),
            )
            .about(id),
            format!("refused: {error}"),
        ),
    };
    crate::notify::links::record_outcome(&mut tx, &claims.nonce, &spent_as)
        .await
        .map_err(|_| unavailable())?;
    tx.commit().await.map_err(|_| unavailable())?;
    Ok(page.into_response())
}
