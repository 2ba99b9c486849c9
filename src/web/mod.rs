//! HTTP: routes, shared state, and the layers every request passes through (request id,
//! tracing, latency metrics). Handlers turn requests into commands and read models into
//! responses; errors are mapped to statuses in one place.

pub mod account;
pub mod api;
pub mod audit;
pub mod canvas;
pub mod card;
pub mod credentials;
pub mod error;
pub mod execution;
pub mod links;
pub mod live;
pub mod oidc;
pub mod openapi;
mod ops;
pub mod page;
pub mod pages;
pub mod people;
pub mod serve;
pub mod session;
pub mod signin;
pub mod slack;
mod webhooks;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::commands::Store;
use crate::config::Config;
use crate::store::subscription::Registry;
use crate::telemetry::{HttpLabels, Metrics};

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    /// For previews and undo; executions themselves run in the executor.
    pub adapters: crate::adapters::Adapters,
    pub subscriptions: Registry,
    pub metrics: Metrics,
    pub config: Arc<Config>,
    /// What time it is, for sessions, links, deadlines and a delivery's timestamp tolerance.
    pub clock: crate::clock::Clock,
    /// The open inbox streams and the one listener they wait on.
    pub live: live::LiveStreams,
    /// The bounds on sign-ins: password checks at once, failures, attempts a minute.
    pub signin: signin::SignInGate,
    /// Sign-in through an OpenID Connect provider, when one is set up.
    pub oidc: Option<oidc::Oidc>,
    /// Turns true when the server is shutting down: long-lived streams end then.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// Every route of the main listener. `/metrics` is left out when it has a listener of its
/// own; every request but a live stream must finish within `EXECOPS_REQUEST_TIMEOUT_SECS`.
pub fn router(state: AppState) -> Router {
    let timed = Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz));
    let timed = match state.config.metrics_addr {
        Some(_) => timed,
        None => timed.route("/metrics", get(ops::metrics)),
    };
    let timed = timed
        .route("/", get(pages::home))
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/login/oidc", get(oidc::start))
        .route(oidc::CALLBACK_PATH, get(oidc::callback))
        .route("/logout", post(pages::logout))
        .route("/inbox", get(pages::inbox))
        .route("/queue", get(pages::queue))
        .route("/audit", get(audit::page))
        .route("/canvas", get(canvas::page))
        .route("/signals/{id}", get(pages::signal))
        .route("/static/app.js", get(pages::script))
        .route("/static/htmx.min.js", get(pages::htmx))
        .route("/proposals/approve-selected", post(pages::approve_selected))
        .route("/proposals/{id}", get(pages::proposal))
        .route("/proposals/{id}/approve", post(pages::approve))
        .route("/proposals/{id}/reject", post(pages::reject))
        .route("/proposals/{id}/preview", post(execution::preview))
        .route("/proposals/{id}/undo", post(execution::undo))
        .route("/proposals/{id}/resolve", post(execution::resolve))
        .route("/links/{token}", get(links::show).post(links::confirm))
        .route(
            "/settings",
            get(execution::settings).post(execution::change_settings),
        )
        .route(
            "/settings/people",
            get(people::page).post(people::change_person),
        )
        .route("/settings/me", get(people::me).post(people::change_me))
        .route(
            "/account/{secret}",
            get(account::show).post(account::redeem),
        )
        .route("/static/app.css", get(pages::stylesheet))
        .route("/api/v1/proposals", get(api::list))
        .route("/api/v1/audit", get(audit::api))
        .route("/api/v1/canvas/{query}", get(canvas::api))
        .route("/api/v1/openapi.json", get(openapi::openapi))
        .route("/api/v1/proposals/{id}", get(api::get))
        .route("/api/v1/proposals/{id}/approve", post(api::approve))
        .route("/api/v1/proposals/{id}/reject", post(api::reject))
        .route("/webhooks/stripe", webhooks::endpoint(&webhooks::STRIPE))
        .route("/webhooks/github", webhooks::endpoint(&webhooks::GITHUB))
        .route(
            "/webhooks/slack/events",
            webhooks::endpoint(&webhooks::SLACK_EVENTS),
        )
        .route("/webhooks/slack/commands", post(webhooks::slack_commands))
        .route(
            "/webhooks/slack/interactions",
            post(webhooks::slack_interactions),
        )
        .route("/webhooks/hubspot", post(webhooks::hubspot))
        .route(
            "/webhooks/intercom",
            webhooks::endpoint(&webhooks::INTERCOM),
        )
        .route("/webhooks/std/{source}", post(webhooks::standard))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            state.config.limits.request_timeout,
        ));
    with_common_layers(
        timed.route("/inbox/stream", get(pages::inbox_stream)),
        state,
    )
}

/// The metrics listener's routes: `/metrics` and `/readyz` with its reasons, to anyone who
/// can reach it.
pub fn metrics_router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .layer(axum::Extension(ops::Private));
    with_common_layers(routes, state)
}

fn with_common_layers(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_latency,
        ))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(request_span))
                .layer(PropagateRequestIdLayer::x_request_id()),
        )
        .with_state(state)
}

/// The request's id (`x-request-id`, set by the request-id layer when a client sent none).
fn request_id(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers.get("x-request-id").and_then(|v| v.to_str().ok())
}

fn request_span(request: &Request) -> tracing::Span {
    let request_id = request_id(request.headers()).unwrap_or_default();
    // The route's template, never the path itself: a path can carry a secret (an email
    // link's token) or be anything a client makes up.
    tracing::info_span!(
        "request",
        method = method_label(request.method()),
        route = route_label(request),
        request_id = %request_id,
    )
}

/// The matched route's template, or `other` for a path no route matches.
fn route_label(request: &Request) -> &str {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or("other", |p| p.as_str())
}

/// Headers every answer carries: no inline script, no framing, no sniffing, no referrer
/// leaking ids.
async fn security_headers(request: Request, next: Next) -> Response {
    use axum::http::header::{self, HeaderValue};
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

async fn record_latency(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    // Labels come from small fixed sets, whatever a client sends: a route template, or
    // `other` for a path no route matches; a standard method, or `other`.
    let route = route_label(&request).to_string();
    let method = method_label(request.method()).to_string();
    let response = next.run(request).await;
    state
        .metrics
        .http_duration
        .get_or_create(&HttpLabels {
            route,
            method,
            status: response.status().as_u16(),
        })
        .observe(started.elapsed().as_secs_f64());
    response
}
