//! Execution end to end against local servers that check the request shapes the providers
//! document: only approved proposals run, once; guardrails hold and release; retries keep
//! one effect; results, failures and holds are events on the proposal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use execops::config::Config;
use execops::domain::{ProposalCommand, ProposalDraft, ProposalId, Role, Urgency, Vertical};
use serde_json::{json, Value};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::api::person;
use crate::common::{config, eventually, TestApp};
use crate::webhooks::SECRETS;

pub const SLACK_TOKEN: &str = "xoxb-test-token";
pub const STRIPE_KEY: &str = "sk_test_execops";

/// A Stripe that behaves like Stripe about `Idempotency-Key`: the first request with a key
/// has the effect, and later ones with the same key get the first answer back. It can fail
/// the first `failures` requests with 500 and hold its first answer back for `hold`.
#[derive(Clone, Default)]
pub struct FakeStripe {
    pub effects: Arc<Mutex<HashMap<String, u32>>>,
    failures: Arc<Mutex<u32>>,
    hold: Arc<Mutex<Option<Duration>>>,
}

impl FakeStripe {
    pub fn failing(failures: u32) -> Self {
        let fake = Self::default();
        *fake.failures.lock().expect("lock") = failures;
        fake
    }

    pub fn holding_first_answer(hold: Duration) -> Self {
        let fake = Self::default();
        *fake.hold.lock().expect("lock") = Some(hold);
        fake
    }

    /// Requests that had an effect, by idempotency key.
    pub fn effects(&self) -> HashMap<String, u32> {
        self.effects.lock().expect("lock").clone()
    }
}

fn paid_invoice(id: &str) -> Value {
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/stripe/invoice.paid.json"
        ))
        .expect("the invoice.paid fixture"),
    )
    .expect("json");
    let mut invoice = fixture["data"]["object"].clone();
    invoice["id"] = json!(id);
    invoice
}

impl Respond for FakeStripe {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let key = request
            .headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let Some(key) = key else {
            return ResponseTemplate::new(400).set_body_json(
                json!({"error": {"message": "this fake wants an Idempotency-Key"}}),
            );
        };
        {
            let mut failures = self.failures.lock().expect("lock");
            if *failures > 0 {
                *failures -= 1;
                return ResponseTemplate::new(500).set_body_json(
                    json!({"error": {"type": "api_error", "message": "try again"}}),
                );
            }
        }
        let invoice = request
            .url
            .path()
            .split('/')
            .nth(3)
            .unwrap_or("in_unknown")
            .to_string();
        let mut effects = self.effects.lock().expect("lock");
        let first = !effects.contains_key(&key);
        *effects.entry(key).or_insert(0) += u32::from(first);
        let answer = ResponseTemplate::new(200).set_body_json(paid_invoice(&invoice));
        match self.hold.lock().expect("lock").take() {
            Some(hold) => answer.set_delay(hold),
            None => answer,
        }
    }
}

/// Stripe reading an invoice: open, owing $10.00 (what the failed-invoice fixture and the
/// drafts here approve).
struct OpenInvoice;

impl Respond for OpenInvoice {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let id = request
            .url
            .path()
            .rsplit('/')
            .next()
            .unwrap_or("in_unknown");
        let mut invoice = paid_invoice(id);
        invoice["status"] = json!("open");
        invoice["amount_due"] = json!(1000);
        invoice["amount_remaining"] = json!(1000);
        invoice["amount_paid"] = json!(0);
        invoice["currency"] = json!("usd");
        ResponseTemplate::new(200).set_body_json(invoice)
    }
}

/// Local Slack, Stripe and GitHub servers, and the settings that point ExecOps at them.
pub struct Fakes {
    pub slack: MockServer,
    pub stripe: MockServer,
    pub github: MockServer,
}

impl Fakes {
    pub async fn start() -> Self {
        Self {
            slack: MockServer::start().await,
            stripe: MockServer::start().await,
            github: MockServer::start().await,
        }
    }

    /// Slack's `chat.postMessage` as it answers a good request with the bot token.
    pub async fn slack_accepts(&self) {
        Mock::given(method("POST"))
            .and(path("/chat.postMessage"))
            .and(header(
                "authorization",
                format!("Bearer {SLACK_TOKEN}").as_str(),
            ))
            .respond_with(ResponseTemplate::new(200).set_body_json(
                json!({"ok": true, "channel": "C0FOUNDERS", "ts": "1700000000.000100"}),
            ))
            .mount(&self.slack)
            .await;
    }

    pub async fn stripe_answers(&self, fake: FakeStripe) {
        Mock::given(method("GET"))
            .and(wiremock::matchers::path_regex(
                "^/v1/invoices/in_[A-Za-z0-9_]+$",
            ))
            .and(header(
                "authorization",
                format!("Bearer {STRIPE_KEY}").as_str(),
            ))
            .respond_with(OpenInvoice)
            .mount(&self.stripe)
            .await;
        Mock::given(method("POST"))
            .and(header(
                "authorization",
                format!("Bearer {STRIPE_KEY}").as_str(),
            ))
            .respond_with(fake)
            .mount(&self.stripe)
            .await;
    }

    pub async fn slack_posts(&self) -> Vec<Value> {
        self.slack
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.url.path() == "/chat.postMessage")
            .filter_map(|r| serde_json::from_slice(&r.body).ok())
            .collect()
    }

    pub fn settings(&self, smtp: Option<&str>) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = SECRETS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        pairs.extend(
            [
                ("SLACK_BOT_TOKEN", SLACK_TOKEN.to_string()),
                ("SLACK_API_BASE", self.slack.uri()),
                (
                    "SLACK_RESPONSE_URL_BASE",
                    format!("{}/respond/", self.slack.uri()),
                ),
                ("STRIPE_API_KEY", STRIPE_KEY.to_string()),
                ("STRIPE_API_BASE", format!("{}/", self.stripe.uri())),
                ("GITHUB_TOKEN", "ghp_test".to_string()),
                ("GITHUB_API_BASE", self.github.uri()),
                ("EXECOPS_EXECUTION_BACKOFF_MS", "20".to_string()),
                ("EXECOPS_EXECUTION_MAX_BACKOFF_MS", "200".to_string()),
                ("EXECOPS_ADAPTER_TIMEOUT_MS", "5000".to_string()),
            ]
            .map(|(k, v)| (k.to_string(), v)),
        );
        if let Some(url) = smtp {
            pairs.push(("SMTP_URL".into(), url.into()));
        }
        pairs
    }

    pub fn config(&self, extra: &[(&str, &str)]) -> Config {
        let mut pairs = self.settings(None);
        pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let borrowed: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        config(&borrowed)
    }
}

/// A proposal as the router would draft it, named `name`.
pub fn proposal(name: &str, action_type: &str, action: Value) -> ProposalDraft {
    ProposalDraft {
        id: ProposalId::derive(&format!("test:{name}"), "test.rule"),
        title: format!("Test {name}"),
        vertical: Vertical::Ops,
        action_type: action_type.into(),
        action,
        reasoning: "a test".into(),
        drivers: vec![],
        score: 50,
        urgency: Urgency::High,
        due_by: None,
        owner: None,
        inbound_ids: vec![format!("test:{name}")],
        subject_key: format!("test:{name}"),
        requested_by: None,
        outcome_key: None,
        terms: Default::default(),
    }
}

/// Drafts a proposal straight into the store, as the router would.
pub async fn draft(app: &TestApp, name: &str, action_type: &str, action: Value) -> String {
    let draft = proposal(name, action_type, action);
    let id = draft.id.to_string();
    app.store
        .proposal(&id, ProposalCommand::Draft(draft), HashMap::new())
        .await
        .expect("drafted");
    id
}

pub async fn approve(app: &TestApp, token: &str, id: &str) {
    // The API decides on what the projection shows: let it catch up with the draft.
    crate::policies::settle(app).await;
    let response = app
        .client
        .post(app.url(&format!("/api/v1/proposals/{id}/approve")))
        .bearer_auth(token)
        .json(&json!({"comment": "go", "payload_hash": crate::api::shown(app, id).await}))
        .send()
        .await
        .expect("the server answers");
    assert_eq!(response.status(), 200, "approve {id}");
}

/// The event types of a proposal's stream, in order.
pub async fn events_of(app: &TestApp, id: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT event_type FROM events WHERE aggregate_type = 'Proposal' AND aggregate_id = $1 \
         ORDER BY sequence",
    )
    .bind(id)
    .fetch_all(app.store.pool())
    .await
    .expect("events")
}

pub async fn payload_of(app: &TestApp, id: &str, event_type: &str) -> Value {
    let payload: Value = sqlx::query_scalar(
        "SELECT payload FROM events WHERE aggregate_type = 'Proposal' AND aggregate_id = $1 \
           AND event_type = $2 ORDER BY sequence DESC LIMIT 1",
    )
    .bind(id)
    .bind(event_type)
    .fetch_one(app.store.pool())
    .await
    .expect("the event");
    payload[event_type].clone()
}

pub async fn wait_for(app: &TestApp, id: &str, event_type: &str) -> Vec<String> {
    let what = format!("{id} to record {event_type}");
    eventually(Duration::from_secs(20), &what, || async {
        events_of(app, id).await.iter().any(|e| e == event_type)
    })
    .await;
    events_of(app, id).await
}

fn slack_post(channel: &str, text: &str) -> Value {
    json!({"channel": channel, "text": text})
}

#[tokio::test]
async fn an_approved_slack_post_runs_once_with_the_bot_token_and_succeeds() {
    let fakes = Fakes::start().await;
    fakes.slack_accepts().await;
    let app = TestApp::spawn_with(fakes.config(&[])).await;
    let token = person(&app, "approver@example.com", Role::Approver).await;
    let id = draft(
        &app,
        "post",
        "slack.post_message",
        slack_post("#founders", "hello"),
    )
    .await;
    approve(&app, &token, &id).await;
    let events = wait_for(&app, &id, "ExecutionSucceeded").await;
    assert_eq!(
        events,
        [
            "Drafted",
            "Approved",
            "ExecutionStarted",
            "ExecutionSucceeded"
        ]
    );
    assert_eq!(
        fakes.slack_posts().await,
        [slack_post("#founders", "hello")]
    );
    let result = payload_of(&app, &id, "ExecutionSucceeded").await;
    assert_eq!(result["result"]["ts"], "1700000000.000100");
    let started = payload_of(&app, &id, "ExecutionStarted").await;
    assert_eq!(
        started["idempotency_key"],
        id.parse::<ProposalId>().expect("an id").idempotency_key()
    );
}

#[tokio::test]
async fn nothing_runs_without_an_approval_even_when_a_read_model_row_says_approved() {
    let fakes = Fakes::start().await;
    fakes.slack_accepts().await;
    let app = TestApp::spawn_with(fakes.config(&[])).await;
    let token = person(&app, "approver@example.com", Role::Approver).await;
    let pending = draft(&app, "pending", "slack.post_message", slack_post("#a", "1")).await;
    let rejected = draft(
        &app,
        "rejected",
        "slack.post_message",
        slack_post("#a", "2"),
    )
    .await;
    let expired = draft(&app, "expired", "slack.post_message", slack_post("#a", "3")).await;
    let superseded = draft(
        &app,
        "superseded",
        "slack.post_message",
        slack_post("#a", "4"),
    )
    .await;
    crate::policies::settle(&app).await;
    let reject = app
        .client
        .post(app.url(&format!("/api/v1/proposals/{rejected}/reject")))
        .bearer_auth(&token)
        .json(&json!({"reason": "no"}))
        .send()
        .await
        .expect("answers");
    assert_eq!(reject.status(), 200);
    app.store
        .proposal(
            &expired,
            ProposalCommand::Expire {
                at: chrono::Utc::now(),
            },
            HashMap::new(),
        )
        .await
        .expect("expired");
    app.store
        .proposal(
            &superseded,
            ProposalCommand::Supersede {
                by: None,
                reason: "newer".into(),
            },
            HashMap::new(),
        )
        .await
        .expect("superseded");
    crate::policies::settle(&app).await;
    // Someone edits the read model and queues the jobs by hand.
    let pool = app.store.pool();
    for id in [&pending, &rejected, &expired, &superseded] {
        sqlx::query("UPDATE proposal_summaries SET status = 'approved' WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await
            .expect("altered");
        sqlx::query(
            "INSERT INTO execution_jobs (proposal_id, approved_at) VALUES ($1, now()) \
             ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .execute(pool)
        .await
        .expect("queued");
    }
    sqlx::query("SELECT pg_notify('execops_jobs', '')")
        .execute(pool)
        .await
        .expect("notified");
    // The executor looks at every job, refuses each from the proposal's own stream, and
    // drops it.
    eventually(
        Duration::from_secs(10),
        "the executor to drop the forged jobs",
        || async { crate::common::count(pool, "SELECT count(*) FROM execution_jobs").await == 0 },
    )
    .await;
    assert!(
        fakes.slack_posts().await.is_empty(),
        "something reached Slack"
    );
    let started = crate::common::count(
        pool,
        "SELECT count(*) FROM events WHERE event_type = 'ExecutionStarted'",
    )
    .await;
    assert_eq!(started, 0);
}

#[tokio::test]
async fn the_kill_switch_holds_approved_work_and_releasing_it_runs_it() {
    use execops::domain::guardrails::{GuardrailsCommand, Scope};
    let fakes = Fakes::start().await;
    fakes.slack_accepts().await;
    let app = TestApp::spawn_with(fakes.config(&[])).await;
    let token = person(&app, "approver@example.com", Role::Approver).await;
    for scope in [
        Scope::Global,
        Scope::Adapter("slack".into()),
        Scope::ActionType("slack.post_message".into()),
    ] {
        let name = scope.to_string();
        app.store
            .guardrails(
                GuardrailsCommand::Engage {
                    scope: scope.clone(),
                    actor: "admin@example.com".into(),
                    reason: "incident".into(),
                },
                HashMap::new(),
            )
            .await
            .expect("engaged");
        let id = draft(&app, &name, "slack.post_message", slack_post("#a", &name)).await;
        approve(&app, &token, &id).await;
        let events = wait_for(&app, &id, "ExecutionDeferred").await;
        assert_eq!(
            events,
            ["Drafted", "Approved", "ExecutionDeferred"],
            "{name}"
        );
        let deferred = payload_of(&app, &id, "ExecutionDeferred").await;
        assert_eq!(
            deferred["reason"],
            format!("the kill switch for {scope} is engaged")
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            events_of(&app, &id).await.len(),
            3,
            "{name}: held, and the hold recorded once"
        );
        assert!(fakes
            .slack_posts()
            .await
            .iter()
            .all(|p| p["text"] != name.as_str()));
        app.store
            .guardrails(
                GuardrailsCommand::Release {
                    scope,
                    actor: "admin@example.com".into(),
                },
                HashMap::new(),
            )
            .await
            .expect("released");
        wait_for(&app, &id, "ExecutionSucceeded").await;
        let sent = fakes.slack_posts().await;
        assert_eq!(
            sent.iter().filter(|p| p["text"] == name.as_str()).count(),
            1,
            "{name}: ran once after the release"
        );
    }
}

#[tokio::test]
async fn over_the_rate_limit_an_execution_waits_and_the_inbox_says_until_when() {
    use execops::domain::guardrails::GuardrailsCommand;
    let fakes = Fakes::start().await;
    fakes.slack_accepts().await;
    let app = TestApp::spawn_with(fakes.config(&[])).await;
    let token = person(&app, "approver@example.com", Role::Approver).await;
    app.store
        .guardrails(
            GuardrailsCommand::SetRateLimit {
                action_type: "slack.post_message".into(),
                per_hour: Some(1),
                actor: "admin@example.com".into(),
            },
            HashMap::new(),
        )
        .await
        .expect("set");
    let first = draft(&app, "first", "slack.post_message", slack_post("#a", "1")).await;
    let second = draft(&app, "second", "slack.post_message", slack_post("#a", "2")).await;
    approve(&app, &token, &first).await;
    wait_for(&app, &first, "ExecutionSucceeded").await;
    approve(&app, &token, &second).await;
    wait_for(&app, &second, "ExecutionDeferred").await;
    let deferred = payload_of(&app, &second, "ExecutionDeferred").await;
    let until: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(deferred["until"].clone()).expect("a time");
    let wait = until - chrono::Utc::now();
    assert!(
        wait > chrono::Duration::minutes(55) && wait <= chrono::Duration::minutes(60),
        "it waits until the first leaves the hour: {wait}"
    );
    assert_eq!(fakes.slack_posts().await.len(), 1);
    crate::policies::settle(&app).await;
    let waiting: (Option<String>, Option<chrono::DateTime<chrono::Utc>>) = sqlx::query_as(
        "SELECT waiting_reason, waiting_until FROM proposal_summaries WHERE id = $1",
    )
    .bind(&second)
    .fetch_one(app.store.pool())
    .await
    .expect("a row");
    assert!(
        waiting
            .0
            .as_deref()
            .unwrap_or("")
            .contains("rate limit of 1 an hour"),
        "{waiting:?}"
    );
    assert_eq!(waiting.1, Some(until));
}

#[tokio::test]
async fn a_call_retried_after_server_errors_has_one_effect_under_one_key() {
    let fakes = Fakes::start().await;
    let stripe = FakeStripe::failing(2);
    fakes.stripe_answers(stripe.clone()).await;
    let app = TestApp::spawn_with(fakes.config(&[])).await;
    crate::common::enable_writes(&app.store).await;
    let token = person(&app, "approver@example.com", Role::Approver).await;
    let id = draft(
        &app,
        "retry",
        "stripe.retry_invoice",
        json!({"invoice": "in_retry", "amount_cents": 1000, "currency": "usd"}),
    )
    .await;
    approve(&app, &token, &id).await;
    let events = wait_for(&app, &id, "ExecutionSucceeded").await;
    assert_eq!(
        events,
        [
            "Drafted",
            "Approved",
            "ExecutionStarted",
            "ExecutionFailed",
            "ExecutionStarted",
            "ExecutionFailed",
            "ExecutionStarted",
            "ExecutionSucceeded"
        ]
    );
    let key = id.parse::<ProposalId>().expect("an id").idempotency_key();
    let requests: Vec<_> = fakes
        .stripe
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.method.as_str() == "POST")
        .collect();
    assert_eq!(requests.len(), 3);
    for request in &requests {
        assert_eq!(request.url.path(), "/v1/invoices/in_retry/pay");
        assert_eq!(
            request
                .headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok()),
            Some(key.as_str())
        );
    }
    assert_eq!(stripe.effects(), HashMap::from([(key, 1)]));
    let failed = payload_of(&app, &id, "ExecutionFailed").await;
    assert_eq!(failed["retryable"], true);
}

#[tokio::test]
async fn a_refused_call_fails_at_once_with_the_providers_message() {
    let fakes = Fakes::start().await;
    Mock::given(method("POST"))
        .and(path("/chat.postMessage"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"ok": false, "error": "channel_not_found"})),
        )
        .mount(&fakes.slack)
        .await;
    let app = TestApp::spawn_with(fakes.config(&[])).await;
    let token = person(&app, "approver@example.com", Role::Approver).await;
    let id = draft(
        &app,
        "refused",
        "slack.post_message",
        slack_post("#nowhere", "x"),
    )
    .await;
    approve(&app, &token, &id).await;
    let events = wait_for(&app, &id, "ExecutionFailed").await;
    assert_eq!(
        events,
        ["Drafted", "Approved", "ExecutionStarted", "ExecutionFailed"]
    );
    let failed = payload_of(&app, &id, "ExecutionFailed").await;
    assert_eq!(failed["retryable"], false);
    assert!(
        failed["error"]
            .as_str()
            .unwrap_or("")
            .contains("channel_not_found"),
        "{failed}"
    );
    assert_eq!(fakes.slack_posts().await.len(), 1);
}

#[tokio::test]
async fn repeated_failures_open_the_adapters_circuit_and_a_good_probe_closes_it() {
    let fakes = Fakes::start().await;
    Mock::given(method("POST"))
        .and(path("/chat.postMessage"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .mount(&fakes.slack)
        .await;
    fakes.slack_accepts().await;
    let app = TestApp::spawn_with(fakes.config(&[
        ("EXECOPS_BREAKER_FAILURES", "2"),
        ("EXECOPS_BREAKER_COOLDOWN_SECS", "5"),
        ("EXECOPS_EXECUTION_BACKOFF_MS", "10"),
    ]))
    .await;
    let token = person(&app, "approver@example.com", Role::Approver).await;
    let id = draft(&app, "breaker", "slack.post_message", slack_post("#a", "b")).await;
    approve(&app, &token, &id).await;
    wait_for(&app, &id, "ExecutionSucceeded").await;
    let guardrail_events = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT event_type FROM events WHERE aggregate_type = 'Guardrails' \
             ORDER BY sequence",
        )
        .fetch_all(app.store.pool())
        .await
        .expect("events")
    };
    // The circuit closes right after the probe's success is recorded.
    eventually(Duration::from_secs(10), "the circuit to close", || async {
        guardrail_events().await.len() >= 2
    })
    .await;
    assert_eq!(guardrail_events().await, ["CircuitOpened", "CircuitClosed"]);
    let events = events_of(&app, &id).await;
    assert!(
        events.contains(&"ExecutionDeferred".to_string()),
        "the open circuit held the retry: {events:?}"
    );
}

/// `execops serve` as its own process, so it can be killed outright.
/// `execops serve` as its own process, to be killed without warning.
pub struct Serve(std::process::Child, pub u16);

impl Serve {
    pub fn start(database_url: &str, settings: &[(String, String)]) -> Self {
        let port = crate::common::free_port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_execops"))
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("EXECOPS_ADDR", format!("127.0.0.1:{port}"))
            .envs(settings.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("execops starts");
        Self(child, port)
    }

    pub fn kill(&mut self) {
        let _ = self.0.kill(); // SIGKILL
        let _ = self.0.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test]
async fn a_sigkill_between_call_and_record_repeats_stripe_under_its_key_and_leaves_slack_uncertain()
{
    use execops::domain::{payload_hash, Decision};
    let fakes = Fakes::start().await;
    let stripe = FakeStripe::holding_first_answer(Duration::from_secs(60));
    fakes.stripe_answers(stripe.clone()).await;
    Mock::given(method("POST"))
        .and(path("/chat.postMessage"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"ok": true, "channel": "C1", "ts": "1.2"}))
                .set_delay(Duration::from_secs(60)),
        )
        .mount(&fakes.slack)
        .await;
    let db = execops::store::testing::TestDatabase::new()
        .await
        .expect("a database");
    execops::store::MIGRATOR
        .run(&db.pool)
        .await
        .expect("migrated");
    let store = execops::commands::Store::new(db.pool.clone(), execops::telemetry::Metrics::new());
    crate::common::enable_writes(&store).await;
    let mut ids = Vec::new();
    for (name, action_type, action) in [
        (
            "pay",
            "stripe.retry_invoice",
            json!({"invoice": "in_killed", "amount_cents": 1000, "currency": "usd"}),
        ),
        (
            "post",
            "slack.post_message",
            slack_post("#founders", "once"),
        ),
    ] {
        let draft = proposal(name, action_type, action.clone());
        let id = draft.id;
        let approval = Decision {
            actor: "approver@example.com".into(),
            role: Role::Approver,
            comment: None,
            payload_hash: payload_hash(&action),
            identities: vec![],
            at: Some(chrono::Utc::now()),
        };
        for command in [
            ProposalCommand::Draft(draft),
            ProposalCommand::Approve(approval),
        ] {
            store
                .proposal(&id.to_string(), command, HashMap::new())
                .await
                .expect("recorded");
        }
        ids.push(id.to_string());
    }
    let settings = fakes.settings(None);
    let mut serve = Serve::start(&db.url, &settings);
    // Both calls are in the providers' hands, their answers held back: kill now.
    eventually(Duration::from_secs(60), "both calls to arrive", || async {
        let stripe_calls = fakes.stripe.received_requests().await.unwrap_or_default();
        stripe_calls.iter().any(|r| r.method.as_str() == "POST")
            && !fakes.slack_posts().await.is_empty()
    })
    .await;
    serve.kill();
    let started: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'ExecutionStarted'")
            .fetch_one(&db.pool)
            .await
            .expect("count");
    assert_eq!(started, 2, "both attempts were open when the process died");

    let _serve = Serve::start(&db.url, &settings);
    let events = |id: String| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT event_type FROM events WHERE aggregate_id = $1 ORDER BY sequence",
            )
            .bind(id)
            .fetch_all(&pool)
            .await
            .expect("events")
        }
    };
    eventually(Duration::from_secs(60), "both to be settled", || async {
        events(ids[0].clone()).await.last().map(String::as_str) == Some("ExecutionSucceeded")
            && events(ids[1].clone()).await.last().map(String::as_str) == Some("ExecutionUncertain")
    })
    .await;
    assert_eq!(
        events(ids[0].clone()).await,
        [
            "Drafted",
            "Approved",
            "ExecutionStarted",
            "ExecutionFailed",
            "ExecutionStarted",
            "ExecutionSucceeded"
        ],
        "Stripe dedupes: the attempt is repeated under the same key"
    );
    let key = ids[0].parse::<ProposalId>().expect("id").idempotency_key();
    assert_eq!(
        fakes
            .stripe
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.method.as_str() == "POST")
            .count(),
        2
    );
    assert_eq!(stripe.effects(), HashMap::from([(key, 1)]), "one effect");
    assert_eq!(
        events(ids[1].clone()).await,
        [
            "Drafted",
            "Approved",
            "ExecutionStarted",
            "ExecutionUncertain"
        ],
        "Slack does not dedupe: a person decides"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        fakes.slack_posts().await.len(),
        1,
        "never a silent second send"
    );
}

#[tokio::test]
async fn preview_undo_and_resolve_on_the_page_are_recorded_with_their_actor() {
    use crate::pages::{csrf_of, form, page, sign_in};
    let fakes = Fakes::start().await;
    fakes.slack_accepts().await;
    Mock::given(method("POST"))
        .and(path("/chat.delete"))
        .and(header(
            "authorization",
            format!("Bearer {SLACK_TOKEN}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
        .mount(&fakes.slack)
        .await;
    let app = TestApp::spawn_with(fakes.config(&[])).await;
    let token = person(&app, "approver@example.com", Role::Approver).await;
    person(&app, "viewer@example.com", Role::Viewer).await;
    let cookie = sign_in(&app, "approver@example.com").await;
    let viewer = sign_in(&app, "viewer@example.com").await;
    let id = draft(&app, "undo", "slack.post_message", slack_post("#a", "oops")).await;
    crate::policies::settle(&app).await;
    let (_, html, _) = page(&app, Some(&cookie), &format!("/proposals/{id}")).await;
    let csrf = csrf_of(&html);
    let (_, viewer_html, _) = page(&app, Some(&viewer), &format!("/proposals/{id}")).await;
    let viewer_csrf = csrf_of(&viewer_html);

    // Bad requests change nothing.
    let preview = format!("/proposals/{id}/preview");
    for (who, fields, status) in [
        (&cookie, vec![], 403),
        (&cookie, vec![("csrf", "forged")], 403),
        (&viewer, vec![("csrf", viewer_csrf.as_str())], 403),
    ] {
        let (got, _, _) = form(&app, Some(who), &preview, &fields).await;
        assert_eq!(got, status, "{fields:?}");
    }
    assert_eq!(events_of(&app, &id).await, ["Drafted"]);

    let (status, location, _) = form(&app, Some(&cookie), &preview, &[("csrf", &csrf)]).await;
    assert_eq!(
        (status, location.as_str()),
        (
            303,
            format!("/proposals/{id}?notice=previewed#execution").as_str()
        )
    );
    let previewed = payload_of(&app, &id, "Previewed").await;
    assert_eq!(previewed["actor"], "approver@example.com");
    let request = &previewed["requests"][0];
    assert_eq!(
        request["url"],
        format!("{}/chat.postMessage", fakes.slack.uri())
    );
    assert_eq!(request["body"], slack_post("#a", "oops"));
    assert!(
        !request.to_string().contains(SLACK_TOKEN),
        "the token is redacted: {request}"
    );
    assert!(
        fakes.slack_posts().await.is_empty(),
        "a preview sends nothing"
    );

    approve(&app, &token, &id).await;
    wait_for(&app, &id, "ExecutionSucceeded").await;
    crate::policies::settle(&app).await;
    let undo = format!("/proposals/{id}/undo");
    let (status, _, _) = form(&app, Some(&viewer), &undo, &[("csrf", &viewer_csrf)]).await;
    assert_eq!(status, 403, "a viewer may not undo");
    // Undo is an action like any other: recorded first, then carried out by the executor
    // behind the kill switch.
    let deletes = || async {
        fakes
            .slack
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.url.path() == "/chat.delete")
            .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
            .collect::<Vec<Value>>()
    };
    let switch = |command| {
        let store = app.store.clone();
        async move {
            store
                .guardrails(command, HashMap::new())
                .await
                .expect("the kill switch");
        }
    };
    use execops::domain::guardrails::{GuardrailsCommand, Scope};
    switch(GuardrailsCommand::Engage {
        scope: Scope::Global,
        actor: "admin@example.com".into(),
        reason: "incident".into(),
    })
    .await;
    let (status, _, _) = form(&app, Some(&cookie), &undo, &[("csrf", &csrf)]).await;
    assert_eq!(status, 303);
    wait_for(&app, &id, "ExecutionDeferred").await;
    let asked = payload_of(&app, &id, "RollbackRequested").await;
    assert_eq!(asked["actor"], "approver@example.com");
    assert_eq!(asked["complete"], true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(deletes().await.is_empty(), "held by the kill switch");
    switch(GuardrailsCommand::Release {
        scope: Scope::Global,
        actor: "admin@example.com".into(),
    })
    .await;
    let rolled_back = {
        wait_for(&app, &id, "RolledBack").await;
        payload_of(&app, &id, "RolledBack").await
    };
    assert_eq!(rolled_back["actor"], "approver@example.com");
    let deletes = deletes().await;
    assert_eq!(
        deletes,
        [json!({"channel": "C0FOUNDERS", "ts": "1700000000.000100"})]
    );
    crate::policies::settle(&app).await;
    let (status, _, body) = form(&app, Some(&cookie), &undo, &[("csrf", &csrf)]).await;
    assert_eq!(status, 409, "undone once: {body}");

    // Resolving needs an uncertain execution and a known choice.
    let resolve = format!("/proposals/{id}/resolve");
    for (fields, status) in [
        (vec![("csrf", csrf.as_str()), ("resolution", "maybe")], 400),
        (vec![("csrf", csrf.as_str()), ("resolution", "done")], 409),
    ] {
        let (got, _, _) = form(&app, Some(&cookie), &resolve, &fields).await;
        assert_eq!(got, status, "{fields:?}");
    }
}

#[tokio::test]
async fn an_uncertain_execution_is_marked_done_or_retried_by_a_person() {
    use crate::pages::{csrf_of, form, page, sign_in};
    let fakes = Fakes::start().await;
    fakes.slack_accepts().await;
    // As a process that died mid-call leaves them, written before the app (and its
    // executor, which would take an approved proposal up itself) starts.
    let (db, store) = crate::common::store().await;
    let mut ids = Vec::new();
    for name in ["done", "retry"] {
        let draft = proposal(name, "slack.post_message", slack_post("#a", name));
        let id = draft.id.to_string();
        for command in [
            ProposalCommand::Draft(draft),
            ProposalCommand::Approve(execops::domain::Decision {
                actor: "approver@example.com".into(),
                role: Role::Approver,
                comment: None,
                payload_hash: execops::domain::payload_hash(&slack_post("#a", name)),
                identities: vec![],
                at: Some(chrono::Utc::now()),
            }),
            ProposalCommand::StartExecution,
            ProposalCommand::RecordUncertain {
                attempt: 1,
                reason: "the process stopped".into(),
            },
        ] {
            store
                .proposal(&id, command, HashMap::new())
                .await
                .expect("recorded");
        }
        ids.push(id);
    }
    let app = TestApp::spawn_on(db.pool.clone(), fakes.config(&[])).await;
    person(&app, "approver@example.com", Role::Approver).await;
    let cookie = sign_in(&app, "approver@example.com").await;
    crate::policies::settle(&app).await;
    let (_, inbox, _) = page(&app, Some(&cookie), "/inbox").await;
    assert!(
        inbox.contains("needs you: mark as done or retry"),
        "{inbox}"
    );
    let csrf = csrf_of(&inbox);
    let (_, html, _) = page(&app, Some(&cookie), &format!("/proposals/{}", ids[0])).await;
    assert!(html.contains("Mark as done") && html.contains("Retry"));
    let (status, _, _) = form(
        &app,
        Some(&cookie),
        &format!("/proposals/{}/resolve", ids[0]),
        &[
            ("csrf", &csrf),
            ("resolution", "done"),
            ("note", "saw it in Slack"),
        ],
    )
    .await;
    assert_eq!(status, 303);
    let (status, _, _) = form(
        &app,
        Some(&cookie),
        &format!("/proposals/{}/resolve", ids[1]),
        &[("csrf", &csrf), ("resolution", "retry")],
    )
    .await;
    assert_eq!(status, 303);
    let done = payload_of(&app, &ids[0], "MarkedDone").await;
    assert_eq!(done["actor"], "approver@example.com");
    assert_eq!(done["note"], "saw it in Slack");
    let events = wait_for(&app, &ids[1], "ExecutionSucceeded").await;
    assert_eq!(
        events,
        [
            "Drafted",
            "Approved",
            "ExecutionStarted",
            "ExecutionUncertain",
            "RetryRequested",
            "ExecutionStarted",
            "ExecutionSucceeded"
        ]
    );
    let sent = fakes.slack_posts().await;
    assert_eq!(
        sent,
        [slack_post("#a", "retry")],
        "only the retried one was sent"
    );
}

#[tokio::test]
async fn settings_show_the_guardrails_and_only_admins_change_them() {
    use crate::pages::{csrf_of, form, page, sign_in};
    let fakes = Fakes::start().await;
    let app = TestApp::spawn_with(fakes.config(&[])).await;
    person(&app, "admin@example.com", Role::Admin).await;
    person(&app, "approver@example.com", Role::Approver).await;
    let admin = sign_in(&app, "admin@example.com").await;
    let approver = sign_in(&app, "approver@example.com").await;
    let (status, html, _) = page(&app, Some(&approver), "/settings").await;
    assert_eq!(status, 200);
    assert!(html.contains("Only admins change guardrails"));
    let approver_csrf = csrf_of(&html);
    let (_, html, _) = page(&app, Some(&admin), "/settings").await;
    let csrf = csrf_of(&html);
    for (who, fields, status) in [
        (
            &approver,
            vec![
                ("csrf", approver_csrf.as_str()),
                ("change", "engage"),
                ("scope", "global"),
                ("reason", "x"),
            ],
            403,
        ),
        (
            &admin,
            vec![("change", "engage"), ("scope", "global"), ("reason", "x")],
            403,
        ),
        (
            &admin,
            vec![
                ("csrf", csrf.as_str()),
                ("change", "engage"),
                ("scope", "adapter:fax"),
                ("reason", "x"),
            ],
            400,
        ),
        (
            &admin,
            vec![
                ("csrf", csrf.as_str()),
                ("change", "engage"),
                ("scope", "global"),
                ("reason", " "),
            ],
            400,
        ),
        (
            &admin,
            vec![("csrf", csrf.as_str()), ("change", "explode")],
            400,
        ),
        (
            &admin,
            vec![
                ("csrf", csrf.as_str()),
                ("change", "rate_limit"),
                ("action_type", "email.send"),
                ("per_hour", "ten"),
            ],
            400,
        ),
        (
            &admin,
            vec![
                ("csrf", csrf.as_str()),
                ("change", "release"),
                ("scope", "global"),
            ],
            400,
        ),
    ] {
        let (got, _, body) = form(&app, Some(who), "/settings", &fields).await;
        assert_eq!(got, status, "{fields:?}: {body}");
    }
    let count = crate::common::count(
        app.store.pool(),
        "SELECT count(*) FROM events WHERE aggregate_type = 'Guardrails'",
    )
    .await;
    assert_eq!(count, 0, "nothing was recorded");
    for fields in [
        vec![
            ("csrf", csrf.as_str()),
            ("change", "engage"),
            ("scope", "action_type:email.send"),
            ("reason", "bad template"),
        ],
        vec![
            ("csrf", csrf.as_str()),
            ("change", "rate_limit"),
            ("action_type", "slack.post_message"),
            ("per_hour", "5"),
        ],
        vec![
            ("csrf", csrf.as_str()),
            ("change", "disable"),
            ("action_type", "github.create_issue"),
        ],
    ] {
        let (got, location, _) = form(&app, Some(&admin), "/settings", &fields).await;
        assert_eq!((got, location.as_str()), (303, "/settings"), "{fields:?}");
    }
    let (_, html, _) = page(&app, Some(&approver), "/settings").await;
    assert!(
        html.contains("engaged</strong> by admin@example.com: bad template"),
        "{html}"
    );
    assert!(
        html.contains("<td>5\n") || html.contains("<td>5 "),
        "the rate limit shows"
    );
    assert!(html.contains("<strong>disabled</strong>: disabled on the settings page"));
}

#[tokio::test]
async fn an_issue_opened_for_a_red_build_records_the_fix_when_the_build_goes_green() {
    let fakes = Fakes::start().await;
    fakes.slack_accepts().await;
    Mock::given(method("POST"))
        .and(path("/repos/octo-org/octo-repo/issues"))
        .and(header("authorization", "Bearer ghp_test"))
        .and(header("x-github-api-version", "2022-11-28"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "number": 7,
            "html_url": "https://github.com/octo-org/octo-repo/issues/7",
        })))
        .mount(&fakes.github)
        .await;
    let app = TestApp::spawn_with(fakes.config(&[])).await;
    let token = person(&app, "approver@example.com", Role::Approver).await;
    crate::webhooks::send_fixture(&app, "github/workflow_run.completed.failure.json").await;
    crate::policies::settle(&app).await;
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT id FROM proposal_summaries ORDER BY action_type")
            .fetch_all(app.store.pool())
            .await
            .expect("proposals");
    assert_eq!(ids.len(), 2, "an issue and a post");
    for id in &ids {
        approve(&app, &token, id).await;
        wait_for(&app, id, "ExecutionSucceeded").await;
    }
    let issue = payload_of(&app, &ids[0], "ExecutionSucceeded").await;
    assert_eq!(issue["result"]["number"], 7);
    crate::webhooks::send_fixture(&app, "github/workflow_run.completed.success.json").await;
    for id in &ids {
        wait_for(&app, id, "OutcomeRecorded").await;
        let outcome = payload_of(&app, id, "OutcomeRecorded").await;
        assert_eq!(outcome["kind"], "fixed");
        assert!(
            outcome["summary"]
                .as_str()
                .unwrap_or("")
                .starts_with("fixed after "),
            "{outcome}"
        );
    }
    eventually(Duration::from_secs(10), "the track record", || async {
        let rates: Option<(i64, i64)> = sqlx::query_as(
            "SELECT executed, with_outcome FROM outcome_rates \
             WHERE action_type = 'github.create_issue'",
        )
        .fetch_optional(app.store.pool())
        .await
        .expect("a track record");
        rates == Some((1, 1))
    })
    .await;
}

#[tokio::test]
async fn a_fresh_install_proposes_writes_but_runs_none_until_an_admin_enables_them() {
    use crate::pages::{csrf_of, form, page, sign_in};
    let fakes = Fakes::start().await;
    let stripe = FakeStripe::default();
    fakes.stripe_answers(stripe.clone()).await;
    let app = TestApp::spawn_with(fakes.config(&[])).await;
    let token = person(&app, "approver@example.com", Role::Approver).await;
    person(&app, "admin@example.com", Role::Admin).await;
    let id = draft(
        &app,
        "charge",
        "stripe.retry_invoice",
        json!({"invoice": "in_optin", "amount_cents": 1000, "currency": "usd"}),
    )
    .await;
    approve(&app, &token, &id).await;
    let events = wait_for(&app, &id, "ExecutionDeferred").await;
    assert_eq!(events, ["Drafted", "Approved", "ExecutionDeferred"]);
    let deferred = payload_of(&app, &id, "ExecutionDeferred").await;
    assert_eq!(
        deferred["reason"],
        "stripe.retry_invoice is disabled; an admin enables it on /settings"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        fakes
            .stripe
            .received_requests()
            .await
            .unwrap_or_default()
            .is_empty(),
        "nothing reached Stripe"
    );

    // The settings say so, and what enabling means; an admin enables it there.
    let admin = sign_in(&app, "admin@example.com").await;
    let (_, html, _) = page(&app, Some(&admin), "/settings").await;
    for shown in [
        "not enabled yet",
        "payment method in Stripe for the approved amount",
    ] {
        assert!(html.contains(shown), "{shown} in the settings");
    }
    let (status, _, _) = form(
        &app,
        Some(&admin),
        "/settings",
        &[
            ("csrf", csrf_of(&html).as_str()),
            ("change", "enable"),
            ("action_type", "stripe.retry_invoice"),
        ],
    )
    .await;
    assert_eq!(status, 303);
    wait_for(&app, &id, "ExecutionSucceeded").await;
    assert_eq!(stripe.effects().len(), 1, "paid once, after enabling");
}
