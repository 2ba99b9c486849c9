//! `execops audit show` and `execops audit verify` against real databases: a proposal's
//! story from a live run and from a recorded scenario, and a tampered audit log caught
//! every way it can be tampered with.

use std::process::{Command, Output};
use std::time::Duration;

use execops::domain::Role;
use execops::store::subscription::backlog;
use serde_json::{json, Value};

use crate::api::person;
use crate::common::{eventually, TestApp};
use crate::execution::{approve, draft, wait_for, FakeStripe, Fakes};
use crate::webhooks::send_fixture;

pub fn execops(database_url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_execops"))
        .env("DATABASE_URL", database_url)
        .args(args)
        .output()
        .expect("execops runs")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Waits until every projection has applied everything in the log.
pub async fn projections_idle(pool: &sqlx::PgPool) {
    eventually(Duration::from_secs(30), "the projections idle", || async {
        for projection in execops::ops::replay::PROJECTIONS {
            match backlog(pool, projection.name).await {
                Ok(b) if b.events == 0 => {}
                _ => return false,
            }
        }
        true
    })
    .await;
}

/// A failed invoice drafts a retry; a person dry-runs and approves it; Stripe fails once,
/// then the retry succeeds; the invoice is paid. Returns the retry's proposal id.
async fn failed_invoice_recovered(app: &TestApp) -> String {
    use crate::pages::{csrf_of, form, page, sign_in};
    let token = person(app, "ada@example.com", Role::Approver).await;
    crate::common::enable_writes(&app.store).await;
    // No retry scheduled by Stripe: the case where a retry is proposed.
    let delivery =
        crate::policies::send_changed(app, "stripe/invoice.payment_failed.json", |json| {
            json["data"]["object"]["next_payment_attempt"] = Value::Null;
        })
        .await;
    crate::policies::settle(app).await;
    let inbound = delivery["id"].as_str().expect("an inbound id").to_string();
    let proposals = execops::projections::proposals::from_signal(app.store.pool(), &inbound)
        .await
        .expect("proposals");
    let id = proposals
        .iter()
        .find(|p| p.action_type == "stripe.retry_invoice")
        .map(|p| p.id.clone())
        .expect("a retry was drafted");
    let cookie = sign_in(app, "ada@example.com").await;
    let (_, html, _) = page(app, Some(&cookie), &format!("/proposals/{id}")).await;
    let preview = format!("/proposals/{id}/preview");
    let (status, _, _) = form(app, Some(&cookie), &preview, &[("csrf", &csrf_of(&html))]).await;
    assert_eq!(status, 303);
    approve(app, &token, &id).await;
    wait_for(app, &id, "ExecutionSucceeded").await;
    send_fixture(app, "stripe/invoice.paid.json").await;
    wait_for(app, &id, "OutcomeRecorded").await;
    id
}

#[tokio::test]
async fn a_proposals_story_runs_from_its_signal_through_every_attempt_to_its_outcome() {
    let fakes = Fakes::start().await;
    fakes.stripe_answers(FakeStripe::failing(1)).await;
    let app = TestApp::spawn_with(fakes.config(&[])).await;
    let id = failed_invoice_recovered(&app).await;

    let out = execops(&app.database_url, &["audit", "show", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    if let Ok(path) = std::env::var("RECORD_SCENARIO") {
        let export = execops(&app.database_url, &["events", "export"]);
        let keep: Vec<&str> = std::str::from_utf8(&export.stdout)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"aggregate_type\":\"Inbound\"") || l.contains(&id))
            .collect();
        std::fs::write(&path, keep.join("\n") + "\n").expect("written");
        eprintln!("PROPOSAL {id}");
    }
    let text = stdout(&out);
    let mut rest = text.as_str();
    for expected in [
        &format!("Proposal {id}"),
        "stripe.retry_invoice · money · now succeeded",
        "signal invoice.payment_failed evt_1PgcE0B7WZ01zgkWInvPFail from stripe",
        "drafted \"",
        "dry run by ada@example.com: nothing sent",
        "approved by ada@example.com (approver)",
        "attempt 1 started",
        "idempotency_key: ",
        "attempt 1 failed, will retry",
        "attempt 2 started",
        "attempt 2 succeeded",
        "outcome: ",
    ] {
        let at = rest
            .find(expected)
            .unwrap_or_else(|| panic!("{expected:?} missing or out of order in:\n{text}"));
        rest = &rest[at + expected.len()..];
    }

    let out = execops(&app.database_url, &["audit", "show", &id, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let story: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let steps = story["steps"].as_array().expect("steps");
    let kinds: Vec<&str> = steps
        .iter()
        .map(|s| s["event_type"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        kinds,
        [
            "Received",
            "Drafted",
            "Previewed",
            "Approved",
            "ExecutionStarted",
            "ExecutionFailed",
            "ExecutionStarted",
            "ExecutionSucceeded",
            "OutcomeRecorded"
        ]
    );
    let approved = &steps[3];
    assert_eq!(approved["actor"], "ada@example.com");
    assert_eq!(approved["role"], "approver");
    let started = &steps[4];
    assert_eq!(
        started["details"]["request"]["action_type"],
        "stripe.retry_invoice"
    );
    assert_eq!(
        started["details"]["request"]["action"]["invoice"],
        "in_1Pgc6tB7WZ01zgkWu9fdqL6I"
    );
    let mut elapsed = 0;
    for step in steps {
        let after = step["after_ms"].as_i64().expect("a delay");
        assert!(after >= 0);
        elapsed += after;
        assert_eq!(step["elapsed_ms"].as_i64(), Some(elapsed), "{step}");
    }
    app.stop().await;
}

/// Loads a recorded history (the NDJSON of `execops events export`) into a fresh database.
async fn load_history(pool: &sqlx::PgPool, ndjson: &str) {
    let mut tx = pool.begin().await.expect("a transaction");
    for line in ndjson.lines().filter(|l| !l.trim().is_empty()) {
        let event: Value = serde_json::from_str(line).expect("an NDJSON line");
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
               event_version, payload, metadata, recorded_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::timestamptz)",
        )
        .bind(event["aggregate_type"].as_str())
        .bind(event["aggregate_id"].as_str())
        .bind(event["sequence"].as_i64())
        .bind(event["event_type"].as_str())
        .bind(event["event_version"].as_str())
        .bind(&event["payload"])
        .bind(&event["metadata"])
        .bind(event["recorded_at"].as_str())
        .execute(&mut *tx)
        .await
        .expect("the event loads");
    }
    tx.commit().await.expect("committed");
}

const SCENARIO: &str = include_str!("../../fixtures/scenarios/failed-invoice-recovered.ndjson");
const SCENARIO_PROPOSAL: &str = "1b216d66-86a4-5def-8b08-b2e081d10419";

#[tokio::test]
async fn audit_show_of_the_recorded_scenario_matches_the_expected_text_and_json() {
    let db = execops::store::testing::TestDatabase::new()
        .await
        .expect("a database");
    load_history(&db.pool, SCENARIO).await;

    let text = execops(&db.url, &["audit", "show", SCENARIO_PROPOSAL]);
    assert!(text.status.success(), "{}", stderr(&text));
    let json_out = execops(&db.url, &["audit", "show", SCENARIO_PROPOSAL, "--json"]);
    assert!(json_out.status.success(), "{}", stderr(&json_out));
    // After a deliberate change of the output: EXECOPS_BLESS=1 rewrites the expected files.
    if std::env::var_os("EXECOPS_BLESS").is_some() {
        let here = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/");
        std::fs::write(format!("{here}audit_show.expected.txt"), &text.stdout).expect("written");
        std::fs::write(format!("{here}audit_show.expected.json"), &json_out.stdout)
            .expect("written");
    }
    assert_eq!(
        stdout(&text),
        include_str!("audit_show.expected.txt"),
        "\n--- got ---\n{}",
        stdout(&text)
    );

    let got: Value = serde_json::from_slice(&json_out.stdout).expect("JSON");
    let expected: Value =
        serde_json::from_str(include_str!("audit_show.expected.json")).expect("JSON");
    assert_eq!(got, expected, "\n--- got ---\n{}", stdout(&json_out));
}

#[tokio::test]
async fn audit_show_of_an_unknown_proposal_says_so_and_fails() {
    let db = execops::store::testing::TestDatabase::new()
        .await
        .expect("a database");
    let out = execops(&db.url, &["audit", "show", "no-such-proposal"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no proposal no-such-proposal"),
        "{}",
        stderr(&out)
    );
}

/// A few proposals decided and undecided, people and tokens: an audit log of some length.
async fn some_history(app: &TestApp) {
    let token = person(app, "ada@example.com", Role::Approver).await;
    person(app, "bob@example.com", Role::Viewer).await;
    crate::common::enable_writes(&app.store).await;
    let mut ids = Vec::new();
    for name in ["one", "two", "three"] {
        ids.push(
            draft(
                app,
                name,
                "webhook.post",
                json!({"target": "crm", "body": {"n": name}}),
            )
            .await,
        );
    }
    crate::policies::settle(app).await;
    let rejected = app
        .client
        .post(app.url(&format!("/api/v1/proposals/{}/reject", ids[1])))
        .bearer_auth(&token)
        .json(&json!({"reason": "not now"}))
        .send()
        .await
        .expect("answers");
    assert_eq!(rejected.status(), 200);
    approve(app, &token, &ids[2]).await;
    wait_for(app, &ids[2], "ExecutionFailed").await;
    projections_idle(app.store.pool()).await;
}

#[tokio::test]
async fn audit_verify_names_the_first_row_altered_removed_reordered_or_forged() {
    // (what is done to the log, SQL, what verify must say)
    let cases: &[(&str, &str, &str)] = &[
        (
            "an edited actor",
            "UPDATE audit_log SET actor = 'mallory@example.com' WHERE seq = 4",
            "audit chain broken at row 4: altered",
        ),
        (
            "an edited status",
            "UPDATE audit_log SET to_status = 'approved' WHERE seq = 5",
            "audit chain broken at row 5: altered",
        ),
        (
            "an edited row with its hash recomputed the same way",
            "UPDATE audit_log SET actor = 'mallory@example.com', \
               hash = encode(sha256(convert_to(prev_hash || 'x', 'UTF8')), 'hex') WHERE seq = 3",
            "audit chain broken at row 3: altered",
        ),
        (
            "a deleted row",
            "DELETE FROM audit_log WHERE seq = 4",
            "audit chain broken at row 4: removed",
        ),
        (
            "the last row deleted",
            "DELETE FROM audit_log WHERE seq = (SELECT max(seq) FROM audit_log)",
            ": removed",
        ),
        (
            "two rows swapped",
            "UPDATE audit_log SET seq = seq + 1000000 WHERE seq IN (3, 4); \
             UPDATE audit_log SET seq = 7 - (seq - 1000000) WHERE seq > 1000000",
            "audit chain broken at row 3: reordered",
        ),
        (
            "a forged row added",
            "INSERT INTO audit_log SELECT seq + 1, transaction_id, position + 1000000, recorded_at, \
               aggregate_type, aggregate_id, sequence + 1, event_type, actor, role, from_status, \
               to_status, event_digest, hash, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
            "the row matches no event",
        ),
        (
            "an event rewritten under the log",
            "ALTER TABLE events DISABLE TRIGGER USER; \
             UPDATE events SET payload = replace(payload::text, 'not now', 'fine')::json \
               WHERE event_type = 'Rejected'; \
             ALTER TABLE events ENABLE TRIGGER USER",
            "event_digest",
        ),
    ];
    for (what, sql, expected) in cases {
        let fakes = Fakes::start().await;
        let app = TestApp::spawn_with(fakes.config(&[])).await;
        some_history(&app).await;
        let url = app.database_url.clone();
        let pool = app.store.pool().clone();
        app.stop().await;

        let before = execops(&url, &["audit", "verify"]);
        assert!(before.status.success(), "{what}: {}", stdout(&before));
        assert!(
            stdout(&before).starts_with("audit chain intact: "),
            "{what}"
        );
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log")
            .fetch_one(&pool)
            .await
            .expect("rows");
        assert!(rows >= 8, "{what}: only {rows} rows");

        sqlx::raw_sql(sql).execute(&pool).await.expect("tampered");
        let after = execops(&url, &["audit", "verify"]);
        assert!(!after.status.success(), "{what} went unnoticed");
        assert!(
            stdout(&after).contains(expected),
            "{what}: expected {expected:?} in\n{}",
            stdout(&after)
        );
        assert!(
            stderr(&after).contains("the audit log does not match the events"),
            "{what}: {}",
            stderr(&after)
        );
    }
}
