//! Signals to proposals, end to end: each fixture is sent signed through the webhook, the
//! router drafts what the policies call for, and the projections show it.

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use execops::clock::Clock;
use execops::domain::Role;
use execops::projections::proposals::{from_signal, todays_moves, Summary};
use execops::send::prepare;
use execops::store::subscription::backlog;
use serde_json::Value;

use crate::common::{eventually, TestApp};
use crate::webhooks::{configured, fixtures, post};

/// Waits until the router and the projections have applied everything in the log.
pub async fn settle(app: &TestApp) {
    let pool = app.store.pool();
    let idle = || async {
        for name in ["router", "proposals", "audit_log"] {
            match backlog(pool, name).await {
                Ok(b) if b.events == 0 => {}
                _ => return false,
            }
        }
        true
    };
    eventually(
        Duration::from_secs(20),
        "the router and projections idle",
        || async {
            idle().await && {
                tokio::time::sleep(Duration::from_millis(50)).await;
                idle().await
            }
        },
    )
    .await;
}

pub(crate) async fn send(app: &TestApp, path: &Path) -> Value {
    let delivery = prepare(
        path,
        &configured(),
        &format!("http://{}", app.addr),
        app.clock.now(),
    )
    .expect("signs");
    let (status, body) = post(app, &delivery).await;
    assert_eq!(status, 200, "{}: {body}", path.display());
    body
}

fn describe(p: &Summary) -> String {
    format!(
        "{} | {} | {} | {} | {}",
        p.title,
        p.action_type,
        p.score,
        p.urgency,
        p.drivers
            .as_array()
            .map(|d| d
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; "))
            .unwrap_or_default()
    )
}

/// Every fixture sent in turn to an app whose clock says `clock`: one line per proposal.
async fn proposals_of_every_fixture(clock: Clock) -> Vec<String> {
    let app = TestApp::spawn_with_clock(configured(), clock).await;
    let mut got = Vec::new();
    for path in fixtures() {
        let body = send(&app, &path).await;
        settle(&app).await;
        let id = body["id"]
            .as_str()
            .map(str::to_string)
            .or_else(|| body["events"][0]["id"].as_str().map(str::to_string))
            .expect("an inbound id");
        let name = path
            .strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures"))
            .unwrap_or(&path)
            .display()
            .to_string();
        for proposal in from_signal(app.store.pool(), &id).await.expect("proposals") {
            got.push(format!("{name} => {}", describe(&proposal)));
        }
    }
    app.stop().await;
    got
}

fn expected() -> Vec<&'static str> {
    include_str!("policies.expected.txt")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect()
}

#[tokio::test]
async fn every_fixture_drafts_exactly_the_proposals_its_policies_call_for() {
    let got = proposals_of_every_fixture(Clock::system()).await;
    assert_eq!(got, expected(), "\n--- got ---\n{}\n", got.join("\n"));
}

/// The policies decide from each signal's own time, so the golden lines hold in any month
/// the fixtures are sent in, not only the one they were written in.
#[tokio::test]
async fn the_fixtures_draft_the_same_proposals_a_year_later() {
    let got = proposals_of_every_fixture(Clock::shifted(chrono::Duration::days(366))).await;
    assert_eq!(got, expected(), "\n--- got ---\n{}\n", got.join("\n"));
}

pub(crate) fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// A fixture with some fields changed, signed and sent as its sender would.
pub(crate) async fn send_changed(
    app: &TestApp,
    name: &str,
    change: impl FnOnce(&mut Value),
) -> Value {
    let path = fixture(name);
    let mut json: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("fixture")).expect("json");
    change(&mut json);
    let sender = execops::send::sender_of(&path).expect("a sender");
    let delivery = execops::send::sign(
        &sender,
        serde_json::to_vec(&json).expect("json"),
        &configured_with(&[]),
        &format!("http://{}", app.addr),
        app.clock.now(),
    )
    .expect("signs");
    let (status, body) = post(app, &delivery).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn configured_with(extra: &[(&str, &str)]) -> execops::config::Config {
    let mut pairs: Vec<(&str, &str)> = crate::webhooks::SECRETS.to_vec();
    pairs.extend_from_slice(extra);
    crate::common::config(&pairs)
}

async fn proposal_events(app: &TestApp) -> i64 {
    crate::common::count(
        app.store.pool(),
        "SELECT count(*) FROM events WHERE aggregate_type = 'Proposal'",
    )
    .await
}

async fn statuses(app: &TestApp, subject_prefix: &str) -> Vec<(String, String, i64)> {
    sqlx::query_as(
        "SELECT subject_key, status, jsonb_array_length(inbound_ids)::bigint FROM proposal_summaries \
         WHERE subject_key LIKE $1 ORDER BY subject_key, created_at",
    )
    .bind(format!("{subject_prefix}%"))
    .fetch_all(app.store.pool())
    .await
    .expect("statuses")
}

#[tokio::test]
async fn redelivering_every_fixture_or_replaying_the_log_drafts_nothing_new() {
    let app = TestApp::spawn_with(configured()).await;
    for path in fixtures() {
        send(&app, &path).await;
    }
    settle(&app).await;
    let drafted = proposal_events(&app).await;
    assert!(drafted >= 9, "{drafted} proposal events");

    for path in fixtures() {
        let body = send(&app, &path).await;
        assert_ne!(body["status"], "accepted", "{}: {body}", path.display());
    }
    settle(&app).await;
    assert_eq!(
        proposal_events(&app).await,
        drafted,
        "redelivery drafted something"
    );

    // Replay: the router forgets everything and, restarted, reads the whole log again.
    let pool = app.store.pool().clone();
    app.stop().await;
    let mut tx = pool.begin().await.expect("a transaction");
    for table in [
        "router_subjects",
        "router_proposals",
        "router_decisions",
        "router_action_types",
        "facts_vendor_spend",
        "facts_monthly",
        "facts_cash",
        "facts_deals",
    ] {
        sqlx::query(&format!("DELETE FROM {table}"))
            .execute(&mut *tx)
            .await
            .expect("reset");
    }
    sqlx::query("DELETE FROM subscription_checkpoints WHERE name = 'router'")
        .execute(&mut *tx)
        .await
        .expect("reset the checkpoint");
    tx.commit().await.expect("reset committed");
    let app = TestApp::spawn_on(pool.clone(), configured()).await;
    eventually(
        Duration::from_secs(20),
        "the router replayed the log",
        || async {
            let routed: i64 = sqlx::query_scalar("SELECT count(*) FROM router_proposals")
                .fetch_one(&pool)
                .await
                .unwrap_or(0);
            routed >= 9
        },
    )
    .await;
    settle(&app).await;
    assert_eq!(
        proposal_events(&app).await,
        drafted,
        "replay drafted something"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_failed_workflow_then_its_success_leaves_the_first_proposals_superseded() {
    let app = TestApp::spawn_with(configured()).await;
    send(&app, &fixture("github/workflow_run.completed.failure.json")).await;
    settle(&app).await;
    let subject = "github:octo-org/octo-repo:workflow:";
    assert_eq!(
        statuses(&app, subject).await,
        [
            (
                format!("{subject}2823525:master:issue"),
                "pending".into(),
                1
            ),
            (
                format!("{subject}2823525:master:slack"),
                "pending".into(),
                1
            ),
        ]
    );
    send(&app, &fixture("github/workflow_run.completed.success.json")).await;
    settle(&app).await;
    let after: Vec<String> = statuses(&app, subject)
        .await
        .into_iter()
        .map(|s| s.1)
        .collect();
    assert_eq!(after, ["superseded", "superseded"]);
    let (moves, total) = todays_moves(app.store.pool(), 10).await.expect("moves");
    assert!(moves.is_empty() && total == 0);
    app.stop().await;
}

#[tokio::test]
async fn two_failed_payments_for_one_invoice_leave_one_pending_proposal_updated() {
    let app = TestApp::spawn_with(configured()).await;
    send(&app, &fixture("stripe/invoice.payment_failed.json")).await;
    settle(&app).await;
    send_changed(&app, "stripe/invoice.payment_failed.json", |event| {
        event["id"] = "evt_second_failure".into();
        event["data"]["object"]["attempt_count"] = 3.into();
    })
    .await;
    settle(&app).await;
    let subject = "stripe:invoice:in_1Pgc6tB7WZ01zgkWu9fdqL6I:";
    assert_eq!(
        statuses(&app, subject).await,
        [
            (format!("{subject}card_update_email"), "pending".into(), 2),
            (format!("{subject}owner_dm"), "pending".into(), 2),
        ],
        "one pending proposal per subject, each taking both signals"
    );
    let reasoning: String =
        sqlx::query_scalar("SELECT reasoning FROM proposal_summaries WHERE subject_key = $1")
            .bind(format!("{subject}card_update_email"))
            .fetch_one(app.store.pool())
            .await
            .expect("reasoning");
    assert!(reasoning.contains("attempt 3"), "updated: {reasoning}");
    let revised = crate::common::count(
        app.store.pool(),
        "SELECT count(*) FROM events WHERE event_type = 'Revised'",
    )
    .await;
    assert_eq!(revised, 2);

    // The invoice is paid: what is still pending about it is moot.
    send(&app, &fixture("stripe/invoice.paid.json")).await;
    settle(&app).await;
    let after: Vec<String> = statuses(&app, subject)
        .await
        .into_iter()
        .map(|s| s.1)
        .collect();
    assert_eq!(after, ["superseded", "superseded"]);
    app.stop().await;
}

#[tokio::test]
async fn todays_moves_puts_what_is_due_within_a_day_first() {
    let app = TestApp::spawn_with(configured()).await;
    // A dispute due in 10 days and a payment failure whose retry is due in 2 hours.
    let soon = (Utc::now() + chrono::Duration::hours(2)).timestamp();
    let later = (Utc::now() + chrono::Duration::days(10)).timestamp();
    send_changed(&app, "stripe/charge.dispute.created.json", |e| {
        e["data"]["object"]["amount"] = 2_000_000.into();
        e["data"]["object"]["evidence_details"]["due_by"] = later.into();
    })
    .await;
    send_changed(&app, "stripe/invoice.payment_failed.json", |e| {
        e["data"]["object"]["next_payment_attempt"] = soon.into();
    })
    .await;
    settle(&app).await;
    let (moves, total) = todays_moves(app.store.pool(), 10).await.expect("moves");
    assert_eq!(total, 3);
    let titles: Vec<&str> = moves.iter().map(|m| m.title.as_str()).collect();
    // Both due soon (by score), then the higher-scored dispute that is not.
    assert!(titles[0].starts_with("Email customer"), "{titles:?}");
    assert!(titles[1].starts_with("DM the account owner"), "{titles:?}");
    assert!(
        titles[2].starts_with("Prepare dispute evidence for $20,000.00"),
        "{titles:?}"
    );
    assert!(moves[2].score > moves[0].score);
    app.stop().await;
}

#[tokio::test]
async fn an_action_type_people_keep_rejecting_is_disabled_and_can_be_enabled_again() {
    use execops::domain::{payload_hash, Decision, ProposalCommand, Role};

    let config = configured_with(&[
        ("EXECOPS_PRECISION_MIN_DECISIONS", "3"),
        ("EXECOPS_PRECISION_FLOOR_PERCENT", "50"),
    ]);
    let app = TestApp::spawn_with(config).await;
    let fail = |n: u32| {
        move |e: &mut Value| {
            e["id"] = format!("evt_fail_{n}").into();
            e["data"]["object"]["id"] = format!("in_{n}").into();
            e["data"]["object"]["attempt_count"] = 1.into();
        }
    };
    for n in 0..3 {
        send_changed(&app, "stripe/invoice.payment_failed.json", fail(n)).await;
    }
    settle(&app).await;
    let pending: Vec<(String, Value)> = sqlx::query_as(
        "SELECT id, action FROM proposal_summaries WHERE status = 'pending' AND action_type = 'email.send'",
    )
    .fetch_all(app.store.pool())
    .await
    .expect("pending emails");
    assert_eq!(pending.len(), 3);
    for (id, action) in pending {
        let decision = Decision {
            actor: "founder@example.com".into(),
            role: Role::Admin,
            comment: None,
            payload_hash: payload_hash(&action),
            identities: vec![],
            at: Some(chrono::Utc::now()),
        };
        app.store
            .proposal(
                &id,
                ProposalCommand::Reject {
                    decision,
                    reason: "not useful".into(),
                },
                Default::default(),
            )
            .await
            .expect("rejected");
    }
    settle(&app).await;
    let (actor, reason): (String, String) = sqlx::query_as(
        "SELECT payload->'ActionTypeDisabled'->>'actor', payload->'ActionTypeDisabled'->>'reason' \
         FROM events WHERE event_type = 'ActionTypeDisabled'",
    )
    .fetch_one(app.store.pool())
    .await
    .expect("the action type was disabled, in the event log");
    assert_eq!(actor, "precision");
    assert!(reason.contains("0 of the last 3"), "{reason}");

    // A later draft of it is recorded as suppressed, not put in the inbox.
    send_changed(&app, "stripe/invoice.payment_failed.json", fail(3)).await;
    settle(&app).await;
    let (status, why): (String, Option<String>) = sqlx::query_as(
        "SELECT status, suppressed_reason FROM proposal_summaries WHERE subject_key = 'stripe:invoice:in_3:card_update_email'",
    )
    .fetch_one(app.store.pool())
    .await
    .expect("the suppressed draft");
    assert_eq!(status, "suppressed");
    assert_eq!(why.as_deref(), Some("email.send is disabled"));

    // A person enables it again, from the command line.
    let url = app.database_url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_execops"))
            .args([
                "guardrails",
                "enable",
                "email.send",
                "--by",
                "founder@example.com",
            ])
            .env("DATABASE_URL", url)
            .output()
    })
    .await
    .expect("cli task")
    .expect("cli runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    settle(&app).await;
    send_changed(&app, "stripe/invoice.payment_failed.json", fail(4)).await;
    settle(&app).await;
    let status: String = sqlx::query_scalar(
        "SELECT status FROM proposal_summaries WHERE subject_key = 'stripe:invoice:in_4:card_update_email'",
    )
    .fetch_one(app.store.pool())
    .await
    .expect("drafted again");
    assert_eq!(status, "pending");
    let enabled_by: String = sqlx::query_scalar(
        "SELECT payload->'ActionTypeEnabled'->>'actor' FROM events WHERE event_type = 'ActionTypeEnabled'",
    )
    .fetch_one(app.store.pool())
    .await
    .expect("enabled, in the event log");
    assert_eq!(enabled_by, "founder@example.com");
    app.stop().await;
}

/// A local stand-in for an OpenAI-compatible chat completions endpoint. It checks the request
/// has the documented shape and answers as `mode` says.
async fn fake_language_model(
    mode: &'static str,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use axum::{routing::post, Json, Router};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move |headers: axum::http::HeaderMap, Json(request): Json<Value>| {
            let seen = seen.clone();
            async move {
                assert_eq!(
                    headers.get("authorization").and_then(|v| v.to_str().ok()),
                    Some("Bearer test-key")
                );
                assert_eq!(request["model"], "test-model");
                assert_eq!(request["messages"][0]["role"], "system");
                assert_eq!(request["messages"][1]["role"], "user");
                let text = request["messages"][1]["content"].as_str().unwrap_or_default().to_string();
                seen.fetch_add(1, Ordering::SeqCst);
                let content = match mode {
                    "polite" => format!("Hello! {text}"),
                    "liar" => text.replace("$10.00", "$1.00"),
                    _ => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        format!("Too late: {text}")
                    }
                };
                Json(serde_json::json!({
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let url = format!(
        "http://{}/v1/chat/completions",
        listener.local_addr().expect("an address")
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, calls)
}

async fn drafted_card_update(mode: &'static str) -> (Value, usize) {
    let (url, calls) = fake_language_model(mode).await;
    // Ample for a model that answers on a loaded machine; short for one that never does.
    let timeout = if mode == "slow" { "500" } else { "10000" };
    let app = TestApp::spawn_with(configured_with(&[
        ("EXECOPS_LLM_URL", &url),
        ("EXECOPS_LLM_MODEL", "test-model"),
        ("EXECOPS_LLM_API_KEY", "test-key"),
        ("EXECOPS_LLM_TIMEOUT_MS", timeout),
    ]))
    .await;
    send(&app, &fixture("stripe/invoice.payment_failed.json")).await;
    settle(&app).await;
    let action: Value = sqlx::query_scalar(
        "SELECT action FROM proposal_summaries WHERE action_type = 'email.send'",
    )
    .fetch_one(app.store.pool())
    .await
    .expect("the drafted email");
    app.stop().await;
    (action, calls.load(std::sync::atomic::Ordering::SeqCst))
}

const RULE_BODY: &str = "Hi,\n\nWe couldn't collect $10.00 for invoice in_1Pgc6tB7WZ01zgkWu9fdqL6I. Please update your card here: the payment page of invoice in_1Pgc6tB7WZ01zgkWu9fdqL6I\n\nThank you!";

#[tokio::test]
async fn a_language_model_may_improve_the_wording_and_nothing_else() {
    let (action, calls) = drafted_card_update("polite").await;
    assert!(
        calls >= 2,
        "the body and the DM's text were offered: {calls}"
    );
    assert_eq!(action["body"], format!("Hello! {RULE_BODY}"));
    assert_eq!(
        action["to"],
        serde_json::json!({"stripe_customer": "cus_QXg1o8vcGmoR32"})
    );
    assert_eq!(action["template"], "card_update");
    assert_eq!(action["subject"], "Your payment didn't go through");
}

#[tokio::test]
async fn a_rewrite_that_changes_an_amount_is_thrown_away() {
    let (action, calls) = drafted_card_update("liar").await;
    assert!(calls >= 1);
    assert_eq!(action["body"], RULE_BODY);
}

#[tokio::test]
async fn a_slow_language_model_leaves_the_rules_text() {
    let (action, calls) = drafted_card_update("slow").await;
    assert!(calls >= 1);
    assert_eq!(action["body"], RULE_BODY);
}

#[tokio::test]
async fn the_execops_slash_command_answers_with_the_top_pending_proposals() {
    let app = TestApp::spawn_with(configured()).await;
    send(&app, &fixture("stripe/invoice.payment_failed.json")).await;
    settle(&app).await;
    // Only a member linked to a person who may read is told.
    let body = send(&app, &fixture("slack/commands/execops.txt")).await;
    assert_eq!(body["response_type"], "ephemeral");
    let text = body["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("not linked") && !text.contains("Today's Moves"),
        "{text}"
    );
    crate::api::person(&app, "roadrunner@example.com", Role::Viewer).await;
    crate::slack_approvals::link(&app, "roadrunner@example.com", "U2CERLKJA").await;
    let body = send(&app, &fixture("slack/commands/execops.txt")).await;
    assert_eq!(body["response_type"], "ephemeral");
    let text = body["text"].as_str().unwrap_or_default();
    assert!(text.starts_with("Today's Moves (2 pending):"), "{text}");
    assert!(
        text.contains(
            "1. [money] Email customer cus_QXg1o8vcGmoR32 a card-update link (high, score 56)"
        ),
        "{text}"
    );
    // Read only: nothing was decided or drafted by asking.
    settle(&app).await;
    let (_, total) = todays_moves(app.store.pool(), 10).await.expect("moves");
    assert_eq!(total, 2);
    app.stop().await;
}

pub(crate) async fn feed(app: &TestApp, kind: &str, id: &str, data: Value) {
    let body = serde_json::json!({ "type": kind, "timestamp": app.clock.now().to_rfc3339(), "data": data });
    let sender = execops::send::Sender::Standard {
        source: "bank".into(),
    };
    let mut delivery = execops::send::sign(
        &sender,
        serde_json::to_vec(&body).expect("json"),
        &configured(),
        &format!("http://{}", app.addr),
        app.clock.now(),
    )
    .expect("signs");
    // One webhook-id per event, as a sender gives.
    let key = execops::ingest::standard::decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .expect("the key");
    let ts = app.clock.now().timestamp();
    delivery.headers.retain(|(n, _)| !n.starts_with("webhook-"));
    delivery.headers.push(("webhook-id".into(), id.into()));
    delivery
        .headers
        .push(("webhook-timestamp".into(), ts.to_string()));
    delivery.headers.push((
        "webhook-signature".into(),
        execops::ingest::standard::sign(&key, id, ts, &delivery.body),
    ));
    let (status, answer) = post(app, &delivery).await;
    assert_eq!(status, 200, "{answer}");
}

pub(crate) fn month_ago(months: u32) -> String {
    let today = Utc::now().date_naive();
    let first = chrono::NaiveDate::from_ymd_opt(
        chrono::Datelike::year(&today),
        chrono::Datelike::month(&today),
        1,
    )
    .expect("a date");
    (first - chrono::Months::new(months))
        .format("%Y-%m-%d")
        .to_string()
}

#[tokio::test]
async fn spend_more_than_ten_percent_over_the_trailing_average_asks_for_a_review() {
    let app = TestApp::spawn_with(configured()).await;
    for months in 1..=3 {
        feed(&app, "expense.recorded", &format!("exp_{months}"), serde_json::json!({
            "vendor": "Acme Cloud", "amount": 100_000, "currency": "usd", "date": month_ago(months),
        }))
        .await;
    }
    // 10% over is still fine…
    feed(
        &app,
        "expense.recorded",
        "exp_now_1",
        serde_json::json!({
            "vendor": "Acme Cloud", "amount": 110_000, "currency": "usd", "date": month_ago(0),
        }),
    )
    .await;
    settle(&app).await;
    assert!(statuses(&app, "spend:").await.is_empty());
    // …one more cent is not.
    feed(
        &app,
        "expense.recorded",
        "exp_now_2",
        serde_json::json!({
            "vendor": "Acme Cloud", "amount": 1, "currency": "usd", "date": month_ago(0),
        }),
    )
    .await;
    settle(&app).await;
    let (title, reasoning): (String, String) = sqlx::query_as(
        "SELECT title, reasoning FROM proposal_summaries WHERE subject_key LIKE 'spend:acme cloud:%'",
    )
    .fetch_one(app.store.pool())
    .await
    .expect("a spend review");
    assert_eq!(title, "Review spend with Acme Cloud");
    assert!(reasoning.contains("($1,100.01) is 10% over"), "{reasoning}");
    app.stop().await;
}

#[tokio::test]
async fn runway_under_the_floor_is_flagged_and_revised_as_cash_changes() {
    let app = TestApp::spawn_with(configured()).await;
    for months in 1..=3 {
        feed(&app, "expense.recorded", &format!("payroll_{months}"), serde_json::json!({
            "vendor": "Payroll", "amount": 2_000_000, "currency": "usd", "date": month_ago(months),
        }))
        .await;
    }
    // $200,000 at $20,000 a month is 10 months: fine.
    feed(
        &app,
        "balance.updated",
        "bal_1",
        serde_json::json!({"amount": 20_000_000, "currency": "usd"}),
    )
    .await;
    settle(&app).await;
    assert!(statuses(&app, "company:runway").await.is_empty());
    // $50,000 is 2.5 months.
    feed(
        &app,
        "balance.updated",
        "bal_2",
        serde_json::json!({"amount": 5_000_000, "currency": "usd"}),
    )
    .await;
    settle(&app).await;
    let (title, reasoning, urgency): (String, String, String) = sqlx::query_as(
        "SELECT title, reasoning, urgency FROM proposal_summaries WHERE subject_key = 'company:runway'",
    )
    .fetch_one(app.store.pool())
    .await
    .expect("a runway alert");
    assert_eq!(title, "Runway below 6 months");
    assert!(
        reasoning.contains("lasts 2.5 months") && reasoning.contains("$20,000.00"),
        "{reasoning}"
    );
    assert_eq!(urgency, "high");
    // Less cash: the same proposal, revised.
    feed(
        &app,
        "balance.updated",
        "bal_3",
        serde_json::json!({"amount": 3_000_000, "currency": "usd"}),
    )
    .await;
    settle(&app).await;
    let rows = statuses(&app, "company:runway").await;
    assert_eq!(
        rows,
        [("company:runway".to_string(), "pending".to_string(), 2)]
    );
    app.stop().await;
}

#[tokio::test]
async fn the_inbox_is_newest_first_and_filters_by_vertical_and_urgency() {
    use execops::projections::proposals::{inbox, InboxFilter};
    let app = TestApp::spawn_with(configured()).await;
    for name in [
        "stripe/invoice.payment_failed.json",
        "github/workflow_run.completed.failure.json",
        "stripe/charge.dispute.created.json",
    ] {
        send(&app, &fixture(name)).await;
        settle(&app).await;
    }
    let pool = app.store.pool();
    let all = inbox(
        pool,
        &InboxFilter {
            limit: 50,
            ..Default::default()
        },
    )
    .await
    .expect("inbox");
    assert_eq!(all.len(), 5);
    assert!(
        all.windows(2).all(|w| w[0].created_at >= w[1].created_at),
        "newest first"
    );
    assert!(all[0].title.starts_with("Prepare dispute evidence"));
    let engineering = inbox(
        pool,
        &InboxFilter {
            vertical: Some("engineering".into()),
            limit: 50,
            ..Default::default()
        },
    )
    .await
    .expect("inbox");
    assert_eq!(engineering.len(), 2);
    assert!(engineering.iter().all(|p| p.vertical == "engineering"));
    let critical = inbox(
        pool,
        &InboxFilter {
            urgency: Some("critical".into()),
            limit: 50,
            ..Default::default()
        },
    )
    .await
    .expect("inbox");
    assert_eq!(critical.len(), 1);
    assert_eq!(critical[0].action_type, "slack.post_message");
    app.stop().await;
}
