//! Server-rendered pages (askama). Every page works without JavaScript: plain forms, and a
//! redirect after each change. State-changing forms carry the session's CSRF token.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;
use super::page::{csrf_refused, header_token, page_error, page_offset, render, Chrome};
use super::session::{self, Session};
use super::signin::{self, Refusal};
use super::AppState;
use crate::auth::{verify_password, Permission};
use crate::decisions::{decide, settle, DecisionError, DecisionRequest};
use crate::domain::Status;
use crate::projections::proposals::{
    by_id, history, in_flight, inbox as inbox_rows, queue as queue_rows, InboxFilter, QueueFilter,
};
use crate::projections::users::credentials;
use crate::store::Metadata;

/// A hash of nothing in particular, checked when the address is unknown.
const DECOY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$ZmFrZWhhc2hmYWtlaGFzaGZha2VoYXNo";

const VERTICALS: [&str; 5] = ["money", "engineering", "customer", "growth", "ops"];
const URGENCIES: [&str; 4] = ["critical", "high", "medium", "low"];

/// A proposal card: the API's item, shown.
pub use super::card::ProposalItem as Card;

impl Card {
    pub fn driver_list(&self) -> &[String] {
        &self.drivers
    }

    pub fn inbound_list(&self) -> &[String] {
        &self.inbound_ids
    }

    /// Each source signal with the address of its page.
    pub fn signal_links(&self) -> Vec<(String, String)> {
        self.inbound_ids
            .iter()
            .map(|id| (id.clone(), format!("/signals/{}", path_segment(id))))
            .collect()
    }

    /// "1 of 2 approvals: ada@example.com", when it takes more than one or has any.
    pub fn quorum_text(&self) -> Option<String> {
        if self.approvals_needed <= 1 && self.approved_by.is_empty() {
            return None;
        }
        let mut text = format!(
            "{} of {} approvals",
            self.approved_by.len(),
            self.approvals_needed.max(1)
        );
        if !self.approved_by.is_empty() {
            text.push_str(": ");
            text.push_str(&self.approved_by.join(", "));
        }
        Some(text)
    }

    /// What the action does, shown on the card without a click.
    pub fn glance(&self) -> crate::adapters::glance::Glance {
        crate::adapters::glance::glance(&self.action_type, &self.action)
    }

    pub fn action_pretty(&self) -> String {
        serde_json::to_string_pretty(&self.action).unwrap_or_default()
    }
}

/// Percent-encodes all but unreserved characters and `:`, for a path segment.
fn path_segment(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "signal.html")]
struct SignalPage {
    /// The signed-in person, the CSRF token and a notice, as `base.html` shows them.
    chrome: Chrome,
    id: String,
    source: String,
    kind: String,
    occurred_at: String,
    received_at: DateTime<Utc>,
    payload: String,
}

/// A delivery as a page shows it: Slack's `response_url` (anyone holding it may post as the
/// app into the conversation for 30 minutes) is left out, wherever it sits.
fn without_answer_urls(payload: &Value) -> Value {
    match payload {
        Value::Object(object) => Value::Object(
            object
                .iter()
                .filter(|(key, _)| !matches!(key.as_str(), "response_url" | "response_urls"))
                .map(|(key, value)| (key.clone(), without_answer_urls(value)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_answer_urls).collect()),
        other => other.clone(),
    }
}

/// `GET /signals/{id}`: a delivery as it was received.
pub async fn signal(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    let row = state.store.delivery(&id).await;
    match row {
        Ok(Some((received_at, received))) => {
            let text = |key: &str| {
                received
                    .get(key)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            render(
                StatusCode::OK,
                SignalPage {
                    chrome: Chrome::of(&session),
                    source: text("source"),
                    kind: text("kind"),
                    occurred_at: text("occurred_at"),
                    received_at,
                    payload: received
                        .get("payload")
                        .map(without_answer_urls)
                        .and_then(|p| serde_json::to_string_pretty(&p).ok())
                        .unwrap_or_default(),
                    id,
                },
            )
        }
        Ok(None) => page_error(&session, ApiError::NotFound(format!("no signal {id}"))),
        Err(error) => page_error(&session, error.into()),
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    /// The signed-in person, the CSRF token and a notice, as `base.html` shows them.
    chrome: Chrome,
    error: Option<String>,
    /// The label of the OpenID Connect provider people may sign in with, if one is set up.
    provider: Option<String>,
}

fn provider_label(state: &AppState) -> Option<String> {
    state.oidc.as_ref().map(|o| o.label().to_string())
}

pub async fn login_form(
    State(state): State<AppState>,
    request: axum::extract::Request,
) -> Response {
    let (parts, _) = request.into_parts();
    if let Ok(Some(_)) = session::current(&state, &parts).await {
        return Redirect::to("/inbox").into_response();
    }
    render(
        StatusCode::OK,
        LoginPage {
            chrome: Chrome::anonymous(),
            error: None,
            provider: provider_label(&state),
        },
    )
}

#[derive(Deserialize)]
pub struct LoginForm {
    email: String,
    password: String,
}

/// The sign-in page again, saying what went wrong.
pub(crate) fn login_error(state: &AppState, status: StatusCode, error: &str) -> Response {
    render(
        status,
        LoginPage {
            chrome: Chrome::anonymous(),
            error: Some(error.into()),
            provider: provider_label(state),
        },
    )
}

fn refused(state: &AppState, refusal: Refusal) -> Response {
    let (status, retry_after, text) = match refusal {
        Refusal::Throttled { retry_after } => (
            StatusCode::TOO_MANY_REQUESTS,
            retry_after,
            "Too many failed attempts for this address from here",
        ),
        Refusal::Busy { retry_after } => (
            StatusCode::TOO_MANY_REQUESTS,
            retry_after,
            "Too many sign-ins right now",
        ),
        Refusal::Crowded { retry_after } => (
            StatusCode::TOO_MANY_REQUESTS,
            retry_after,
            "A sign-in from here is being checked already",
        ),
        Refusal::Overloaded { retry_after } => (
            StatusCode::SERVICE_UNAVAILABLE,
            retry_after,
            "Sign-in is busy",
        ),
    };
    let seconds = retry_after.as_secs().max(1);
    let mut response = login_error(state, status, &format!("{text}; try again in {seconds} s."));
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
    response
}

/// Whether a sign-in form was posted from another site (login CSRF: signing someone into an
/// account of the attacker's). Browsers say where a request comes from in `Sec-Fetch-Site`
/// and `Origin`; a request with neither (a script, an old browser) is let through.
fn from_another_site(headers: &HeaderMap, state: &AppState) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        if !matches!(site, "same-origin" | "none") {
            return true;
        }
    }
    let Some(origin) = text("origin") else {
        return false;
    };
    // Ours: the public URL's origin, or the host the browser addressed (a browser sets
    // `Host` itself, so another site cannot choose it).
    let public = state
        .config
        .public_url
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
        .map(|u| u.origin().ascii_serialization());
    let host_of_origin = url::Url::parse(origin).ok().and_then(|u| {
        let host = u.host_str()?.to_string();
        Some(match u.port() {
            Some(port) => format!("{host}:{port}"),
            None => host,
        })
    });
    let same_host = host_of_origin
        .zip(text("host"))
        .is_some_and(|(origin, host)| origin.eq_ignore_ascii_case(host));
    let same_public = public.is_some_and(|p| p.eq_ignore_ascii_case(origin));
    !(same_host || same_public)
}

pub async fn login(
    State(state): State<AppState>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let pool = state.store.pool();
    let email = form.email.trim().to_lowercase();
    let client = signin::client_address(
        peer.map(|p| (p.0).0),
        &headers,
        &state.config.trusted_proxies,
    )
    .map(|ip| ip.to_string())
    .unwrap_or_default();
    let now = state.clock.now();
    if from_another_site(&headers, &state) {
        return login_error(
            &state,
            StatusCode::FORBIDDEN,
            "This sign-in was sent from another site. Open ExecOps itself and sign in there.",
        );
    }
    let result = async {
        if let Err(refusal) = state.signin.throttled(pool, &email, &client, now).await? {
            return Ok(refused(&state, refusal));
        }
        // Only an attempt that would reach a password check counts against the instance's
        // ceiling: a flood that is already throttled cannot spend everyone's budget.
        if let Err(refusal) = state.signin.admit() {
            return Ok(refused(&state, refusal));
        }
        let turn = match state.signin.turn(&client).await {
            Ok(turn) => turn,
            Err(refusal) => return Ok(refused(&state, refusal)),
        };
        // Failures recorded while this one waited its turn count too, so a burst from one
        // address stops at its limit instead of queueing for the password checks.
        if let Err(refusal) = state.signin.throttled(pool, &email, &client, now).await? {
            return Ok(refused(&state, refusal));
        }
        let found = credentials(pool, &email).await?;
        // Spend the same time whether or not the person exists; hashing is slow on purpose,
        // so it runs off the async workers.
        let (stored, exists) = match &found {
            Some((_, hash)) => (hash.clone(), true),
            None => (DECOY_HASH.to_string(), false),
        };
        let password = form.password.clone();
        let matches = tokio::task::spawn_blocking(move || {
            let matches = verify_password(&password, &stored);
            drop(turn);
            matches
        })
        .await
        .unwrap_or(false);
        let valid = exists && matches;
        if !valid {
            signin::record_failure(pool, &email, &client, now).await?;
            return Ok(login_error(
                &state,
                StatusCode::UNAUTHORIZED,
                "Wrong email or password.",
            ));
        }
        let cookie = session::start(pool, &email, &state.config.session, state.clock.now()).await?;
        Ok::<_, sqlx::Error>(
            ([(header::SET_COOKIE, cookie)], Redirect::to("/inbox")).into_response(),
        )
    }
    .await;
    result.unwrap_or_else(|error| ApiError::from(error).into_response())
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

pub async fn logout(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !session.check_csrf(form.csrf.as_deref().or_else(|| header_token(&headers))) {
        return csrf_refused(&session);
    }
    match session::end(state.store.pool(), &session, &state.config.session).await {
        Ok(cookie) => ([(header::SET_COOKIE, cookie)], Redirect::to("/login")).into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}

#[derive(Template)]
#[template(path = "inbox.html")]
struct InboxPage {
    older: Option<String>,
    /// The signed-in person, the CSRF token and a notice, as `base.html` shows them.
    chrome: Chrome,
    proposals: Vec<Card>,
    may_decide: bool,
    verticals: [&'static str; 5],
    urgencies: [&'static str; 4],
    vertical: Option<String>,
    urgency: Option<String>,
    /// Approved and not finished: waiting, running, retrying, or uncertain.
    running: Vec<Card>,
}

#[derive(Deserialize)]
pub struct InboxQuery {
    vertical: Option<String>,
    urgency: Option<String>,
    notice: Option<String>,
    page: Option<i64>,
}

const INBOX_PAGE: i64 = 50;

fn notice_text(code: Option<&str>) -> Option<String> {
    let code = code?;
    if let Some(counts) = code.strip_prefix("bulk-") {
        let (done, refused) = counts.split_once('-')?;
        let (done, refused): (u32, u32) = (done.parse().ok()?, refused.parse().ok()?);
        return Some(match refused {
            0 => format!("Approved {done}."),
            _ => {
                format!("Approved {done}; {refused} could not be (decided meanwhile, or changed).")
            }
        });
    }
    match code {
        "approved" => Some("Approved. It will run once the guardrails allow.".into()),
        "approval-recorded" => {
            Some("Approval recorded; it waits for the other approvals it needs.".into())
        }
        "rejection-recorded" => {
            Some("Rejection recorded; it takes more rejections to end it.".into())
        }
        "rejected" => Some("Rejected.".into()),
        "previewed" => Some("Preview recorded in the timeline; nothing was sent.".into()),
        "undo-requested" => Some(
            "Undo asked for: it runs once as many people have asked as the approval took, \
             behind the same guardrails as any action."
                .into(),
        ),
        "marked-done" => Some("Marked as done.".into()),
        "retrying" => Some("Another attempt will run once the guardrails allow.".into()),
        _ => None,
    }
}

fn known(value: Option<String>, allowed: &[&str]) -> Option<String> {
    value.filter(|v| allowed.contains(&v.as_str()))
}

#[derive(Template)]
#[template(path = "_list.html")]
struct ListFragment {
    chrome: Chrome,
    proposals: Vec<Card>,
    may_decide: bool,
}

pub async fn inbox(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Query(query): Query<InboxQuery>,
) -> Response {
    let vertical = known(query.vertical, &VERTICALS);
    let urgency = known(query.urgency, &URGENCIES);
    let offset = match page_offset(query.page, INBOX_PAGE) {
        Ok(offset) => offset,
        Err(error) => return page_error(&session, error),
    };
    let page = offset / INBOX_PAGE;
    let filter = InboxFilter {
        vertical: vertical.clone(),
        urgency: urgency.clone(),
        limit: INBOX_PAGE + 1,
        offset,
    };
    let fragment = headers.contains_key("hx-request");
    let rows = async {
        let mut rows = inbox_rows(state.store.pool(), &filter).await?;
        settle(&state.store, &state.clock, &mut rows, "page").await?;
        rows.retain(|row| row.status == "pending");
        Ok::<_, ApiError>(rows)
    }
    .await;
    match rows {
        Ok(rows) if fragment => render(
            StatusCode::OK,
            ListFragment {
                chrome: Chrome::of(&session),
                proposals: rows
                    .into_iter()
                    .take(INBOX_PAGE as usize)
                    .map(Card::from)
                    .collect(),
                may_decide: session.actor.may(Permission::Decide).is_ok(),
            },
        ),
        Ok(mut rows) => render(
            StatusCode::OK,
            InboxPage {
                running: match in_flight(state.store.pool(), 50).await {
                    Ok(rows) => rows.into_iter().map(Card::from).collect(),
                    Err(error) => return page_error(&session, error.into()),
                },
                older: (rows.len() as i64 > INBOX_PAGE).then(|| {
                    rows.truncate(INBOX_PAGE as usize);
                    let mut pairs = vec![("page", (page + 1).to_string())];
                    pairs.extend(vertical.clone().map(|v| ("vertical", v)));
                    pairs.extend(urgency.clone().map(|u| ("urgency", u)));
                    format!(
                        "/inbox?{}",
                        serde_urlencoded::to_string(&pairs).unwrap_or_default()
                    )
                }),
                chrome: Chrome::of(&session).with_notice(notice_text(query.notice.as_deref())),
                proposals: rows.into_iter().map(Card::from).collect(),
                may_decide: session.actor.may(Permission::Decide).is_ok(),
                verticals: VERTICALS,
                urgencies: URGENCIES,
                vertical,
                urgency,
            },
        ),
        Err(error) => page_error(&session, error),
    }
}

#[derive(Template)]
#[template(path = "queue.html")]
struct QueuePage {
    /// The signed-in person, the CSRF token and a notice, as `base.html` shows them.
    chrome: Chrome,
    proposals: Vec<Card>,
    total: i64,
    may_decide: bool,
    statuses: [&'static str; 6],
    verticals: [&'static str; 5],
    status: String,
    owner: String,
    vertical: Option<String>,
}

const STATUSES: [&str; 6] = [
    "pending",
    "approved",
    "rejected",
    "superseded",
    "expired",
    "suppressed",
];

#[derive(Deserialize)]
pub struct QueueQuery {
    status: Option<String>,
    owner: Option<String>,
    vertical: Option<String>,
}

pub async fn queue(
    State(state): State<AppState>,
    session: Session,
    Query(query): Query<QueueQuery>,
) -> Response {
    let filter = QueueFilter {
        status: known(query.status, &STATUSES),
        owner: query.owner.filter(|o| !o.trim().is_empty()),
        vertical: known(query.vertical, &VERTICALS),
    };
    let status = filter.status.clone().unwrap_or_else(|| "pending".into());
    let rows = async {
        let (mut rows, total) = queue_rows(state.store.pool(), &filter, 50).await?;
        settle(&state.store, &state.clock, &mut rows, "page").await?;
        rows.retain(|row| row.status == status);
        Ok::<_, ApiError>((rows, total))
    }
    .await;
    match rows {
        Ok((rows, total)) => render(
            StatusCode::OK,
            QueuePage {
                chrome: Chrome::of(&session),
                proposals: rows.into_iter().map(Card::from).collect(),
                total,
                may_decide: session.actor.may(Permission::Decide).is_ok(),
                statuses: STATUSES,
                verticals: VERTICALS,
                status: filter.status.clone().unwrap_or_else(|| "pending".into()),
                owner: filter.owner.clone().unwrap_or_default(),
                vertical: filter.vertical.clone(),
            },
        ),
        Err(error) => page_error(&session, error),
    }
}

pub struct TimelineEntry {
    pub recorded_at: DateTime<Utc>,
    pub event_type: String,
    pub actor: Option<String>,
    pub data: String,
}

#[derive(Template)]
#[template(path = "proposal.html")]
struct ProposalPage {
    /// The signed-in person, the CSRF token and a notice, as `base.html` shows them.
    chrome: Chrome,
    p: Card,
    history: Vec<TimelineEntry>,
    may_decide: bool,
    /// Why an executed proposal cannot be undone, when it cannot.
    undo_limit: Option<&'static str>,
    /// Until when "Undo" is offered.
    undo_until: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
pub struct NoticeQuery {
    notice: Option<String>,
}

pub async fn proposal(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Query(query): Query<NoticeQuery>,
) -> Response {
    let pool = state.store.pool();
    let found = async {
        let mut row = by_id(pool, &id).await?;
        if let Some(row) = row.as_mut() {
            settle(
                &state.store,
                &state.clock,
                std::slice::from_mut(row),
                "page",
            )
            .await?;
        }
        Ok::<_, ApiError>((row, history(pool, &id).await?))
    }
    .await;
    match found {
        Ok((Some(row), steps)) => render(
            StatusCode::OK,
            ProposalPage {
                chrome: Chrome::of(&session).with_notice(notice_text(query.notice.as_deref())),
                undo_limit: state.adapters.rollback_limit(&row.action_type),
                undo_until: row.executed_at.and_then(|t| {
                    let until = t + chrono::Duration::from_std(state.config.execution.undo_window)
                        .unwrap_or_default();
                    (until > state.clock.now()).then_some(until)
                }),
                p: row.into(),
                may_decide: session.actor.may(Permission::Decide).is_ok(),
                history: steps
                    .into_iter()
                    .map(|step| TimelineEntry {
                        actor: step
                            .data
                            .get("actor")
                            .and_then(Value::as_str)
                            .map(str::to_string),
                        data: serde_json::to_string_pretty(&step.data).unwrap_or_default(),
                        recorded_at: step.recorded_at,
                        event_type: step.event_type,
                    })
                    .collect(),
            },
        ),
        Ok((None, _)) => page_error(&session, ApiError::NotFound(format!("no proposal {id}"))),
        Err(error) => page_error(&session, error),
    }
}

#[derive(Deserialize)]
pub struct DecisionForm {
    csrf: Option<String>,
    payload_hash: Option<String>,
    comment: Option<String>,
    reason: Option<String>,
}

async fn decide_from_page(
    state: AppState,
    session: Session,
    headers: HeaderMap,
    id: String,
    form: DecisionForm,
    approve: bool,
) -> Response {
    if !session.check_csrf(form.csrf.as_deref().or_else(|| header_token(&headers))) {
        return csrf_refused(&session);
    }
    let reason = form.reason.filter(|r| !r.trim().is_empty());
    if !approve && reason.is_none() {
        return page_error(
            &session,
            ApiError::BadRequest {
                code: "missing_reason",
                message: "A rejection needs a reason.".into(),
            },
        );
    }
    let metadata = Metadata::via("page")
        .request(super::request_id(&headers))
        .into();
    let request = DecisionRequest {
        approve,
        comment: form.comment.filter(|c| !c.trim().is_empty()),
        reason,
        shown_hash: form.payload_hash,
        metadata,
    };
    let htmx = headers.contains_key("hx-request");
    match decide(&state.store, &state.clock, &session.actor, &id, request).await {
        // htmx swaps the card for this line; without it, back to the inbox.
        Ok(outcome) if htmx => Html(format!(
            "<p class=\"notice\" role=\"status\" id=\"p-{}\">{}</p>",
            askama::filters::escape(&id, askama::filters::Html)
                .map(|e| e.to_string())
                .unwrap_or_default(),
            match outcome.status {
                Status::Pending => {
                    let mut text = outcome.summary();
                    if let Some(first) = text.get_mut(0..1) {
                        first.make_ascii_uppercase();
                    }
                    askama::filters::escape(&format!("{text}."), askama::filters::Html)
                        .map(|e| e.to_string())
                        .unwrap_or_default()
                }
                _ if approve => "Approved.".to_string(),
                _ => "Rejected.".to_string(),
            }
        ))
        .into_response(),
        Ok(outcome) => Redirect::to(match outcome.status {
            Status::Pending if approve => "/inbox?notice=approval-recorded",
            Status::Pending => "/inbox?notice=rejection-recorded",
            _ if approve => "/inbox?notice=approved",
            _ => "/inbox?notice=rejected",
        })
        .into_response(),
        Err(error) => page_error(&session, error.into()),
    }
}

pub async fn approve(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<DecisionForm>,
) -> Response {
    decide_from_page(state, session, headers, id, form, true).await
}

pub async fn reject(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<DecisionForm>,
) -> Response {
    decide_from_page(state, session, headers, id, form, false).await
}

/// `POST /proposals/approve-selected`: approves every checked card, each through the same
/// decision path as one by one.
pub async fn approve_selected(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let csrf = fields
        .iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.as_str());
    if !session.check_csrf(csrf.or_else(|| header_token(&headers))) {
        return csrf_refused(&session);
    }
    if let Err(error) = session.actor.may(Permission::Decide) {
        return page_error(&session, error.into());
    }
    let selected: Vec<(String, String)> = fields
        .iter()
        .filter(|(k, _)| k == "selected")
        .filter_map(|(_, v)| v.split_once(':'))
        .map(|(id, hash)| (id.to_string(), hash.to_string()))
        .collect();
    if selected.is_empty() {
        return page_error(
            &session,
            ApiError::BadRequest {
                code: "nothing_selected",
                message: "Select at least one proposal.".into(),
            },
        );
    }
    let (mut done, mut refused) = (0, 0);
    for (id, hash) in selected {
        let request = DecisionRequest {
            approve: true,
            comment: Some("approved with others".into()),
            reason: None,
            shown_hash: Some(hash),
            metadata: Metadata::via("page, bulk").into(),
        };
        match decide(&state.store, &state.clock, &session.actor, &id, request).await {
            Ok(_) => done += 1,
            Err(DecisionError::Unavailable(cause)) => {
                return page_error(&session, ApiError::Unavailable(cause))
            }
            Err(DecisionError::Internal(cause)) => {
                return page_error(&session, ApiError::Internal(cause))
            }
            Err(_) => refused += 1,
        }
    }
    Redirect::to(&format!("/inbox?notice=bulk-{done}-{refused}")).into_response()
}

pub async fn home() -> Redirect {
    Redirect::to("/inbox")
}

pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../static/app.css"),
    )
        .into_response()
}

pub async fn htmx() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        include_str!(concat!(env!("OUT_DIR"), "/htmx.min.js")),
    )
        .into_response()
}

pub async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../static/app.js"),
    )
        .into_response()
}

/// `GET /inbox/stream`: a `proposals` event whenever the proposals projection has applied
/// more of the log, for the inbox to refresh. It ends when the server shuts down, so that
/// HTTP can drain.
pub async fn inbox_stream(State(state): State<AppState>, session: Session) -> Response {
    state.live.inbox(session.key(), state.shutdown.clone())
}
