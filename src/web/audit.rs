//! The audit log on a page (`/audit`, as CSV too) and in the API (`/api/v1/audit`): who did
//! what, when, newest first, filterable and paginated. The rows come from the audit
//! projection.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::credentials::Authenticated;
use super::error::{ApiError, ErrorBody};
use super::page::{page_error, page_offset, render, Chrome};
use super::session::Session;
use super::AppState;
use crate::auth::Permission;
use crate::projections::audit_log::{entries, AuditEntry, AuditFilter};

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub proposal: Option<String>,
    pub action: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub page: Option<i64>,
    pub format: Option<String>,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditHtml {
    /// The signed-in person, the CSRF token and a notice, as `base.html` shows them.
    chrome: Chrome,
    filter: AuditQuery,
    entries: Vec<AuditEntry>,
    page: i64,
    has_more: bool,
    prev_link: String,
    next_link: String,
    csv_link: String,
}

pub const AUDIT_PAGE: i64 = 50;

fn audit_link(filter: &AuditQuery, page: Option<i64>, csv: bool) -> String {
    let mut pairs: Vec<(&str, String)> = Vec::new();
    for (key, value) in [
        ("actor", &filter.actor),
        ("proposal", &filter.proposal),
        ("action", &filter.action),
        ("from", &filter.from),
        ("to", &filter.to),
    ] {
        if let Some(value) = value.as_ref().filter(|v| !v.is_empty()) {
            pairs.push((key, value.clone()));
        }
    }
    if let Some(page) = page {
        pairs.push(("page", page.to_string()));
    }
    if csv {
        pairs.push(("format", "csv".into()));
    }
    format!(
        "/audit?{}",
        serde_urlencoded::to_string(&pairs).unwrap_or_default()
    )
}

fn csv_field(value: &str) -> String {
    crate::canvas::csv_cell(value, false)
}

/// `GET /audit`: who did what, when, newest first; filterable, paginated, as CSV too.
pub async fn page(
    State(state): State<AppState>,
    session: Session,
    Query(filter): Query<AuditQuery>,
) -> Response {
    let offset = match page_offset(filter.page, AUDIT_PAGE) {
        Ok(offset) => offset,
        Err(error) => return page_error(&session, error),
    };
    let page = offset / AUDIT_PAGE;
    let csv = filter.format.as_deref() == Some("csv");
    let limit = if csv { 100_000 } else { AUDIT_PAGE + 1 };
    let rows = entries(
        state.store.pool(),
        &filter.filter(),
        limit,
        if csv { 0 } else { offset },
    )
    .await;
    let mut entries = match rows {
        Ok(rows) => rows,
        Err(error) => return page_error(&session, error.into()),
    };
    if csv {
        let mut out = String::from(
            "recorded_at,actor,action,record_type,record_id,role,from_status,to_status,seq,hash\n",
        );
        for e in &entries {
            let optional = |v: &Option<String>| csv_field(v.as_deref().unwrap_or_default());
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{}\n",
                csv_field(&e.recorded_at.to_rfc3339()),
                csv_field(&e.actor),
                csv_field(&e.event_type),
                csv_field(&e.aggregate_type),
                csv_field(&e.aggregate_id),
                optional(&e.role),
                optional(&e.from_status),
                optional(&e.to_status),
                e.seq,
                csv_field(&e.hash)
            ));
        }
        return (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"execops-audit.csv\"",
                ),
            ],
            out,
        )
            .into_response();
    }
    let has_more = entries.len() as i64 > AUDIT_PAGE;
    entries.truncate(AUDIT_PAGE as usize);
    render(
        StatusCode::OK,
        AuditHtml {
            chrome: Chrome::of(&session),
            prev_link: audit_link(&filter, Some(page - 1), false),
            next_link: audit_link(&filter, Some(page + 1), false),
            csv_link: audit_link(&filter, None, true),
            filter,
            entries,
            page,
            has_more,
        },
    )
}

impl AuditQuery {
    /// The filter the projection is asked with: empty fields and unreadable dates narrow
    /// nothing.
    fn filter(&self) -> AuditFilter {
        let text = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
        AuditFilter {
            actor: text(&self.actor),
            proposal: text(&self.proposal),
            action: text(&self.action),
            from: date(&self.from),
            to: date(&self.to),
        }
    }
}

fn date(raw: &Option<String>) -> Option<chrono::NaiveDate> {
    raw.as_deref()
        .filter(|d| !d.is_empty())
        .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    pub next_page: Option<i64>,
}

/// The audit log, newest first, 50 a page.
#[utoipa::path(get, path = "/api/v1/audit", params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 401, body = ErrorBody)))]
pub async fn api(
    State(state): State<AppState>,
    Authenticated(actor): Authenticated,
    Query(query): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    actor.may(Permission::Read)?;
    let size = AUDIT_PAGE;
    let offset = page_offset(query.page, size)?;
    let page = offset / size;
    let mut items = entries(state.store.pool(), &query.filter(), size + 1, offset).await?;
    let more = items.len() as i64 > size;
    items.truncate(size as usize);
    Ok(Json(AuditPage {
        items,
        next_page: more.then_some(page + 1),
    }))
}
