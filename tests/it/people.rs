//! Managing the team from the command line: people listed, roles changed, people disabled
//! and enabled again, each holding from the person's very next request, and the last admin
//! kept.

use std::process::Output;

use execops::domain::Role;
use reqwest::redirect::Policy;
use serde_json::Value;

use crate::api::{call, person};
use crate::common::TestApp;
use crate::pages::{csrf_of, form, page, sign_in};

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

/// Posts one change to `/settings/people` as the holder of `cookie`, with its CSRF token.
async fn people_change(
    app: &TestApp,
    cookie: &str,
    csrf: &str,
    fields: &[(&str, &str)],
) -> (u16, String, String) {
    let mut all = vec![("csrf", csrf)];
    all.extend_from_slice(fields);
    form(app, Some(cookie), "/settings/people", &all).await
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
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions WHERE email = $1")
        .bind("ana@example.com")
        .fetch_one(app.store.pool())
        .await
        .expect("sessions counted");
    assert_eq!(sessions, 0, "her sessions are ended, not just refused");
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
    assert!(
        ana["signed_in_at"].is_string(),
        "her last sign-in outlives her sessions: {ana}"
    );
    assert_eq!(ana["live_tokens"], 1);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(&token),
        "never a secret"
    );

    let out = cli(&app, &["token", "list", "ana@example.com"]).await;
    assert!(out.status.success(), "{}", said(&out));
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        listed.contains("live") && listed.contains("last used") && !listed.contains(&token),
        "{listed}"
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

#[tokio::test]
async fn an_admin_manages_the_team_on_the_people_page_and_others_may_not() {
    let app = TestApp::spawn().await;
    person(&app, "boss@example.com", Role::Admin).await;
    let ana_token = person(&app, "ana@example.com", Role::Approver).await;
    let boss = sign_in(&app, "boss@example.com").await;
    let ana = sign_in(&app, "ana@example.com").await;

    let (status, html, _) = page(&app, Some(&boss), "/settings/people").await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("ana@example.com") && html.contains("Disable"),
        "{html}"
    );
    assert!(!html.contains(&ana_token), "never a token's secret");
    let csrf = csrf_of(&html);
    let (status, _, _) = page(&app, Some(&ana), "/settings/people").await;
    assert_eq!(status, 403, "an approver may not manage people");

    // Refused: no CSRF token, an approver, the last admin; each changes nothing.
    let (status, _, _) = form(
        &app,
        Some(&boss),
        "/settings/people",
        &[("email", "ana@example.com"), ("change", "disable")],
    )
    .await;
    assert_eq!(status, 403);
    let ana_csrf = csrf_of(&page(&app, Some(&ana), "/inbox").await.1);
    let (status, _, _) = people_change(
        &app,
        &ana,
        &ana_csrf,
        &[("email", "boss@example.com"), ("change", "disable")],
    )
    .await;
    assert_eq!(status, 403);
    let (status, _, html) = people_change(
        &app,
        &boss,
        &csrf,
        &[
            ("email", "boss@example.com"),
            ("change", "set_role"),
            ("role", "viewer"),
        ],
    )
    .await;
    assert_eq!(status, 409, "{html}");
    assert!(html.contains("last admin"), "{html}");
    assert_eq!(page(&app, Some(&ana), "/inbox").await.0, 200);

    // Revoking her token, then disabling her, hold on her next requests.
    let token_id = ana_token
        .strip_prefix("eo_")
        .and_then(|rest| rest.split('_').next())
        .expect("a token id");
    let (status, location, _) = people_change(
        &app,
        &boss,
        &csrf,
        &[
            ("email", "ana@example.com"),
            ("change", "revoke_token"),
            ("token_id", token_id),
        ],
    )
    .await;
    assert_eq!(
        (status, location.starts_with("/settings/people?notice=")),
        (303, true)
    );
    let (status, _) = call(&app, "GET", "/api/v1/proposals", Some(&ana_token), None).await;
    assert_eq!(status, 401);
    let (status, location, _) = people_change(
        &app,
        &boss,
        &csrf,
        &[("email", "ana@example.com"), ("change", "disable")],
    )
    .await;
    assert_eq!(status, 303);
    assert_eq!(page(&app, Some(&ana), "/inbox").await.0, 303);
    let (_, notice, _) = page(&app, Some(&boss), &location).await;
    assert!(notice.contains("is disabled"), "{notice}");
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE aggregate_id = 'ana@example.com' \
         AND event_type IN ('TokenRevoked', 'UserDisabled') AND actor = 'boss@example.com'",
    )
    .fetch_one(app.store.pool())
    .await
    .expect("the audit log");
    assert_eq!(
        audited, 2,
        "each change is in the audit log with who made it"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_person_changes_their_own_password_and_is_signed_out_elsewhere() {
    let app = TestApp::spawn().await;
    person(&app, "ana@example.com", Role::Viewer).await;
    let here = sign_in(&app, "ana@example.com").await;
    let elsewhere = sign_in(&app, "ana@example.com").await;
    let (status, html, _) = page(&app, Some(&here), "/settings/me").await;
    assert_eq!(status, 200, "{html}");
    let csrf = csrf_of(&html);
    let new = "another long enough password";
    let attempt = |current: &'static str, confirm: &'static str| {
        let (app, here, csrf) = (&app, here.clone(), csrf.clone());
        async move {
            form(
                app,
                Some(&here),
                "/settings/me",
                &[
                    ("csrf", csrf.as_str()),
                    ("change", "password"),
                    ("current", current),
                    ("new", new),
                    ("confirm", confirm),
                ],
            )
            .await
        }
    };
    let (status, _, html) = attempt("a wrong password", new).await;
    assert_eq!(status, 400, "{html}");
    assert!(html.contains("current password is not right"), "{html}");
    let (status, _, html) = attempt("a long enough password", "a different one entirely").await;
    assert_eq!(status, 400, "{html}");
    assert_eq!(
        page(&app, Some(&elsewhere), "/inbox").await.0,
        200,
        "nothing changed"
    );

    let (status, _, _) = attempt("a long enough password", new).await;
    assert_eq!(status, 303);
    assert_eq!(
        page(&app, Some(&here), "/inbox").await.0,
        200,
        "this session stays"
    );
    assert_eq!(
        page(&app, Some(&elsewhere), "/inbox").await.0,
        303,
        "the other ended"
    );
    assert_eq!(
        signs_in(&app, "ana@example.com").await,
        401,
        "the old password"
    );
    let signed_in = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("a client")
        .post(app.url("/login"))
        .form(&[("email", "ana@example.com"), ("password", new)])
        .send()
        .await
        .expect("an answer")
        .status()
        .as_u16();
    assert_eq!(signed_in, 303, "the new password");
    app.stop().await;
}

/// The link a command, a page or a mail gave: the `http…/account/…` address in it.
fn link_in(text: &str) -> String {
    let at = text
        .find("/account/")
        .unwrap_or_else(|| panic!("a link in {text}"));
    let start = text[..at].rfind("http").expect("an address");
    text[start..]
        .split(|c: char| c.is_whitespace() || c == '<' || c == '"')
        .next()
        .expect("a link")
        .to_string()
}

async fn choose(app: &TestApp, link: &str, password: &str, confirm: &str) -> (u16, String) {
    let path = &link[link.find("/account/").expect("an account path")..];
    let response = reqwest::Client::new()
        .post(app.url(path))
        .form(&[("password", password), ("confirm", confirm)])
        .send()
        .await
        .expect("an answer");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

#[tokio::test]
async fn an_invite_is_emailed_works_once_and_a_person_already_here_gets_none() {
    let smtp = crate::adapters::Smtp::start();
    let smtp_url = format!("smtp://{}", smtp.addr);
    let app = TestApp::spawn().await;
    person(&app, "boss@example.com", Role::Admin).await;
    let invite = |email: &'static str| {
        let (url, smtp_url) = (app.database_url.clone(), smtp_url.clone());
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_execops"))
                .env("DATABASE_URL", url)
                .env("SMTP_URL", smtp_url)
                .env("EXECOPS_EMAIL_FROM", "ExecOps <execops@acme.test>")
                .args(["user", "invite", email, "--role", "approver"])
                .output()
                .await
                .expect("execops runs")
        }
    };
    let out = invite("new@example.com").await;
    assert!(out.status.success(), "{}", said(&out));
    let printed = link_in(&said(&out));
    let mail = smtp
        .messages()
        .into_iter()
        .find(|m| m.to.iter().any(|to| to.contains("new@example.com")))
        .expect("the invite was mailed");
    let mailed = link_in(&mail.data.replace("=\r\n", "").replace("=3D", "="));
    assert_eq!(mailed, printed);
    let secret = printed.rsplit('/').next().expect("a secret");
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM account_links WHERE token_hash = $1")
            .bind(secret)
            .fetch_one(app.store.pool())
            .await
            .expect("counted");
    assert_eq!(stored, 0, "only the hash is kept");

    let path = &printed[printed.find("/account/").expect("a path")..];
    let (status, html, _) = page(&app, None, path).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("invited new@example.com") && html.contains("approver"),
        "{html}"
    );
    assert_eq!(
        choose(&app, &printed, "too short", "too short").await.0,
        400,
        "refused, and the link still works"
    );
    let (status, html) = choose(
        &app,
        &printed,
        "a long enough password",
        "a long enough password",
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert_eq!(signs_in(&app, "new@example.com").await, 303);
    assert_eq!(
        choose(
            &app,
            &printed,
            "another long password",
            "another long password"
        )
        .await
        .0,
        410,
        "a second use"
    );
    assert_eq!(page(&app, None, path).await.0, 410);

    let out = invite("new@example.com").await;
    assert!(!out.status.success());
    assert!(
        said(&out).contains("already an ExecOps user"),
        "{}",
        said(&out)
    );
    let kinds: Vec<String> = stream_of(&app, "new@example.com")
        .await
        .into_iter()
        .map(|(kind, _)| kind)
        .collect();
    assert_eq!(
        kinds,
        ["InvitationSent", "UserAdded"],
        "the invite is recorded before they join, and a refused one is not"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_invite_expires_after_a_week() {
    let later = execops::clock::Clock::shifted(chrono::Duration::days(8));
    let app = TestApp::spawn_with_clock(crate::common::config(&[]), later).await;
    let out = cli(
        &app,
        &["user", "invite", "late@example.com", "--role", "viewer"],
    )
    .await;
    assert!(out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("no SMTP_URL is set"), "{}", said(&out));
    let link = link_in(&said(&out));
    let (status, html) = choose(
        &app,
        &link,
        "a long enough password",
        "a long enough password",
    )
    .await;
    assert_eq!(status, 410, "{html}");
    assert_eq!(signs_in(&app, "late@example.com").await, 401);
    app.stop().await;
}

#[tokio::test]
async fn an_admin_sends_a_reset_link_from_the_page_and_using_it_ends_the_persons_sessions() {
    let app = TestApp::spawn().await;
    person(&app, "boss@example.com", Role::Admin).await;
    person(&app, "ana@example.com", Role::Approver).await;
    let boss = sign_in(&app, "boss@example.com").await;
    let ana = sign_in(&app, "ana@example.com").await;
    let csrf = csrf_of(&page(&app, Some(&boss), "/settings/people").await.1);
    let (status, _, html) = people_change(
        &app,
        &boss,
        &csrf,
        &[("email", "ana@example.com"), ("change", "reset")],
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("No mail server is set"), "{html}");
    let link = link_in(&html);
    let (status, html) = choose(&app, &link, "a brand new password", "a brand new password").await;
    assert_eq!(status, 200, "{html}");
    assert_eq!(
        page(&app, Some(&ana), "/inbox").await.0,
        303,
        "her sessions ended"
    );
    assert_eq!(page(&app, Some(&boss), "/inbox").await.0, 200, "not his");
    let signed_in = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("a client")
        .post(app.url("/login"))
        .form(&[
            ("email", "ana@example.com"),
            ("password", "a brand new password"),
        ])
        .send()
        .await
        .expect("an answer")
        .status()
        .as_u16();
    assert_eq!(signed_in, 303);
    let (status, _, html) = people_change(
        &app,
        &boss,
        &csrf,
        &[("email", "nobody@example.com"), ("change", "reset")],
    )
    .await;
    assert_eq!(status, 409, "{html}");
    assert_eq!(
        stream_of(&app, "ana@example.com").await[2..],
        [
            (
                "PasswordResetSent".to_string(),
                "boss@example.com".to_string()
            ),
            ("PasswordSet".into(), "ana@example.com".into()),
        ],
        "the link is on her record, sent by the admin"
    );
    app.stop().await;
}

/// A person's stream as (event type, actor) pairs, in order.
async fn stream_of(app: &TestApp, email: &str) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT event_type, coalesce(metadata->>'actor', '') FROM events \
         WHERE aggregate_type = 'User' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(email)
    .fetch_all(app.store.pool())
    .await
    .expect("the stream")
}

#[tokio::test]
async fn privacy_export_gives_every_event_and_row_about_a_subject_and_no_secret() {
    let app = TestApp::spawn_with(crate::webhooks::configured()).await;
    crate::webhooks::send_fixture(&app, "intercom/conversation.user.created.json").await;
    person(&app, "ana@example.com", Role::Approver).await;
    sign_in(&app, "ana@example.com").await;
    crate::audit::projections_idle(app.store.pool()).await;

    let out = cli(&app, &["privacy", "export", "BILL@bill.bill"]).await;
    assert!(out.status.success(), "{}", said(&out));
    let export: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let events = export["events"].as_array().expect("events");
    assert!(!events.is_empty(), "{export}");
    for event in events {
        assert!(
            event.to_string().to_lowercase().contains("bill@bill.bill"),
            "only events about the subject: {event}"
        );
    }
    assert_eq!(events[0]["aggregate_type"], "Inbound");

    let out = cli(&app, &["privacy", "export", "ana@example.com"]).await;
    assert!(out.status.success(), "{}", said(&out));
    let export: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(export["records"]["users"][0]["email"], "ana@example.com");
    assert_eq!(export["records"]["users"][0]["password_hash"], "[secret]");
    assert_eq!(export["records"]["sessions"][0]["id_hash"], "[secret]");
    assert_eq!(export["records"]["api_tokens"][0]["token_hash"], "[secret]");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("$argon2"), "no password hash anywhere");
    let added = export["events"]
        .as_array()
        .and_then(|all| all.iter().find(|e| e["event_type"] == "UserAdded"))
        .expect("her UserAdded event");
    assert_eq!(added["payload"]["UserAdded"]["password_hash"], "[secret]");

    let out = cli(&app, &["privacy", "export", "a"]).await;
    assert!(!out.status.success());
    assert!(said(&out).contains("too short"), "{}", said(&out));
    app.stop().await;
}

#[tokio::test]
async fn a_token_s_last_use_is_written_at_most_once_a_minute() {
    use execops::projections::users::{actor_for_token, tokens};
    let app = TestApp::spawn().await;
    let token = person(&app, "ana@example.com", Role::Approver).await;
    let pool = app.store.pool();
    let last_used =
        || async { tokens(pool, "ana@example.com").await.expect("tokens")[0].last_used_at };
    // Whole seconds: Postgres keeps microseconds.
    let start =
        chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp() + 3600, 0).expect("a time");
    let at = |seconds: i64| start + chrono::Duration::seconds(seconds);
    for (seconds, written) in [(0, 0), (30, 0), (59, 0), (61, 61), (100, 61), (125, 125)] {
        let actor = actor_for_token(pool, &token, at(seconds))
            .await
            .expect("a lookup")
            .expect("the token is live");
        assert_eq!(actor.email, "ana@example.com");
        assert_eq!(
            last_used().await,
            Some(at(written)),
            "a use at +{seconds} s"
        );
    }
    app.stop().await;
}
