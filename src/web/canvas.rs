//! `/canvas` and `GET /api/v1/canvas/{query}`: read-only answers to the canvas's fixed
//! questions. A question in words is read by [`crate::canvas::question`]; the page shows what
//! it understood, the table, an SVG chart and a CSV link; when it cannot tell, it lists what
//! can be asked.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::credentials::Authenticated;
use super::error::ApiError;
use super::page::{page_error, render, Chrome};
use super::session::Session;
use super::AppState;
use crate::auth::Permission;
use crate::canvas::question::{interpret, NotUnderstood, Understood};
use crate::canvas::{chart, queries, Answer, Params, QueryName, RawParams};

/// `/canvas`'s query string: a question in words (`q`), or a query by name with its
/// parameters; `format=csv` for the table as CSV.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub struct CanvasQuery {
    /// A question in words.
    pub q: Option<String>,
    /// A query by name, e.g. `spend_by_vendor`.
    pub query: Option<String>,
    /// First day, YYYY-MM-DD (default: the first of the month three months ago).
    pub from: Option<String>,
    /// Last day, YYYY-MM-DD (default: today).
    pub to: Option<String>,
    /// `day`, `week` or `month` (default).
    pub granularity: Option<String>,
    /// One vendor (spend_by_vendor).
    pub vendor: Option<String>,
    /// A three-letter currency code; default every currency, each apart.
    pub currency: Option<String>,
    /// Rows a ranking keeps, 1–50 (default 10).
    pub top: Option<String>,
    #[param(ignore)]
    pub format: Option<String>,
}

impl CanvasQuery {
    fn raw(&self) -> RawParams {
        RawParams {
            from: self.from.clone(),
            to: self.to.clone(),
            granularity: self.granularity.clone(),
            vendor: self.vendor.clone(),
            currency: self.currency.clone(),
            top: self.top.clone(),
        }
    }
}

/// The link that asks `understood` again by name, as a page or as CSV.
fn link(understood: &Understood, csv: bool) -> String {
    let p = &understood.params;
    let mut pairs: Vec<(&str, String)> = vec![
        ("query", understood.query.as_str().to_string()),
        ("from", p.from.to_string()),
        ("to", p.to.to_string()),
        ("granularity", p.granularity.as_str().to_string()),
        ("top", p.top.to_string()),
    ];
    if let Some(vendor) = &p.vendor {
        pairs.push(("vendor", vendor.clone()));
    }
    if let Some(currency) = &p.currency {
        pairs.push(("currency", currency.clone()));
    }
    if csv {
        pairs.push(("format", "csv".into()));
    }
    format!(
        "/canvas?{}",
        serde_urlencoded::to_string(&pairs).unwrap_or_default()
    )
}

pub struct Menu {
    pub name: &'static str,
    pub what: &'static str,
    pub example: &'static str,
}

fn menu() -> Vec<Menu> {
    QueryName::ALL
        .into_iter()
        .map(|q| {
            let (what, example) = q.describe();
            Menu {
                name: q.as_str(),
                what,
                example,
            }
        })
        .collect()
}

#[derive(Template)]
#[template(path = "canvas.html")]
struct CanvasPage {
    /// The signed-in person, the CSRF token and a notice, as `base.html` shows them.
    chrome: Chrome,
    question: String,
    understood: Option<String>,
    by: &'static str,
    problem: Option<String>,
    title: String,
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
    notes: Vec<String>,
    svg: Option<String>,
    csv_link: String,
    answered: bool,
    menu: Vec<Menu>,
}

/// What the request asks for: a reading of the question, or of the named query.
async fn reading(state: &AppState, request: &CanvasQuery) -> Result<Option<Understood>, String> {
    let today = state.clock.now().date_naive();
    if let Some(name) = request.query.as_deref().filter(|n| !n.trim().is_empty()) {
        let query = QueryName::parse(name.trim()).ok_or_else(|| {
            format!(
                "there is no query {:?}; the canvas answers the questions listed below",
                name.chars().take(40).collect::<String>()
            )
        })?;
        let params = Params::parse(&request.raw(), today).map_err(|e| e.to_string())?;
        return Ok(Some(Understood {
            query,
            params,
            by: "link",
        }));
    }
    let Some(question) = request.q.as_deref().filter(|q| !q.trim().is_empty()) else {
        return Ok(None);
    };
    let client = reqwest::Client::new();
    let llm = state.config.llm.as_ref().map(|config| (config, &client));
    match interpret(llm, question, today).await {
        Ok(understood) => Ok(Some(understood)),
        Err(NotUnderstood::NoQuery) => {
            Err("that is not one of the questions the canvas answers; try one of these".into())
        }
        Err(other) => Err(other.to_string()),
    }
}

/// `GET /canvas`.
pub async fn page(
    State(state): State<AppState>,
    session: Session,
    Query(request): Query<CanvasQuery>,
) -> Response {
    if let Err(forbidden) = session.actor.may(Permission::Read) {
        return page_error(&session, forbidden.into());
    }
    let mut page = CanvasPage {
        chrome: Chrome::of(&session),
        question: request.q.clone().unwrap_or_default(),
        understood: None,
        by: "",
        problem: None,
        title: String::new(),
        columns: Vec::new(),
        rows: Vec::new(),
        notes: Vec::new(),
        svg: None,
        csv_link: String::new(),
        answered: false,
        menu: menu(),
    };
    let understood = match reading(&state, &request).await {
        Ok(Some(understood)) => understood,
        Ok(None) => return render(StatusCode::OK, page),
        Err(problem) => {
            page.problem = Some(problem);
            return render(StatusCode::BAD_REQUEST, page);
        }
    };
    let answer = match queries::run(state.store.pool(), understood.query, &understood.params).await
    {
        Ok(answer) => answer,
        Err(error) => return page_error(&session, error.into()),
    };
    if request.format.as_deref() == Some("csv") {
        return csv(&answer);
    }
    page.understood = Some(understood.explain());
    page.by = understood.by;
    page.csv_link = link(&understood, true);
    page.svg = answer.chart.as_ref().map(|c| chart::svg(c, &answer.title));
    page.title = answer.title.clone();
    page.columns = answer.columns.clone();
    page.rows = answer
        .rows
        .iter()
        .map(|row| row.iter().map(|cell| cell.display()).collect())
        .collect();
    page.notes = answer.notes.clone();
    page.answered = true;
    render(StatusCode::OK, page)
}

fn csv(answer: &Answer) -> Response {
    let name = format!(
        "attachment; filename=\"execops-{}-{}-{}.csv\"",
        answer.query, answer.params.from, answer.params.to
    );
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, name),
        ],
        answer.to_csv(),
    )
        .into_response()
}

/// One canvas query's answer: its table (cells typed, money in minor units with its
/// currency), chart and notes.
#[utoipa::path(get, path = "/api/v1/canvas/{query}",
    params(("query" = String, Path, description = "runway, burn, mrr, failed_payments, spend_by_vendor, approval_latency, precision, outcomes or execution_success"), CanvasQuery),
    responses((status = 200, description = "The answer", body = Object),
        (status = 400, body = super::error::ErrorBody), (status = 401, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody)))]
pub async fn api(
    State(state): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(name): Path<String>,
    Query(request): Query<CanvasQuery>,
) -> Result<Json<Answer>, ApiError> {
    actor.may(Permission::Read)?;
    let query = QueryName::parse(&name).ok_or_else(|| {
        let names: Vec<&str> = QueryName::ALL.iter().map(|q| q.as_str()).collect();
        ApiError::NotFound(format!(
            "no canvas query {:?}; the queries are {}",
            name.chars().take(40).collect::<String>(),
            names.join(", ")
        ))
    })?;
    let params = Params::parse(&request.raw(), state.clock.now().date_naive()).map_err(|e| {
        ApiError::BadRequest {
            code: "invalid_parameter",
            message: e.to_string(),
        }
    })?;
    Ok(Json(
        queries::run(state.store.pool(), query, &params).await?,
    ))
}
