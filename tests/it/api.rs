//! The JSON API: every route refuses the anonymous, roles are enforced, concurrent decisions
//! record exactly one, and pagination walks every proposal once.

use std::time::Duration;

use execops::auth::{hash_password, new_token};
use execops::domain::user::{Email, UserCommand};
use execops::domain::Role;
use serde_json::Value;

use crate::common::{count, eventually, TestApp};
use crate::policies::settle;
use crate::webhooks::{configured, post, send_fixture};

/// Adds a person with `role` and returns a live API token for them.
pub async fn person(app: &TestApp, email: &str, role: Role) -> String {
    let email = Email::parse(email).expect("an email");
    app.store
        .user(
            &email,
            UserCommand::Add {
                email: email.clone(),
                role,
                password_hash: hash_password("a long enough password").expect("a hash"),
                by: "test".into(),
            },
            Default::default(),
        )
        .await
        .expect("added");
    let (token_id, token, token_hash) = new_token();
    app.store
        .user(
            &email,
            UserCommand::IssueToken {
                token_id,
                token_hash,
                by: "test".into(),
            },
            Default::default(),
        )
        .await
        .expect("token issued");
    let pool = app.store.pool().clone();
    let wanted = token.clone();
    eventually(Duration::from_secs(10), "the token usable", || {
        let pool = pool.clone();
        let wanted = wanted.clone();
        async move {
            execops::projections::users::actor_for_token(&pool, &wanted, chrono::Utc::now())
                .await
                .ok()
                .flatten()
                .is_some()
        }
    })
    .await;
    token
}

pub async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = match method {
        "GET" => app.client.get(app.url(path)),
        _ => app.client.post(app.url(path)),
    };
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("an answer");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A pending proposal to decide on: the card-update email of the failed-payment fixture.
/// The `payload_hash` of the action proposal `id` shows now: what an approval must send.
pub async fn shown(app: &TestApp, id: &str) -> String {
    sqlx::query_scalar("SELECT payload_hash FROM proposal_summaries WHERE id = $1")
        .bind(id)
        .fetch_one(app.store.pool())
        .await
        .expect("a proposal")
}

async fn pending_proposal(app: &TestApp) -> String {
    send_fixture(app, "stripe/invoice.payment_failed.json").await;
    settle(app).await;
    sqlx::query_scalar("SELECT id FROM proposal_summaries WHERE action_type = 'email.send'")
        .fetch_one(app.store.pool())
        .await
        .expect("a proposal")
}

#[tokio::test]
async fn every_api_route_refuses_an_anonymous_or_unknown_caller() {
    let app = TestApp::spawn_with(configured()).await;
    let id = pending_proposal(&app).await;
    let routes = [
        ("GET", "/api/v1/proposals".to_string()),
        ("GET", format!("/api/v1/proposals/{id}")),
        ("POST", format!("/api/v1/proposals/{id}/approve")),
        ("POST", format!("/api/v1/proposals/{id}/reject")),
    ];
    for (method, path) in &routes {
        for token in [None, Some("eo_nobody_nothing"), Some("")] {
            let (status, body) = call(&app, method, path, token, None).await;
            assert_eq!(status, 401, "{method} {path} with {token:?}: {body}");
            assert_eq!(body["error"], "unauthenticated");
        }
    }
    let pending: String = sqlx::query_scalar("SELECT status FROM proposal_summaries WHERE id = $1")
        .bind(&id)
        .fetch_one(app.store.pool())
        .await
        .expect("status");
    assert_eq!(pending, "pending");
    app.stop().await;
}

#[tokio::test]
async fn each_role_may_do_what_it_may_and_nothing_more() {
    let app = TestApp::spawn_with(configured()).await;
    let id = pending_proposal(&app).await;
    let viewer = person(&app, "viewer@example.com", Role::Viewer).await;
    let approver = person(&app, "approver@example.com", Role::Approver).await;

    let (status, list) = call(
        &app,
        "GET",
        "/api/v1/proposals?status=pending",
        Some(&viewer),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2));
    for action in ["approve", "reject"] {
        let (status, body) = call(
            &app,
            "POST",
            &format!("/api/v1/proposals/{id}/{action}"),
            Some(&viewer),
            Some(serde_json::json!({"reason": "no"})),
        )
        .await;
        assert_eq!(status, 403, "a viewer's {action}: {body}");
    }
    let (status, body) = call(
        &app,
        "POST",
        &format!("/api/v1/proposals/{id}/reject"),
        Some(&approver),
        Some(serde_json::json!({})),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("missing_reason"))
    );
    let (status, body) = call(
        &app,
        "POST",
        &format!("/api/v1/proposals/{id}/approve"),
        Some(&approver),
        Some(serde_json::json!({"comment": "go", "payload_hash": shown(&app, &id).await})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(
        &app,
        "POST",
        &format!("/api/v1/proposals/{id}/approve"),
        Some(&approver),
        Some(serde_json::json!({"payload_hash": shown(&app, &id).await})),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("already_decided"))
    );

    settle(&app).await;
    let (status, one) = call(
        &app,
        "GET",
        &format!("/api/v1/proposals/{id}"),
        Some(&viewer),
        None,
    )
    .await;
    assert_eq!(status, 200);
    // Approved, and since then perhaps already taken up by the executor.
    assert_ne!(one["status"], "pending");
    let history: Vec<&str> = one["history"]
        .as_array()
        .map(|h| h.iter().filter_map(|e| e["event_type"].as_str()).collect())
        .unwrap_or_default();
    // The executor may have taken it up since; the decision is the second step.
    assert_eq!(history[..2], ["Drafted", "Approved"]);
    assert_eq!(one["history"][1]["data"]["actor"], "approver@example.com");
    assert_eq!(one["history"][1]["data"]["role"], "approver");
    assert_eq!(one["history"][1]["data"]["comment"], "go");
    assert_eq!(
        one["history"][1]["data"]["payload_hash"],
        one["payload_hash"]
    );
    assert_eq!(one["history"][1]["metadata"]["via"], "api");
    app.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_decisions_on_one_proposal_record_exactly_one() {
    let app = std::sync::Arc::new(TestApp::spawn_with(configured()).await);
    let id = pending_proposal(&app).await;
    let token = person(&app, "approver@example.com", Role::Approver).await;
    let hash = shown(&app, &id).await;
    let mut calls = Vec::new();
    for n in 0..50 {
        let (app, token, id, hash) = (app.clone(), token.clone(), id.clone(), hash.clone());
        calls.push(tokio::spawn(async move {
            let action = if n % 2 == 0 { "approve" } else { "reject" };
            call(
                &app,
                "POST",
                &format!("/api/v1/proposals/{id}/{action}"),
                Some(&token),
                Some(
                    serde_json::json!({"reason": "race", "comment": "race", "payload_hash": hash}),
                ),
            )
            .await
            .0
        }));
    }
    let mut statuses = Vec::new();
    for c in calls {
        statuses.push(c.await.expect("a call finishes"));
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        49,
        "{statuses:?}"
    );
    let decisions = crate::common::count(
        app.store.pool(),
        "SELECT count(*) FROM events WHERE aggregate_type = 'Proposal' AND event_type IN ('Approved', 'Rejected')",
    )
    .await;
    assert_eq!(decisions, 1);
}

#[tokio::test]
async fn cursor_pagination_walks_every_proposal_once() {
    let app = TestApp::spawn_with(configured()).await;
    for path in crate::webhooks::fixtures() {
        let delivery = execops::send::prepare(
            &path,
            &configured(),
            &format!("http://{}", app.addr),
            chrono::Utc::now(),
        )
        .expect("signs");
        post(&app, &delivery).await;
    }
    settle(&app).await;
    let viewer = person(&app, "viewer@example.com", Role::Viewer).await;
    let total: i64 =
        crate::common::count(app.store.pool(), "SELECT count(*) FROM proposal_summaries").await;
    let mut seen = Vec::new();
    let mut path = "/api/v1/proposals?limit=2".to_string();
    loop {
        let (status, page) = call(&app, "GET", &path, Some(&viewer), None).await;
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().cloned().unwrap_or_default();
        assert!(items.len() <= 2);
        seen.extend(
            items
                .iter()
                .filter_map(|i| i["id"].as_str().map(str::to_string)),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/proposals?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen.len() as i64, total);
    let unique: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no proposal twice");
    for bad in [
        "/api/v1/proposals?limit=0",
        "/api/v1/proposals?limit=201",
        "/api/v1/proposals?cursor=%%%",
    ] {
        let (status, body) = call(&app, "GET", bad, Some(&viewer), None).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_user_and_token_commands_give_a_token_that_works() {
    let app = TestApp::spawn_with(configured()).await;
    let url = app.database_url.clone();
    let run = move |args: Vec<String>, stdin: Option<&'static str>| {
        let url = url.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                use std::io::Write;
                let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_execops"))
                    .args(&args)
                    .env("DATABASE_URL", url)
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("runs");
                if let Some(input) = stdin {
                    child
                        .stdin
                        .take()
                        .expect("stdin")
                        .write_all(input.as_bytes())
                        .expect("written");
                }
                child.wait_with_output().expect("finishes")
            })
            .await
            .expect("task")
        }
    };
    let out = run(
        vec![
            "user".to_string(),
            "add".to_string(),
            "Founder@Example.com".to_string(),
            "--role".to_string(),
            "admin".to_string(),
        ],
        None,
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        printed.contains("added founder@example.com as admin"),
        "{printed}"
    );
    assert!(
        printed.contains("password: "),
        "a generated password is shown once"
    );

    let out = run(
        vec![
            "user".to_string(),
            "add".to_string(),
            "viewer@example.com".to_string(),
            "--role".to_string(),
            "viewer".to_string(),
            "--password-stdin".to_string(),
        ],
        Some("short\n"),
    )
    .await;
    assert!(!out.status.success(), "a short password is refused");
    let out = run(
        vec![
            "user".to_string(),
            "add".to_string(),
            "viewer@example.com".to_string(),
            "--role".to_string(),
            "viewer".to_string(),
            "--password-stdin".to_string(),
        ],
        Some("a sufficiently long password\n"),
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("password:"));

    let out = run(
        vec![
            "token".to_string(),
            "create".to_string(),
            "founder@example.com".to_string(),
        ],
        None,
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(token.starts_with("eo_"));
    let out = run(
        vec![
            "token".to_string(),
            "create".to_string(),
            "nobody@example.com".to_string(),
        ],
        None,
    )
    .await;
    assert!(
        !out.status.success(),
        "no token for someone who does not exist"
    );

    eventually(Duration::from_secs(10), "the token works", || async {
        call(&app, "GET", "/api/v1/proposals", Some(&token), None)
            .await
            .0
            == 200
    })
    .await;
    let token_id = token
        .trim_start_matches("eo_")
        .split('_')
        .next()
        .unwrap_or_default()
        .to_string();
    let out = run(
        vec![
            "token".to_string(),
            "revoke".to_string(),
            "founder@example.com".to_string(),
            token_id.clone(),
        ],
        None,
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(
        Duration::from_secs(10),
        "the revoked token refused",
        || async {
            call(&app, "GET", "/api/v1/proposals", Some(&token), None)
                .await
                .0
                == 401
        },
    )
    .await;
    let stored: i64 = crate::common::count(
        app.store.pool(),
        "SELECT count(*) FROM events WHERE aggregate_type = 'User' AND payload::text LIKE '%eo\\_%'",
    )
    .await;
    assert_eq!(stored, 0, "the token itself is never stored");
    app.stop().await;
}

#[tokio::test]
async fn the_audit_api_lists_decisions_newest_first_and_refuses_the_anonymous() {
    let app = TestApp::spawn_with(configured()).await;
    let id = pending_proposal(&app).await;
    let token = person(&app, "approver@example.com", Role::Approver).await;
    let (status, _) = call(
        &app,
        "POST",
        &format!("/api/v1/proposals/{id}/approve"),
        Some(&token),
        Some(serde_json::json!({"payload_hash": shown(&app, &id).await})),
    )
    .await;
    assert_eq!(status, 200);
    // The audit log is a projection: it follows the decision within moments.
    settle(&app).await;
    let (status, _) = call(&app, "GET", "/api/v1/audit", None, None).await;
    assert_eq!(status, 401);
    let (status, body) = call(
        &app,
        "GET",
        "/api/v1/audit?action=Approved",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let items = body["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["actor"], "approver@example.com");
    assert_eq!(items[0]["aggregate_id"], id.as_str());
    assert_eq!(body["next_page"], Value::Null);
    app.stop().await;
}

#[tokio::test]
async fn the_openapi_document_describes_the_routes_and_the_shapes_the_api_returns() {
    let app = TestApp::spawn_with(configured()).await;
    pending_proposal(&app).await;
    let token = person(&app, "viewer@example.com", Role::Viewer).await;
    let (status, doc) = call(&app, "GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert!(
        doc["openapi"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let mut paths: Vec<String> = doc["paths"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/api/v1/audit",
            "/api/v1/canvas/{query}",
            "/api/v1/proposals",
            "/api/v1/proposals/{id}",
            "/api/v1/proposals/{id}/approve",
            "/api/v1/proposals/{id}/reject"
        ]
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    // The schema's properties are exactly the fields a real answer has.
    let (_, list) = call(&app, "GET", "/api/v1/proposals", Some(&token), None).await;
    let mut returned: Vec<String> = list["items"][0]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let mut described: Vec<String> = doc["components"]["schemas"]["ProposalItem"]["properties"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    returned.sort();
    described.sort();
    assert!(!returned.is_empty());
    assert_eq!(returned, described);
    app.stop().await;
}

#[tokio::test]
async fn page_numbers_past_the_bounds_are_refused_in_words_not_with_a_500() {
    let app = TestApp::spawn().await;
    let token = person(&app, "reader@example.com", Role::Viewer).await;
    let cookie = crate::pages::sign_in(&app, "reader@example.com").await;
    for (path, expected) in [
        ("/api/v1/audit?page=9223372036854775807", 400),
        ("/api/v1/audit?page=1000001", 400),
        ("/api/v1/audit?page=-1", 400),
        ("/api/v1/audit?page=1000000", 200),
    ] {
        let response = app
            .client
            .get(app.url(path))
            .bearer_auth(&token)
            .send()
            .await
            .expect("an answer");
        assert_eq!(response.status().as_u16(), expected, "{path}");
        if expected == 400 {
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["error"], "bad_page", "{path}: {body}");
        }
    }
    for (path, expected) in [
        ("/audit?page=9223372036854775807", 400),
        ("/inbox?page=9223372036854775807", 400),
        ("/inbox?page=-3", 400),
        ("/audit?page=2", 200),
    ] {
        let (status, html, _) = crate::pages::page(&app, Some(&cookie), path).await;
        assert_eq!(status, expected, "{path}");
        if expected == 400 {
            assert!(
                html.contains("page must be from 0 to 1000000"),
                "{path}: {html}"
            );
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn an_api_approval_binds_the_payload_hash_the_caller_saw() {
    let app = TestApp::spawn_with(configured()).await;
    let id = pending_proposal(&app).await;
    let token = person(&app, "approver@example.com", Role::Approver).await;
    let path = format!("/api/v1/proposals/{id}/approve");
    let (_, got) = call(
        &app,
        "GET",
        &format!("/api/v1/proposals/{id}"),
        Some(&token),
        None,
    )
    .await;
    let hash = got["payload_hash"]
        .as_str()
        .expect("the proposal shows its hash")
        .to_string();
    for (body, status, code) in [
        (None, 400, "missing_payload_hash"),
        (
            Some(serde_json::json!({"comment": "go"})),
            400,
            "missing_payload_hash",
        ),
        (
            Some(serde_json::json!({"payload_hash": ""})),
            400,
            "missing_payload_hash",
        ),
        (
            Some(serde_json::json!({"payload_hash": "0".repeat(64)})),
            409,
            "payload_changed",
        ),
    ] {
        let (got_status, answer) = call(&app, "POST", &path, Some(&token), body.clone()).await;
        assert_eq!(
            (got_status, answer["error"].as_str()),
            (status, Some(code)),
            "{body:?}"
        );
    }
    assert_eq!(
        count(
            app.store.pool(),
            "SELECT count(*) FROM events WHERE event_type IN ('Approved', 'ApprovalAdded')"
        )
        .await,
        0,
        "nothing was approved blind"
    );
    let (status, answer) = call(
        &app,
        "POST",
        &path,
        Some(&token),
        Some(serde_json::json!({"payload_hash": hash})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    app.stop().await;
}
