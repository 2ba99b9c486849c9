//! Managing the team from the command line: people listed, roles changed, people disabled
//! and enabled again, each holding from the person's very next request, and the last admin
//! kept.

use std::process::Output;

use execops::domain::Role;
use reqwest::redirect::Policy;
use serde_json::Value;

use crate::api::{call, person};
use crate::common::TestApp;
use crate::pages::{page, sign_in};

async fn cli(app: &TestApp, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_execops"))
        .env("DATABASE_URL", &app.database_url)
        .args(args)
        .output()
        .await
        .expect("execops runs")
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn signs_in(app: &TestApp, email: &str) -> u16 {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("a client")
        .post(app.url("/login"))
        .form(&[("email", email), ("password", "a long enough password")])
        .send()
        .await
        .expect("an answer")
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_disabled_person_is_refused_on_their_next_request_and_enabled_again_comes_back() {
    let app = TestApp::spawn().await;
    person(&app, "boss@example.com", Role::Admin).await;
    let token = person(&app, "ana@example.com", Role::Approver).await;
    let cookie = sign_in(&app, "ana@example.com").await;
    assert_eq!(page(&app, Some(&cookie), "/inbox").await.0, 200);
    let listed = call(&app, "GET", "/api/v1/proposals", Some(&token), None).await;
    assert_eq!(listed.0, 200);

    let out = cli(&app, &["user", "disable", "ana@example.com"]).await;
    assert!(out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("1 session(s) ended"), "{}", said(&out));
    // The very next request, with nothing waited for.
    assert_eq!(page(&app, Some(&cookie), "/inbox").await.0, 303);
    let refused = call(&app, "GET", "/api/v1/proposals", Some(&token), None).await;
    assert_eq!(refused.0, 401, "{}", refused.1);
    assert_eq!(signs_in(&app, "ana@example.com").await, 401);
    let out = cli(&app, &["user", "disable", "ana@example.com"]).await;
    assert!(!out.status.success());
    assert!(said(&out).contains("already disabled"), "{}", said(&out));

    let out = cli(&app, &["user", "list", "--json"]).await;
    assert!(out.status.success(), "{}", said(&out));
    let people: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let ana = people
        .as_array()
        .and_then(|all| all.iter().find(|p| p["email"] == "ana@example.com"))
        .expect("ana listed");
    assert!(ana["disabled_at"].is_string(), "{ana}");
    assert_eq!(ana["live_tokens"], 1);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(&token),
        "never a secret"
    );

    let out = cli(&app, &["user", "enable", "ana@example.com"]).await;
    assert!(out.status.success(), "{}", said(&out));
    let back = call(&app, "GET", "/api/v1/proposals", Some(&token), None).await;
    assert_eq!(back.0, 200);
    assert_eq!(signs_in(&app, "ana@example.com").await, 303);
    app.stop().await;
}

#[tokio::test]
async fn a_demoted_approver_cannot_approve_and_the_last_admin_stays_one() {
    let app = TestApp::spawn().await;
    person(&app, "boss@example.com", Role::Admin).await;
    let token = person(&app, "ana@example.com", Role::Approver).await;
    let out = cli(&app, &["user", "set-role", "ana@example.com", "viewer"]).await;
    assert!(out.status.success(), "{}", said(&out));
    let (status, body) = call(
        &app,
        "POST",
        "/api/v1/proposals/any/approve",
        Some(&token),
        Some(serde_json::json!({"payload_hash": "x"})),
    )
    .await;
    assert_eq!(status, 403, "{body}");

    for args in [
        ["user", "disable", "boss@example.com"].as_slice(),
        ["user", "set-role", "boss@example.com", "approver"].as_slice(),
    ] {
        let out = cli(&app, args).await;
        assert!(!out.status.success(), "{args:?}");
        assert!(said(&out).contains("last admin"), "{}", said(&out));
    }
    // With a second admin, the first may step down.
    let out = cli(&app, &["user", "set-role", "ana@example.com", "admin"]).await;
    assert!(out.status.success(), "{}", said(&out));
    let out = cli(&app, &["user", "set-role", "boss@example.com", "approver"]).await;
    assert!(out.status.success(), "{}", said(&out));
    let out = cli(&app, &["user", "disable", "ana@example.com"]).await;
    assert!(!out.status.success(), "ana is now the last admin");
    app.stop().await;
}
