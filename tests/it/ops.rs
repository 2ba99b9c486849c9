//! Health, readiness, metrics and request ids over real HTTP.

use std::sync::Arc;
use std::time::Duration;

use execops::commands::Store;
use execops::store::subscription::{Registry, Runner, RunnerOptions};
use execops::telemetry::Metrics;
use execops::web::{router, AppState};
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;

use crate::common::{config, eventually, receive, store, TestApp};

/// A bearer of this may read `/readyz`'s reasons and `/metrics`.
const METRICS_TOKEN: &str = "metrics-reader-7f3a";

fn with_metrics_token() -> execops::config::Config {
    config(&[("EXECOPS_METRICS_TOKEN", METRICS_TOKEN)])
}

async fn serve(state: AppState) -> String {
    serve_router(router(state)).await
}

async fn serve_router(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

/// GET `url` as a reader of the metrics.
async fn insider(client: &reqwest::Client, url: String) -> reqwest::Response {
    client
        .get(url)
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .expect("an answer")
}

#[tokio::test]
async fn healthz_and_readyz_answer_200_when_all_is_well() {
    let app = TestApp::spawn_with(with_metrics_token()).await;
    let health: Value = app.get("/healthz", 200).await.json().await.expect("json");
    assert_eq!(health["status"], "ok");
    receive(&app.store, "evt_ready").await;
    // Ready, and the event applied: other tests' open transactions may delay it a little.
    eventually(Duration::from_secs(10), "readiness with no lag", || async {
        let response = insider(&app.client, app.url("/readyz")).await;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or_default();
        status == 200 && body["subscriptions"][0]["lag_events"] == 0
    })
    .await;
    let ready: Value = insider(&app.client, app.url("/readyz"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["database"], "ok");
    assert_eq!(ready["subscriptions"][0]["name"], "event_counts");
    assert_eq!(ready["subscriptions"][0]["lag_events"], 0);
    app.stop().await;
}

#[tokio::test]
async fn readyz_answers_503_with_the_reason_when_a_subscription_lags() {
    let (db, store) = store().await;
    // A subscription registered here but not running anywhere: its backlog only grows.
    let subscriptions = Registry::default();
    let _idle = Runner::new(
        db.pool.clone(),
        execops::projections::EventCounts,
        RunnerOptions::default(),
        &subscriptions,
    );
    receive(&store, "evt_lagging").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let base = serve(AppState {
        store,
        adapters: execops::adapters::Adapters::new(&config(&[]).adapters),
        subscriptions,
        metrics: Metrics::new(),
        config: Arc::new(config(&[
            ("EXECOPS_MAX_SUBSCRIBER_LAG_SECS", "1"),
            ("EXECOPS_METRICS_TOKEN", METRICS_TOKEN),
        ])),
        clock: execops::clock::Clock::system(),
        live: live_streams(),
        signin: execops::web::signin::SignInGate::new(&config(&[]).limits),
        oidc: None,
        shutdown: tokio::sync::watch::channel(false).1,
    })
    .await;
    let response = insider(&reqwest::Client::new(), format!("{base}/readyz")).await;
    assert_eq!(response.status().as_u16(), 503);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["subscriptions"][0]["lag_events"], 1);
    let reason = body["reasons"][0].as_str().unwrap_or_default();
    assert!(
        reason.contains("event_counts") && reason.contains("behind"),
        "{reason}"
    );
}

#[tokio::test]
async fn readyz_answers_503_when_postgres_is_unreachable() {
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(300))
        .connect_lazy("postgres://nobody:nothing@127.0.0.1:1/none")
        .expect("a lazy pool");
    let metrics = Metrics::new();
    let base = serve(AppState {
        store: Store::new(pool, metrics.clone()),
        adapters: execops::adapters::Adapters::new(&config(&[]).adapters),
        subscriptions: Registry::default(),
        metrics,
        config: Arc::new(with_metrics_token()),
        clock: execops::clock::Clock::system(),
        live: live_streams(),
        signin: execops::web::signin::SignInGate::new(&config(&[]).limits),
        oidc: None,
        shutdown: tokio::sync::watch::channel(false).1,
    })
    .await;
    let response = insider(&reqwest::Client::new(), format!("{base}/readyz")).await;
    assert_eq!(response.status().as_u16(), 503);
    let body: Value = response.json().await.expect("json");
    assert!(
        body["database"]
            .as_str()
            .unwrap_or_default()
            .starts_with("unreachable"),
        "{body}"
    );
    // Liveness does not depend on the database.
    let health = reqwest::get(format!("{base}/healthz"))
        .await
        .expect("an answer");
    assert_eq!(health.status().as_u16(), 200);
}

#[tokio::test]
async fn metrics_report_latency_by_route_appends_and_lag() {
    let app = TestApp::spawn_with(with_metrics_token()).await;
    app.get("/healthz", 200).await;
    receive(&app.store, "evt_counted").await;
    eventually(Duration::from_secs(10), "the event counted", || async {
        let text = insider(&app.client, app.url("/metrics"))
            .await
            .text()
            .await
            .unwrap_or_default();
        text.contains(r#"execops_log_events{aggregate_type="Inbound",event_type="Received"} 1"#)
    })
    .await;
    let text = insider(&app.client, app.url("/metrics"))
        .await
        .text()
        .await
        .expect("text");
    for expected in [
        r#"execops_http_request_duration_seconds_count{route="/healthz",method="GET",status="200"} 1"#,
        r#"execops_events_appended_total{aggregate_type="Inbound"} 1"#,
        r#"execops_subscription_lag_events{subscription="event_counts"} 0"#,
        r#"execops_subscription_active{subscription="event_counts"} 1"#,
    ] {
        assert!(text.contains(expected), "missing {expected} in:\n{text}");
    }
    app.stop().await;
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_keeps_the_callers() {
    let app = TestApp::spawn().await;
    let generated = app.get("/healthz", 200).await;
    let id = generated
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert_eq!(id.len(), 36, "a generated uuid: {id:?}");
    let echoed = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "caller-chosen-1")
        .send()
        .await
        .expect("an answer");
    assert_eq!(
        echoed
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("caller-chosen-1")
    );
    app.stop().await;
}

/// Live streams on a listener that never connects: these tests open none.
fn live_streams() -> execops::web::live::LiveStreams {
    let options = "postgres://nobody@127.0.0.1:1/none"
        .parse()
        .expect("options");
    execops::web::live::LiveStreams::new(
        execops::store::notifications::Notifications::start(options),
        &config(&[]).limits,
    )
}

#[tokio::test]
async fn the_anonymous_learn_only_whether_it_is_ready_and_cannot_read_metrics() {
    let app = TestApp::spawn_with(with_metrics_token()).await;
    let ready: Value = app.get("/readyz", 200).await.json().await.expect("json");
    assert_eq!(ready, serde_json::json!({"status": "ready"}));
    for (token, expected) in [
        (None, 401),
        (Some("wrong"), 401),
        (Some(METRICS_TOKEN), 200),
    ] {
        let mut request = app.client.get(app.url("/metrics"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("an answer");
        assert_eq!(response.status().as_u16(), expected, "token {token:?}");
    }
    // An admin's API token reads them too; an approver's does not.
    for (role, expected) in [
        (execops::domain::Role::Admin, 200),
        (execops::domain::Role::Approver, 401),
    ] {
        let token = crate::api::person(&app, &format!("{role:?}@example.com"), role).await;
        let response = app
            .client
            .get(app.url("/metrics"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("an answer");
        assert_eq!(response.status().as_u16(), expected, "{role}");
    }
    app.stop().await;
}

#[tokio::test]
async fn with_a_metrics_listener_the_main_one_serves_no_metrics_and_the_other_tells_all() {
    let app = TestApp::spawn_with(config(&[("EXECOPS_METRICS_ADDR", "127.0.0.1:0")])).await;
    app.get("/metrics", 404).await;
    let private = serve_router(execops::web::metrics_router(app.state())).await;
    let metrics = reqwest::get(format!("{private}/metrics"))
        .await
        .expect("an answer");
    assert_eq!(metrics.status().as_u16(), 200);
    let ready: Value = reqwest::get(format!("{private}/readyz"))
        .await
        .expect("an answer")
        .json()
        .await
        .expect("json");
    assert_eq!(ready["database"], "ok", "{ready}");
    app.stop().await;
}

#[tokio::test]
async fn odd_methods_and_paths_leave_the_metrics_small() {
    let app = TestApp::spawn_with(with_metrics_token()).await;
    let client = reqwest::Client::new();
    let long = "X".repeat(2_000);
    for i in 0..500 {
        let method =
            reqwest::Method::from_bytes(format!("M{i}{long}").as_bytes()).expect("a method");
        let path = format!("/no/such/path/{i}/{long}");
        let response = client
            .request(method, app.url(&path))
            .send()
            .await
            .expect("an answer");
        assert!(response.status().is_client_error(), "{}", response.status());
        let odd = reqwest::Method::from_bytes(format!("BREW{i}").as_bytes()).expect("a method");
        let response = client
            .request(odd, app.url("/inbox"))
            .send()
            .await
            .expect("an answer");
        assert!(response.status().is_client_error(), "{}", response.status());
    }
    let text = insider(&client, app.url("/metrics"))
        .await
        .text()
        .await
        .expect("text");
    assert!(text.len() < 64 * 1024, "{} bytes", text.len());
    assert!(
        !text.contains("BREW") && !text.contains("/no/such"),
        "{text}"
    );
    assert!(text.contains(r#"route="other",method="other""#), "{text}");
    app.stop().await;
}

/// Whatever the app logs on this thread, as text.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut all) = self.0.lock() {
            all.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn request_logs_name_the_route_template_never_the_path_a_client_sent() {
    let app = TestApp::spawn().await;
    let secret = "tok3n-that-must-not-be-logged";
    let paths = [
        format!("/links/{secret}"),
        format!("/no/such/{secret}"),
        format!("/api/v1/proposals/{secret}"),
    ];
    let visit = || async {
        for path in &paths {
            let _ = app
                .client
                .get(app.url(path))
                .send()
                .await
                .expect("an answer");
        }
    };
    // Once before listening, so that every log statement on the way is registered: tracing
    // works out who listens to a statement when it is first met, and other tests' threads
    // meet the same statements at the same time.
    visit().await;
    let captured = Captured::default();
    let writer = captured.clone();
    // The test's runtime runs the server on this thread, so its logs come here.
    let logs = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .finish(),
    );
    visit().await;
    drop(logs);
    app.stop().await;
    let text = String::from_utf8_lossy(&captured.0.lock().expect("the logs")).to_string();
    assert!(
        text.contains("/links/{token}"),
        "the template is logged: {text}"
    );
    assert!(text.contains(r#""route":"other""#), "{text}");
    assert!(!text.contains(secret), "a path was logged: {text}");
}
