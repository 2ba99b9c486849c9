//! What every page shares: rendering a template, the message page, the error page, the CSRF
//! refusal and token, and page numbers. The pages, the canvas, the audit log, executions
//! and email links all use these, and none of them imports another for it.

use askama::Template;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};

use super::error::ApiError;
use super::session::Session;

/// What every page's frame shows (`base.html`): who is signed in, with the sign-out form,
/// the CSRF token every form and htmx request carries, and a notice at the top.
#[derive(Clone, Debug, Default)]
pub struct Chrome {
    pub signed_in: Option<String>,
    pub csrf: String,
    pub notice: Option<String>,
}

impl Chrome {
    /// The frame of a signed-in person's page.
    pub fn of(session: &Session) -> Self {
        Self {
            signed_in: Some(session.actor.email.clone()),
            csrf: session.csrf.clone(),
            notice: None,
        }
    }

    /// The frame of a page for nobody signed in (sign-in, email links).
    pub fn anonymous() -> Self {
        Self::default()
    }

    pub fn with_notice(mut self, notice: Option<String>) -> Self {
        self.notice = notice;
        self
    }
}

/// A page or a plain message, as HTML with its status.
pub(super) fn render(status: StatusCode, page: impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            tracing::error!(%error, "rendering a page failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

#[derive(Template)]
#[template(
    source = "{% extends \"base.html\" %}{% block content %}<h1>{{ heading }}</h1><p>{{ message }}</p><p><a href=\"/inbox\">Back to the inbox</a></p>{% endblock %}",
    ext = "html"
)]
struct MessagePage {
    /// The signed-in person, the CSRF token and a notice, as `base.html` shows them.
    chrome: Chrome,
    heading: String,
    message: String,
}

fn message(status: StatusCode, session: Option<&Session>, heading: &str, text: String) -> Response {
    render(
        status,
        MessagePage {
            chrome: session.map(Chrome::of).unwrap_or_default(),
            heading: heading.into(),
            message: text,
        },
    )
}

/// The last page number a list answers; past it (or below 0) is a mistake in the request.
pub const MAX_PAGE: i64 = 1_000_000;

/// The offset of page `page` of `size` rows, or why there is no such page.
pub(super) fn page_offset(page: Option<i64>, size: i64) -> Result<i64, ApiError> {
    let page = page.unwrap_or(0);
    if !(0..=MAX_PAGE).contains(&page) {
        return Err(ApiError::BadRequest {
            code: "bad_page",
            message: format!("page must be from 0 to {MAX_PAGE}; {page} is not"),
        });
    }
    Ok(page * size)
}

/// Errors of a page request, shown as a page rather than JSON.
pub(super) fn page_error(session: &Session, error: ApiError) -> Response {
    match error {
        ApiError::Forbidden(text) => {
            message(StatusCode::FORBIDDEN, Some(session), "Not allowed", text)
        }
        ApiError::NotFound(text) => {
            message(StatusCode::NOT_FOUND, Some(session), "Not found", text)
        }
        ApiError::Conflict {
            code: "already_decided",
            message: text,
        } => message(StatusCode::CONFLICT, Some(session), "Already decided", text),
        ApiError::Conflict { message: text, .. } => message(
            StatusCode::CONFLICT,
            Some(session),
            "Not possible now",
            text,
        ),
        ApiError::BadRequest { message: text, .. } => message(
            StatusCode::BAD_REQUEST,
            Some(session),
            "Something is missing",
            text,
        ),
        ApiError::Unavailable(_) => message(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(session),
            "Try again",
            "The database cannot be reached right now; nothing was changed.".into(),
        ),
        other => other.into_response(),
    }
}

/// Refuses a form that came without its CSRF token.
pub(super) fn csrf_refused(session: &Session) -> Response {
    message(
        StatusCode::FORBIDDEN,
        Some(session),
        "Not allowed",
        "The form was missing its security token. Reload the page and try again.".into(),
    )
}

/// The CSRF token htmx sends as a header.
pub(super) fn header_token(headers: &HeaderMap) -> Option<&str> {
    headers.get("x-csrf-token").and_then(|v| v.to_str().ok())
}
