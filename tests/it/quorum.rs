//! Quorums, self-approval on every path, expiry and escalation, through the real API and
//! pages with real users: an approval short of the quorum leaves a proposal pending, the
//! same person never counts twice, and deadlines are settled by the next event or read,
//! with no timer, and recorded in the audit log.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use execops::domain::{ApprovalTerms, ProposalCommand, Role};
use execops::store::subscription::backlog;
use serde_json::{json, Value};

use crate::api::person;
use crate::common::{config, eventually, TestApp};
use crate::execution::{events_of, payload_of, proposal, wait_for, Fakes};
use crate::pages::{csrf_of, form, page, sign_in};
use crate::policies::settle;
use crate::webhooks::{send_fixture, SECRETS};

async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = match method {
        "GET" => app.client.get(app.url(path)),
        _ => app.client.post(app.url(path)),
    }
    .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("an answer");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn approve(app: &TestApp, token: &str, id: &str) -> (u16, Value) {
    call(
        app,
        "POST",
        &format!("/api/v1/proposals/{id}/approve"),
        token,
        Some(json!({"comment": "go", "payload_hash": crate::api::shown(app, id).await})),
    )
    .await
}

/// The settings of the webhook tests plus `extra`.
fn with(extra: &[(&str, &str)]) -> execops::config::Config {
    let mut pairs: Vec<(&str, &str)> = SECRETS.to_vec();
    pairs.extend_from_slice(extra);
    config(&pairs)
}

async fn proposal_of(app: &TestApp, action_type: &str) -> String {
    sqlx::query_scalar("SELECT id FROM proposal_summaries WHERE action_type = $1")
        .bind(action_type)
        .fetch_one(app.store.pool())
        .await
        .expect("a proposal of that type")
}

async fn audit_rows(app: &TestApp, id: &str) -> Vec<(String, String, Option<String>)> {
    sqlx::query_as(
        "SELECT event_type, actor, to_status FROM audit_log WHERE aggregate_id = $1 ORDER BY seq",
    )
    .bind(id)
    .fetch_all(app.store.pool())
    .await
    .expect("audit rows")
}

async fn wait_for_audit(app: &TestApp, id: &str, event_type: &str) {
    let what = format!("the audit log to show {event_type} of {id}");
    eventually(Duration::from_secs(20), &what, || async {
        audit_rows(app, id)
            .await
            .iter()
            .any(|(e, _, _)| e == event_type)
    })
    .await;
}

#[tokio::test]
async fn a_quorum_of_two_takes_two_distinct_approvers_and_then_the_executor_runs_it() {
    let fakes = Fakes::start().await;
    fakes.slack_accepts().await;
    let app =
        TestApp::spawn_with(fakes.config(&[("EXECOPS_QUORUM", "slack.post_message:2")])).await;
    let ada = person(&app, "ada@example.com", Role::Approver).await;
    let bob = person(&app, "bob@example.com", Role::Admin).await;
    // A failed build: the router drafts an issue and a Slack post, the post on a quorum of 2.
    send_fixture(&app, "github/workflow_run.completed.failure.json").await;
    settle(&app).await;
    let id = proposal_of(&app, "slack.post_message").await;
    let issue = proposal_of(&app, "github.create_issue").await;

    let (status, one) = approve(&app, &ada, &id).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["status"], "pending");
    assert_eq!(
        (one["approvals"].clone(), one["approvals_needed"].clone()),
        (json!(1), json!(2))
    );
    assert_eq!(one["approved_by"], json!(["ada@example.com"]));

    let (status, again) = approve(&app, &ada, &id).await;
    assert_eq!(
        (status, again["error"].as_str()),
        (409, Some("already_approved")),
        "{again}"
    );

    settle(&app).await;
    let (_, shown) = call(&app, "GET", &format!("/api/v1/proposals/{id}"), &bob, None).await;
    assert_eq!(shown["status"], "pending");
    assert_eq!(shown["approvals"], 1);
    assert_eq!(shown["approvals_needed"], 2);
    let (_, other) = call(
        &app,
        "GET",
        &format!("/api/v1/proposals/{issue}"),
        &bob,
        None,
    )
    .await;
    assert_eq!(other["approvals_needed"], 1, "only Slack posts take two");

    let (status, two) = approve(&app, &bob, &id).await;
    assert_eq!(status, 200, "{two}");
    assert_eq!(two["status"], "approved");
    assert_eq!(two["approvals"], 2);
    assert_eq!(
        two["approved_by"],
        json!(["ada@example.com", "bob@example.com"])
    );

    let events = wait_for(&app, &id, "ExecutionSucceeded").await;
    assert_eq!(
        events[..4],
        ["Drafted", "ApprovalAdded", "Approved", "ExecutionStarted"]
    );
    assert_eq!(fakes.slack_posts().await.len(), 1);

    wait_for_audit(&app, &id, "ExecutionSucceeded").await;
    let rows = audit_rows(&app, &id).await;
    assert_eq!(
        rows[1],
        (
            "ApprovalAdded".to_string(),
            "ada@example.com".to_string(),
            Some("pending".to_string())
        )
    );
    assert_eq!(rows[2].0, "Approved");
    let story = execops::ops::audit::story(app.store.pool(), &id)
        .await
        .expect("a story");
    let text = execops::ops::audit::render_text(&story);
    assert!(
        text.contains("approval 1 of 2 by ada@example.com (approver); still pending")
            && text
                .contains("approved by bob@example.com (admin), approval 2 of 2: quorum reached"),
        "{text}"
    );
    app.stop().await;
}

#[tokio::test]
async fn by_default_one_rejection_ends_a_proposal_waiting_for_its_quorum() {
    let app = TestApp::spawn_with(with(&[("EXECOPS_QUORUM", "*:2")])).await;
    let ada = person(&app, "ada@example.com", Role::Approver).await;
    let bob = person(&app, "bob@example.com", Role::Approver).await;
    send_fixture(&app, "stripe/invoice.payment_failed.json").await;
    settle(&app).await;
    let id = proposal_of(&app, "email.send").await;
    let (status, one) = approve(&app, &ada, &id).await;
    assert_eq!((status, one["status"].as_str()), (200, Some("pending")));
    let (status, no) = call(
        &app,
        "POST",
        &format!("/api/v1/proposals/{id}/reject"),
        &bob,
        Some(json!({"reason": "not this customer"})),
    )
    .await;
    assert_eq!(
        (status, no["status"].as_str()),
        (200, Some("rejected")),
        "{no}"
    );
    let (status, late) = approve(&app, &bob, &id).await;
    assert_eq!(status, 409, "{late}");
    assert_eq!(
        events_of(&app, &id).await,
        ["Drafted", "ApprovalAdded", "Rejected"]
    );
    app.stop().await;
}

#[tokio::test]
async fn the_requester_may_not_approve_through_the_api_or_the_page() {
    let app = TestApp::spawn_with(with(&[("EXECOPS_QUORUM", "test.action:2")])).await;
    let ada = person(&app, "ada@example.com", Role::Admin).await;
    let bob = person(&app, "bob@example.com", Role::Approver).await;
    let mut draft = proposal("asked-by-ada", "test.action", json!({"n": 1}));
    draft.requested_by = Some("ada@example.com".into());
    draft.terms.approvals_needed = 2;
    let id = draft.id.to_string();
    app.store
        .proposal(&id, ProposalCommand::Draft(draft), HashMap::new())
        .await
        .expect("drafted");
    settle(&app).await;

    let (status, body) = approve(&app, &ada, &id).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );

    let cookie = sign_in(&app, "ada@example.com").await;
    let (_, html, _) = page(&app, Some(&cookie), &format!("/proposals/{id}")).await;
    let (status, _, html) = form(
        &app,
        Some(&cookie),
        &format!("/proposals/{id}/approve"),
        &[("csrf", &csrf_of(&html))],
    )
    .await;
    assert_eq!(status, 403, "{html}");
    assert!(html.contains("they requested"), "{html}");

    // Another approver's approval counts; the requester's never did.
    let (status, body) = approve(&app, &bob, &id).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("pending")));
    assert_eq!(body["approved_by"], json!(["bob@example.com"]));
    assert_eq!(events_of(&app, &id).await, ["Drafted", "ApprovalAdded"]);

    settle(&app).await;
    let cookie = sign_in(&app, "bob@example.com").await;
    let (_, html, _) = page(&app, Some(&cookie), &format!("/proposals/{id}")).await;
    assert!(html.contains("1 of 2 approvals: bob@example.com"), "{html}");
    let (_, inbox, _) = page(&app, Some(&cookie), "/inbox").await;
    assert!(
        inbox.contains("1 of 2 approvals: bob@example.com"),
        "{inbox}"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_router_records_who_triggered_a_proposal() {
    let app = TestApp::spawn_with(with(&[])).await;
    send_fixture(&app, "github/workflow_run.completed.failure.json").await;
    settle(&app).await;
    let id = proposal_of(&app, "github.create_issue").await;
    let drafted: Value = sqlx::query_scalar(
        "SELECT payload FROM events WHERE aggregate_id = $1 AND event_type = 'Drafted'",
    )
    .bind(&id)
    .fetch_one(app.store.pool())
    .await
    .expect("the draft");
    assert_eq!(drafted["Drafted"]["requested_by"], "github:Codertocat");
    app.stop().await;
}

/// The deadlines the router stamped into proposal `id`'s draft.
async fn terms_of(app: &TestApp, id: &str) -> ApprovalTerms {
    serde_json::from_value(payload_of(app, id, "Drafted").await).expect("the draft's terms")
}

/// Sleeps until a little after `at`, so that whatever was due then is due now.
async fn sleep_past(at: DateTime<Utc>) {
    let wait = (at - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(300);
    tokio::time::sleep(wait).await;
}

/// Waits until the deadlines subscriber has looked at every event so far.
async fn deadlines_idle(app: &TestApp) {
    eventually(
        Duration::from_secs(20),
        "the deadlines subscriber idle",
        || async { matches!(backlog(app.store.pool(), "deadlines").await, Ok(b) if b.events == 0) },
    )
    .await;
}

// Levels and expiry seconds apart, so that a loaded machine's delays between an event and
// its settling never carry one step into the next.
const LADDER: [(&str, &str); 3] = [
    ("EXECOPS_ESCALATE_AFTER", "3s"),
    ("EXECOPS_PROPOSAL_TTL", "9s"),
    (
        "EXECOPS_ESCALATION_LADDER",
        "lead@example.com; cfo@example.com, ceo@example.com",
    ),
];

#[tokio::test]
async fn escalation_and_expiry_happen_on_the_next_event_after_their_time() {
    let app = TestApp::spawn_with(with(&LADDER)).await;
    send_fixture(&app, "stripe/invoice.payment_failed.json").await;
    settle(&app).await;
    let id = proposal_of(&app, "email.send").await;
    let terms = terms_of(&app, &id).await;
    deadlines_idle(&app).await;
    sleep_past(terms.escalations[0].at).await;
    assert_eq!(
        events_of(&app, &id).await,
        ["Drafted"],
        "nothing happens without an event"
    );

    // Any event will do: a ping.
    send_fixture(&app, "github/ping.json").await;
    wait_for(&app, &id, "Escalated").await;
    let escalated: Value = sqlx::query_scalar(
        "SELECT payload FROM events WHERE aggregate_id = $1 AND event_type = 'Escalated'",
    )
    .bind(&id)
    .fetch_one(app.store.pool())
    .await
    .expect("escalated");
    assert_eq!(escalated["Escalated"]["level"], 1);
    assert_eq!(escalated["Escalated"]["to"], json!(["lead@example.com"]));

    sleep_past(terms.expires_at.expect("an expiry")).await;
    send_fixture(&app, "github/push.json").await;
    wait_for(&app, &id, "Expired").await;
    let events = events_of(&app, &id).await;
    assert_eq!(
        events.iter().filter(|e| *e == "Escalated").count(),
        1,
        "an expired proposal is not escalated further: {events:?}"
    );
    assert_eq!(events.last().map(String::as_str), Some("Expired"));

    wait_for_audit(&app, &id, "Expired").await;
    let rows = audit_rows(&app, &id).await;
    assert!(rows.contains(&(
        "Escalated".into(),
        "deadlines".into(),
        Some("pending".into())
    )));
    assert!(rows.contains(&("Expired".into(), "deadlines".into(), Some("expired".into()))));
    let text = execops::ops::audit::render_text(
        &execops::ops::audit::story(app.store.pool(), &id)
            .await
            .expect("a story"),
    );
    assert!(
        text.contains("escalated to level 1: lead@example.com")
            && text.contains("expired undecided"),
        "{text}"
    );
    app.stop().await;
}

#[tokio::test]
async fn escalation_and_expiry_happen_on_the_next_read_and_an_expired_proposal_is_not_decided() {
    let app = TestApp::spawn_with(with(&LADDER)).await;
    let ada = person(&app, "ada@example.com", Role::Approver).await;
    let cookie = sign_in(&app, "ada@example.com").await;
    send_fixture(&app, "stripe/invoice.payment_failed.json").await;
    settle(&app).await;
    let id = proposal_of(&app, "email.send").await;
    let terms = terms_of(&app, &id).await;
    sleep_past(terms.escalations[0].at).await;

    let (status, shown) = call(&app, "GET", &format!("/api/v1/proposals/{id}"), &ada, None).await;
    assert_eq!(status, 200);
    assert_eq!(shown["status"], "pending");
    assert_eq!(shown["escalation_level"], 1, "{shown}");
    assert!(events_of(&app, &id)
        .await
        .contains(&"Escalated".to_string()));

    let (_, inbox, _) = page(&app, Some(&cookie), "/inbox").await;
    assert!(
        inbox.contains(&id),
        "still pending before its expiry: {inbox}"
    );

    sleep_past(terms.expires_at.expect("an expiry")).await;
    // Listed no more: settled on the read, before the projection catches up.
    let (status, pending) = call(&app, "GET", "/api/v1/proposals?status=pending", &ada, None).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = pending["items"]
        .as_array()
        .map(|items| items.iter().filter_map(|p| p["id"].as_str()).collect())
        .unwrap_or_default();
    assert!(!ids.contains(&id.as_str()), "{pending}");
    assert_eq!(
        events_of(&app, &id).await.last().map(String::as_str),
        Some("Expired")
    );
    let (_, inbox, _) = page(&app, Some(&cookie), "/inbox").await;
    assert!(!inbox.contains(&id), "{inbox}");

    let (status, body) = approve(&app, &ada, &id).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("expired")),
        "{body}"
    );
    wait_for_audit(&app, &id, "Expired").await;
    app.stop().await;
}

#[tokio::test]
async fn a_decision_on_an_overdue_proposal_expires_it_first() {
    let app = TestApp::spawn_with(with(&[("EXECOPS_PROPOSAL_TTL", "1s")])).await;
    let ada = person(&app, "ada@example.com", Role::Approver).await;
    send_fixture(&app, "stripe/invoice.payment_failed.json").await;
    settle(&app).await;
    let id = proposal_of(&app, "email.send").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, body) = approve(&app, &ada, &id).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("expired")),
        "{body}"
    );
    assert_eq!(events_of(&app, &id).await, ["Drafted", "Expired"]);
    app.stop().await;
}

#[tokio::test]
async fn bad_approval_settings_stop_serve_with_the_key_named() {
    let cases = [
        ("EXECOPS_QUORUM", "stripe.refund=2"),
        ("EXECOPS_QUORUM_REJECTION", "sometimes"),
        ("EXECOPS_PROPOSAL_TTL", "72"),
        ("EXECOPS_ESCALATE_AFTER", "soon"),
        ("EXECOPS_ESCALATION_LADDER", "lead"),
    ];
    for (key, value) in cases {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_execops"))
            .arg("serve")
            .env(key, value)
            .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
            .env("EXECOPS_ADDR", "127.0.0.1:0")
            .output()
            .await
            .expect("execops runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{key}={value} was accepted");
        assert!(
            stderr.contains(&format!("{key}:")),
            "{key}={value}: {stderr}"
        );
    }
}

/// An amount rule applies to what the router drafts: a failed invoice's retry carries the
/// amount it would collect, so `amount>=` sets its quorum, and a smaller threshold than the
/// invoice's amount due asks for two approvers where the other proposals need one.
#[tokio::test]
async fn an_amount_rule_sets_the_quorum_of_a_retry_drafted_from_a_failed_invoice() {
    let app = TestApp::spawn_with(with(&[("EXECOPS_QUORUM", "amount>=1000:2")])).await;
    // Stripe has given up retrying: a retry is drafted.
    crate::policies::send_changed(&app, "stripe/invoice.payment_failed.json", |json| {
        json["data"]["object"]["next_payment_attempt"] = Value::Null;
    })
    .await;
    settle(&app).await;
    let needed: Vec<(String, i32)> = sqlx::query_as(
        "SELECT action_type, approvals_needed FROM proposal_summaries ORDER BY action_type",
    )
    .fetch_all(app.store.pool())
    .await
    .expect("proposals");
    assert!(
        needed.contains(&("stripe.retry_invoice".to_string(), 2)),
        "{needed:?}"
    );
    assert!(
        needed
            .iter()
            .filter(|(t, _)| t != "stripe.retry_invoice")
            .all(|(_, n)| *n == 1),
        "{needed:?}"
    );
    let id = proposal_of(&app, "stripe.retry_invoice").await;
    let drafted = crate::execution::payload_of(&app, &id, "Drafted").await;
    assert_eq!(drafted["action"]["amount_cents"], 1000, "{drafted}");
    app.stop().await;
}

#[tokio::test]
async fn a_revision_to_a_larger_amount_needs_the_larger_quorum() {
    let app = TestApp::spawn_with(with(&[("EXECOPS_QUORUM", "amount>=5000:2")])).await;
    let admin = person(&app, "admin@example.com", Role::Admin).await;
    crate::policies::send_changed(&app, "stripe/invoice.payment_failed.json", |json| {
        json["data"]["object"]["next_payment_attempt"] = Value::Null;
    })
    .await;
    settle(&app).await;
    let id = proposal_of(&app, "stripe.retry_invoice").await;
    assert_eq!(terms_of(&app, &id).await.approvals_needed, 1);
    // The invoice grows past the rule's amount: the pending retry is revised.
    crate::policies::send_changed(&app, "stripe/invoice.payment_failed.json", |json| {
        json["id"] = json!("evt_1PgcE0B7WZ01zgkWInvLarger");
        let invoice = &mut json["data"]["object"];
        invoice["next_payment_attempt"] = Value::Null;
        invoice["amount_due"] = json!(9000);
        invoice["amount_remaining"] = json!(9000);
        invoice["attempt_count"] = json!(3);
    })
    .await;
    settle(&app).await;
    let revised = crate::execution::payload_of(&app, &id, "Revised").await;
    assert_eq!(revised["action"]["amount_cents"], 9000, "{revised}");
    let proposal = app.store.load_proposal(&id).await.expect("the proposal");
    assert_eq!(proposal.terms().approvals_needed, 2);
    let needed: i32 =
        sqlx::query_scalar("SELECT approvals_needed FROM proposal_summaries WHERE id = $1")
            .bind(&id)
            .fetch_one(app.store.pool())
            .await
            .expect("the inbox row");
    assert_eq!(needed, 2, "the inbox shows the new quorum");
    // One approval is a vote now, not the decision.
    let (status, body) = approve(&app, &admin, &id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "pending", "{body}");
    app.stop().await;
}
