//! What a client can hold, bounded: open pages, sign-in floods, slow clients, and a token that
//! works the moment `token create` returns.

use std::process::{Command, Stdio};
use std::time::Duration;

use execops::domain::Role;
use execops::store::testing::TestDatabase;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::api::person;
use crate::common::{config, free_port, TestApp};
use crate::pages::sign_in;
use crate::webhooks::{send_fixture, SECRETS};

fn configured_with(extra: &[(&'static str, &'static str)]) -> execops::config::Config {
    let mut pairs: Vec<(&str, &str)> = SECRETS.to_vec();
    pairs.extend_from_slice(extra);
    config(&pairs)
}

/// Opens the inbox stream with `cookie` and returns the response, its body unread.
async fn open_stream(client: &reqwest::Client, app: &TestApp, cookie: &str) -> reqwest::Response {
    let response = client
        .get(app.url("/inbox/stream"))
        .header("cookie", cookie)
        .send()
        .await
        .expect("the stream answers");
    assert_eq!(response.status().as_u16(), 200);
    response
}

/// The stream's text until it holds `wanted`, or panics after `within`.
async fn read_until(response: &mut reqwest::Response, wanted: &str, within: Duration) -> String {
    let mut text = String::new();
    let read = async {
        while !text.contains(wanted) {
            match response.chunk().await {
                Ok(Some(chunk)) => text.push_str(&String::from_utf8_lossy(&chunk)),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(within, read).await;
    assert!(text.contains(wanted), "no {wanted:?} in {text:?}");
    text
}

#[tokio::test]
async fn with_two_hundred_inbox_streams_open_everything_else_still_answers() {
    let app = TestApp::spawn_with(configured_with(&[(
        "EXECOPS_LIVE_STREAMS_PER_SESSION",
        "250",
    )]))
    .await;
    let token = person(&app, "approver@example.com", Role::Approver).await;
    let cookie = sign_in(&app, "approver@example.com").await;
    let client = reqwest::Client::new();
    let mut streams = Vec::new();
    for _ in 0..200 {
        streams.push(open_stream(&client, &app, &cookie).await);
    }
    let answers = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a client");
    for path in ["/readyz", "/healthz"] {
        let response = answers.get(app.url(path)).send().await.expect("an answer");
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }
    let inbox = answers
        .get(app.url("/inbox"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("an answer");
    assert_eq!(inbox.status().as_u16(), 200);
    let api = answers
        .get(app.url("/api/v1/proposals"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("an answer");
    assert_eq!(api.status().as_u16(), 200);
    send_fixture(&app, "stripe/invoice.payment_failed.json").await;
    // The new proposals reach the open pages: the first and the last stream are told.
    let mut last = streams.pop().expect("a stream");
    read_until(&mut last, "event: proposals", Duration::from_secs(20)).await;
    read_until(&mut streams[0], "event: proposals", Duration::from_secs(20)).await;
    assert_eq!(app.state().live.open(), 200);
    drop(streams);
    drop(last);
    app.stop().await;
}

#[tokio::test]
async fn a_stream_over_the_bound_is_told_live_updates_are_paused() {
    let app = TestApp::spawn_with(configured_with(&[
        ("EXECOPS_LIVE_STREAMS", "3"),
        ("EXECOPS_LIVE_STREAMS_PER_SESSION", "2"),
    ]))
    .await;
    person(&app, "a@example.com", Role::Approver).await;
    person(&app, "b@example.com", Role::Approver).await;
    let a = sign_in(&app, "a@example.com").await;
    let b = sign_in(&app, "b@example.com").await;
    let client = reqwest::Client::new();
    let _a1 = open_stream(&client, &app, &a).await;
    let _a2 = open_stream(&client, &app, &a).await;
    let mut third = open_stream(&client, &app, &a).await;
    let text = read_until(&mut third, "event: paused", Duration::from_secs(5)).await;
    assert!(text.contains("2 of your pages are open"), "{text}");
    let _b1 = open_stream(&client, &app, &b).await;
    let mut fourth = open_stream(&client, &app, &b).await;
    let text = read_until(&mut fourth, "event: paused", Duration::from_secs(5)).await;
    assert!(text.contains("3 pages are open on this server"), "{text}");
    app.stop().await;
}

/// Peak resident memory of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("its status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        * 1024
}

#[tokio::test]
async fn a_flood_of_sign_ins_with_made_up_emails_stays_small_and_every_one_is_answered() {
    let db = TestDatabase::new().await.expect("a database");
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_execops"))
        .arg("serve")
        .env("DATABASE_URL", &db.url)
        .env("EXECOPS_ADDR", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("execops starts");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client");
    let mut ready = false;
    for _ in 0..600 {
        if let Ok(response) = client.get(format!("{base}/readyz")).send().await {
            if response.status() == 200 {
                ready = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "execops serve became ready");
    let before = peak_rss(child.id());
    let statuses: Vec<Result<u16, String>> = futures::stream::iter(0..128)
        .map(|i| {
            let client = client.clone();
            let url = format!("{base}/login");
            async move {
                let email = format!("made-up-{i}@example.com");
                client
                    .post(url)
                    .form(&[("email", email.as_str()), ("password", "guess")])
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .map_err(|e| e.to_string())
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let peak = peak_rss(child.id());
    let _ = child.kill();
    let _ = child.wait();
    for status in &statuses {
        assert!(
            matches!(status, Ok(401 | 429 | 503)),
            "every sign-in is refused in words, never left hanging: {status:?}"
        );
    }
    assert!(
        statuses.contains(&Ok(401)),
        "some were checked: {statuses:?}"
    );
    assert!(
        peak < 300 * 1024 * 1024,
        "peak RSS {} MB (before the flood {} MB)",
        peak / (1024 * 1024),
        before / (1024 * 1024)
    );
}

#[tokio::test]
async fn a_flood_against_an_email_from_one_address_does_not_lock_its_owner_out_elsewhere() {
    // A ceiling the flood would pass if throttled attempts counted against it.
    let app = TestApp::spawn_with(configured_with(&[
        ("EXECOPS_TRUSTED_PROXIES", "127.0.0.1"),
        ("EXECOPS_SIGNIN_PER_MINUTE", "8"),
    ]))
    .await;
    person(&app, "owner@example.com", Role::Approver).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client");
    let attempt = |from: &'static str, password: &'static str| {
        let client = client.clone();
        let url = app.url("/login");
        async move {
            let response = client
                .post(url)
                .header("x-forwarded-for", from)
                .form(&[("email", "owner@example.com"), ("password", password)])
                .send()
                .await
                .expect("an answer");
            let retry_after = response.headers().get("retry-after").is_some();
            (response.status().as_u16(), retry_after)
        }
    };
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(attempt("203.0.113.7", "wrong guess").await.0);
    }
    assert_eq!(&statuses[..5], &[401; 5], "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    assert_eq!(
        attempt("203.0.113.7", "a long enough password").await,
        (429, true),
        "the flooding address waits, even with the right password"
    );
    assert_eq!(
        attempt("198.51.100.2", "a long enough password").await.0,
        303,
        "the owner signs in from elsewhere"
    );
    // An untrusted peer cannot choose its address: without the proxy setting, the header
    // is ignored and every attempt above counts against 127.0.0.1.
    app.stop().await;
}

#[tokio::test]
async fn an_address_trying_many_emails_waits_while_other_addresses_sign_in() {
    let app = TestApp::spawn_with(configured_with(&[
        ("EXECOPS_TRUSTED_PROXIES", "127.0.0.1"),
        ("EXECOPS_SIGNIN_ADDRESS_FAILURES", "4"),
    ]))
    .await;
    person(&app, "owner@example.com", Role::Approver).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client");
    let attempt = |from: &'static str, email: String, password: &'static str| {
        let client = client.clone();
        let url = app.url("/login");
        async move {
            client
                .post(url)
                .header("x-forwarded-for", from)
                .form(&[("email", email.as_str()), ("password", password)])
                .send()
                .await
                .expect("an answer")
                .status()
                .as_u16()
        }
    };
    let mut statuses = Vec::new();
    for i in 0..8 {
        statuses.push(attempt("203.0.113.7", format!("made-up-{i}@example.com"), "guess").await);
    }
    assert_eq!(&statuses[..4], &[401; 4], "{statuses:?}");
    assert!(statuses[4..].iter().all(|s| *s == 429), "{statuses:?}");
    assert_eq!(
        attempt(
            "203.0.113.7",
            "owner@example.com".into(),
            "a long enough password"
        )
        .await,
        429,
        "the address waits whatever the email"
    );
    assert_eq!(
        attempt(
            "198.51.100.2",
            "owner@example.com".into(),
            "a long enough password"
        )
        .await,
        303,
        "the owner signs in from elsewhere"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_burst_from_one_address_is_told_to_wait_instead_of_queueing_for_the_checks() {
    // Two checks at once, and a short wait for one: were the burst queued for the checks, most of
    // it would be answered 503 after that wait.
    let app = TestApp::spawn_with(configured_with(&[
        ("EXECOPS_TRUSTED_PROXIES", "127.0.0.1"),
        ("EXECOPS_PASSWORD_CHECKS", "2"),
        ("EXECOPS_PASSWORD_WAIT_MS", "50"),
    ]))
    .await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client");
    let statuses: Vec<(u16, bool)> = futures::future::join_all((0..16).map(|i| {
        let (client, url) = (client.clone(), app.url("/login"));
        async move {
            let email = format!("burst-{i}@example.com");
            let response = client
                .post(url)
                .header("x-forwarded-for", "203.0.113.9")
                .form(&[("email", email.as_str()), ("password", "guess")])
                .send()
                .await
                .expect("an answer");
            let retry_after = response.headers().contains_key("retry-after");
            (response.status().as_u16(), retry_after)
        }
    }))
    .await;
    assert!(
        statuses
            .iter()
            .all(|(status, _)| matches!(status, 401 | 429)),
        "{statuses:?}"
    );
    assert!(statuses.contains(&(401, false)), "{statuses:?}");
    assert!(statuses.contains(&(429, true)), "{statuses:?}");
    app.stop().await;
}

/// Reads from `stream` until the server closes it; true if it did within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buffer = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn slow_and_idle_clients_are_cut_off_at_their_timeouts() {
    let app = TestApp::spawn_with(configured_with(&[
        ("EXECOPS_HEADER_TIMEOUT_SECS", "1"),
        ("EXECOPS_REQUEST_TIMEOUT_SECS", "1"),
    ]))
    .await;
    let host = format!("Host: {}\r\n", app.addr);
    for (case, sent, expected_status) in [
        (
            "half a header, then nothing",
            format!("GET /healthz HTTP/1.1\r\n{host}"),
            None,
        ),
        (
            "a whole request, then an idle kept-alive connection",
            format!("GET /healthz HTTP/1.1\r\n{host}\r\n"),
            Some("HTTP/1.1 200"),
        ),
        (
            "a body announced and never sent",
            format!(
                "POST /webhooks/std/bank HTTP/1.1\r\n{host}Content-Type: application/json\r\n\
                 Content-Length: 1000\r\n\r\n{{\"type\""
            ),
            Some("HTTP/1.1 408"),
        ),
    ] {
        let mut stream = TcpStream::connect(app.addr).await.expect("connects");
        stream.write_all(sent.as_bytes()).await.expect("writes");
        let mut head = vec![0u8; 12];
        if let Some(status) = expected_status {
            tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut head))
                .await
                .expect("an answer in time")
                .expect("an answer");
            assert_eq!(String::from_utf8_lossy(&head), status, "{case}");
        }
        assert!(
            closed_within(&mut stream, Duration::from_secs(10)).await,
            "{case}: the connection is still open"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_token_from_token_create_works_on_the_very_next_request() {
    let app = TestApp::spawn_with(configured_with(&[])).await;
    // Run without blocking the test's runtime: the app serving on it applies the changes.
    let execops = |args: &[&str]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_execops"));
        command.args(args).env("DATABASE_URL", &app.database_url);
        let args = format!("{args:?}");
        async move {
            let out = command.output().await.expect("runs");
            assert!(
                out.status.success(),
                "{args}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).to_string()
        }
    };
    for round in 0..3 {
        let email = format!("fresh-{round}@example.com");
        execops(&["user", "add", &email, "--role", "approver"]).await;
        let token = execops(&["token", "create", &email])
            .await
            .trim()
            .to_string();
        let response = app
            .client
            .get(app.url("/api/v1/proposals"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("an answer");
        assert_eq!(response.status().as_u16(), 200, "round {round}");
        let token_id = token
            .strip_prefix("eo_")
            .and_then(|rest| rest.split('_').next())
            .expect("a token id")
            .to_string();
        execops(&["token", "revoke", &email, &token_id]).await;
        let response = app
            .client
            .get(app.url("/api/v1/proposals"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("an answer");
        assert_eq!(
            response.status().as_u16(),
            401,
            "revoked at once, round {round}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_token_works_at_once_even_with_no_server_following_the_log() {
    let db = TestDatabase::new().await.expect("a database");
    let execops = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_execops"))
            .args(args)
            .env("DATABASE_URL", &db.url)
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    execops(&["user", "add", "alone@example.com", "--role", "admin"]);
    let token = execops(&["token", "create", "alone@example.com"])
        .trim()
        .to_string();
    let actor = execops::projections::users::actor_for_token(&db.pool, &token, chrono::Utc::now())
        .await
        .expect("a lookup");
    assert_eq!(actor.map(|a| a.role), Some(Role::Admin));
}
