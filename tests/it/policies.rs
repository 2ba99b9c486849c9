//! Signals to proposals, end to end: each fixture is sent signed through the webhook, the
//! router drafts what the policies call for, and the projections show it.

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
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
        for name in ["router", "proposals"] {
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

async fn send(app: &TestApp, path: &Path) -> Value {
    let delivery = prepare(
        path,
        &configured(),
        &format!("http://{}", app.addr),
        Utc::now(),
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

#[tokio::test]
async fn every_fixture_drafts_exactly_the_proposals_its_policies_call_for() {
    let app = TestApp::spawn_with(configured()).await;
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
    let expected = include_str!("policies.expected.txt")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>();
    assert_eq!(got, expected, "\n--- got ---\n{}\n", got.join("\n"));
    app.stop().await;
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// A fixture with some fields changed, signed and sent as its sender would.
async fn send_changed(app: &TestApp, name: &str, change: impl FnOnce(&mut Value)) -> Value {
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
        Utc::now(),
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
