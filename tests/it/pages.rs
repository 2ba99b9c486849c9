//! The pages over real HTTP, as a browser without JavaScript uses them: sign-in, the inbox,
//! decisions by form with the CSRF token, role boundaries and security headers.

use execops::auth::hash_password;
use execops::domain::user::{Email, UserCommand};
use execops::domain::Role;
use reqwest::redirect::Policy;
use serde_json::Value;

use crate::api::person;
use crate::common::TestApp;
use crate::policies::settle;
use crate::webhooks::{configured, post, send_fixture};

pub(crate) const PASSWORD: &str = "a long enough password";

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("a client")
}

/// Signs in and returns the session cookie.
pub async fn sign_in(app: &TestApp, email: &str) -> String {
    let response = browser()
        .post(app.url("/login"))
        .form(&[("email", email), ("password", PASSWORD)])
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status().as_u16(), 303, "signed in");
    assert_eq!(response.headers()["location"], "/inbox");
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .expect("a cookie")
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP on loopback: {cookie}"
    );
    cookie.split(';').next().expect("name=value").to_string()
}

pub async fn page(
    app: &TestApp,
    cookie: Option<&str>,
    path: &str,
) -> (u16, String, reqwest::header::HeaderMap) {
    let mut request = browser().get(app.url(path));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = request.send().await.expect("an answer");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, response.text().await.unwrap_or_default(), headers)
}

pub async fn form(
    app: &TestApp,
    cookie: Option<&str>,
    path: &str,
    fields: &[(&str, &str)],
) -> (u16, String, String) {
    let mut request = browser().post(app.url(path)).form(fields);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = request.send().await.expect("an answer");
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, location, response.text().await.unwrap_or_default())
}

pub fn csrf_of(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("a csrf field") + marker.len();
    html[start..]
        .split('"')
        .next()
        .expect("a value")
        .to_string()
}

async fn proposals(app: &TestApp) -> Vec<(String, String)> {
    send_fixture(app, "stripe/invoice.payment_failed.json").await;
    settle(app).await;
    sqlx::query_as("SELECT id, payload_hash FROM proposal_summaries ORDER BY title")
        .fetch_all(app.store.pool())
        .await
        .expect("proposals")
}

/// Whether the proposal's stream holds an approval (the executor may have moved it on since).
async fn was_approved(app: &TestApp, id: &str) -> bool {
    crate::execution::events_of(app, id)
        .await
        .contains(&"Approved".to_string())
}

async fn status_of(app: &TestApp, id: &str) -> String {
    sqlx::query_scalar("SELECT status FROM proposal_summaries WHERE id = $1")
        .bind(id)
        .fetch_one(app.store.pool())
        .await
        .expect("a status")
}

#[tokio::test]
async fn every_page_sends_an_anonymous_visitor_to_sign_in() {
    let app = TestApp::spawn_with(configured()).await;
    let ids = proposals(&app).await;
    let id = &ids[0].0;
    for path in ["/inbox", "/queue", &format!("/proposals/{id}"), "/"] {
        let (status, _, headers) = page(&app, None, path).await;
        assert_eq!(status, 303, "{path}");
        let to = headers["location"].to_str().unwrap_or_default();
        assert!(to == "/login" || to == "/inbox", "{path} -> {to}");
    }
    for action in ["approve", "reject", "../../logout"] {
        let (status, location, _) = form(
            &app,
            None,
            &format!("/proposals/{id}/{action}"),
            &[("reason", "x")],
        )
        .await;
        assert_eq!((status, location.as_str()), (303, "/login"), "{action}");
    }
    assert_eq!(status_of(&app, id).await, "pending");
    let (status, html, _) = page(&app, None, "/login").await;
    assert_eq!(status, 200);
    assert!(html.contains("Sign in"));
    app.stop().await;
}

#[tokio::test]
async fn sign_in_refuses_a_wrong_password_and_then_slows_down_guessing() {
    let app = TestApp::spawn_with(configured()).await;
    person(&app, "approver@example.com", Role::Approver).await;
    for attempt in 0..5 {
        let (status, _, html) = form(
            &app,
            None,
            "/login",
            &[("email", "approver@example.com"), ("password", "wrong")],
        )
        .await;
        assert_eq!(status, 401, "attempt {attempt}");
        assert!(html.contains("Wrong email or password."));
    }
    let (status, _, html) = form(
        &app,
        None,
        "/login",
        &[("email", "Approver@Example.com"), ("password", PASSWORD)],
    )
    .await;
    assert_eq!(
        status, 429,
        "even the right password waits after five failures"
    );
    assert!(html.contains("Too many failed attempts"), "{html}");
    let (status, _, _) = form(
        &app,
        None,
        "/login",
        &[("email", "nobody@example.com"), ("password", "x")],
    )
    .await;
    assert_eq!(status, 401);
    app.stop().await;
}

#[tokio::test]
async fn an_approver_approves_from_the_inbox_and_a_viewer_cannot() {
    let app = TestApp::spawn_with(configured()).await;
    let ids = proposals(&app).await;
    person(&app, "approver@example.com", Role::Approver).await;
    person(&app, "viewer@example.com", Role::Viewer).await;

    let viewer = sign_in(&app, "viewer@example.com").await;
    let (status, html, _) = page(&app, Some(&viewer), "/inbox").await;
    assert_eq!(status, 200);
    assert!(html.contains("Email customer cus_QXg1o8vcGmoR32 a card-update link"));
    assert!(
        !html.contains("class=\"approve\""),
        "a viewer sees no approve button"
    );
    let viewer_csrf = csrf_of(&html);
    let (id, hash) = &ids[1];
    let (status, _, _) = form(
        &app,
        Some(&viewer),
        &format!("/proposals/{id}/approve"),
        &[("csrf", &viewer_csrf), ("payload_hash", hash)],
    )
    .await;
    assert_eq!(status, 403, "a forged approve by a viewer");
    assert_eq!(status_of(&app, id).await, "pending");

    let approver = sign_in(&app, "approver@example.com").await;
    let (_, html, headers) = page(&app, Some(&approver), "/inbox").await;
    assert!(html.contains("class=\"approve\""));
    let csp = headers["content-security-policy"]
        .to_str()
        .unwrap_or_default();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "same-origin");
    let csrf = csrf_of(&html);

    let (status, _, _) = form(
        &app,
        Some(&approver),
        &format!("/proposals/{id}/approve"),
        &[("payload_hash", hash)],
    )
    .await;
    assert_eq!(status, 403, "no CSRF token");
    let (status, _, _) = form(
        &app,
        Some(&approver),
        &format!("/proposals/{id}/approve"),
        &[("csrf", "forged"), ("payload_hash", hash)],
    )
    .await;
    assert_eq!(status, 403, "a wrong CSRF token");
    assert_eq!(status_of(&app, id).await, "pending");

    let (status, location, _) = form(
        &app,
        Some(&approver),
        &format!("/proposals/{id}/approve"),
        &[
            ("csrf", &csrf),
            ("payload_hash", hash),
            ("comment", "ship it"),
        ],
    )
    .await;
    assert_eq!((status, location.as_str()), (303, "/inbox?notice=approved"));
    settle(&app).await;
    assert!(was_approved(&app, id).await);
    let (_, html, _) = page(&app, Some(&approver), "/inbox?notice=approved").await;
    assert!(html.contains("Approved."));
    assert!(
        !html.contains(&format!("id=\"p-{id}\"")),
        "it left the inbox"
    );
    let (status, html, _) = page(&app, Some(&approver), &format!("/proposals/{id}")).await;
    assert_eq!(status, 200);
    assert!(
        html.contains("Approved</strong> by approver@example.com"),
        "the timeline shows it"
    );

    let (status, location, _) = form(&app, Some(&approver), "/logout", &[("csrf", &csrf)]).await;
    assert_eq!((status, location.as_str()), (303, "/login"));
    let (status, _, _) = page(&app, Some(&approver), "/inbox").await;
    assert_eq!(status, 303, "the session is gone");
    app.stop().await;
}

#[tokio::test]
async fn approving_on_the_page_and_through_the_api_records_the_same_event() {
    let app = TestApp::spawn_with(configured()).await;
    let ids = proposals(&app).await;
    let token = person(&app, "approver@example.com", Role::Approver).await;
    let cookie = sign_in(&app, "approver@example.com").await;
    let (_, html, _) = page(&app, Some(&cookie), "/inbox").await;
    let csrf = csrf_of(&html);
    let (page_id, page_hash) = &ids[0];
    let (api_id, api_hash) = &ids[1];
    form(
        &app,
        Some(&cookie),
        &format!("/proposals/{page_id}/approve"),
        &[
            ("csrf", &csrf),
            ("payload_hash", page_hash),
            ("comment", "yes"),
        ],
    )
    .await;
    let response = app
        .client
        .post(app.url(&format!("/api/v1/proposals/{api_id}/approve")))
        .bearer_auth(&token)
        .json(&serde_json::json!({"comment": "yes", "payload_hash": crate::api::shown(&app, api_id).await}))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status().as_u16(), 200);
    let approved: Vec<(String, Value)> = sqlx::query_as(
        "SELECT aggregate_id, payload::jsonb FROM events WHERE event_type = 'Approved' ORDER BY aggregate_id",
    )
    .fetch_all(app.store.pool())
    .await
    .expect("two approvals");
    assert_eq!(approved.len(), 2);
    let by_id = |id: &str| {
        approved
            .iter()
            .find(|(a, _)| a == id)
            .map(|(_, p)| p["Approved"].clone())
            .expect("approved")
    };
    let (from_page, from_api) = (by_id(page_id), by_id(api_id));
    for field in ["actor", "role", "comment"] {
        assert_eq!(from_page[field], from_api[field], "{field}");
    }
    assert_eq!(from_page["payload_hash"], page_hash.as_str());
    assert_eq!(from_api["payload_hash"], api_hash.as_str());
    app.stop().await;
}

#[tokio::test]
async fn a_session_outlives_neither_its_idle_limit_nor_its_user() {
    let mut pairs: Vec<(&str, &str)> = crate::webhooks::SECRETS.to_vec();
    pairs.push(("EXECOPS_SESSION_IDLE_MINUTES", "0"));
    let app = TestApp::spawn_with(crate::common::config(&pairs)).await;
    let email = Email::parse("approver@example.com").expect("email");
    app.store
        .user(
            &email,
            UserCommand::Add {
                email: email.clone(),
                role: Role::Approver,
                password_hash: hash_password(PASSWORD).expect("hash"),
                by: "test".into(),
            },
            Default::default(),
        )
        .await
        .expect("added");
    crate::common::eventually(
        std::time::Duration::from_secs(10),
        "the person projected",
        || async {
            execops::projections::users::credentials(app.store.pool(), "approver@example.com")
                .await
                .ok()
                .flatten()
                .is_some()
        },
    )
    .await;
    let cookie = sign_in(&app, "approver@example.com").await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let (status, _, _) = page(&app, Some(&cookie), "/inbox").await;
    assert_eq!(
        status, 303,
        "an idle limit of zero ends the session at once"
    );
    app.stop().await;
}

#[tokio::test]
async fn paging_reads_a_session_and_writes_it_only_when_its_last_touch_is_a_minute_old() {
    let app = TestApp::spawn_with(configured()).await;
    person(&app, "approver@example.com", Role::Approver).await;
    let cookie = sign_in(&app, "approver@example.com").await;
    let last_seen = || async {
        sqlx::query_scalar::<_, chrono::DateTime<chrono::Utc>>("SELECT last_seen_at FROM sessions")
            .fetch_one(app.store.pool())
            .await
            .expect("the session")
    };
    let started = last_seen().await;
    for _ in 0..3 {
        assert_eq!(page(&app, Some(&cookie), "/inbox").await.0, 200);
    }
    assert_eq!(
        last_seen().await,
        started,
        "paging within the minute writes nothing"
    );
    sqlx::query("UPDATE sessions SET last_seen_at = last_seen_at - interval '2 minutes'")
        .execute(app.store.pool())
        .await
        .expect("an older touch");
    assert_eq!(page(&app, Some(&cookie), "/inbox").await.0, 200);
    assert!(
        last_seen().await > started,
        "a touch older than a minute is written again"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_sign_in_forgets_sessions_that_have_ended() {
    let app = TestApp::spawn_with(configured()).await;
    person(&app, "approver@example.com", Role::Approver).await;
    for (id, expires, seen) in [
        (
            "past its absolute limit",
            "now() - interval '1 minute'",
            "now()",
        ),
        (
            "idle too long",
            "now() + interval '1 day'",
            "now() - interval '13 hours'",
        ),
        ("still live", "now() + interval '1 day'", "now()"),
    ] {
        sqlx::query(&format!(
            "INSERT INTO sessions (id_hash, email, csrf_token, expires_at, last_seen_at) \
             VALUES ($1, 'approver@example.com', 'x', {expires}, {seen})"
        ))
        .bind(id)
        .execute(app.store.pool())
        .await
        .expect("a session");
    }
    sign_in(&app, "approver@example.com").await;
    let kept: Vec<String> = sqlx::query_scalar(
        "SELECT id_hash FROM sessions WHERE length(id_hash) < 40 ORDER BY id_hash",
    )
    .fetch_all(app.store.pool())
    .await
    .expect("the sessions");
    assert_eq!(kept, ["still live"]);
    app.stop().await;
}

#[tokio::test]
async fn the_audit_log_shows_who_decided_filters_and_exports_csv() {
    let app = TestApp::spawn_with(configured()).await;
    let ids = proposals(&app).await;
    let token = person(&app, "approver@example.com", Role::Approver).await;
    let (id, _) = &ids[0];
    let response = app
        .client
        .post(app.url(&format!("/api/v1/proposals/{id}/reject")))
        .bearer_auth(&token)
        .json(&serde_json::json!({"reason": "not now"}))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status().as_u16(), 200);
    crate::policies::settle(&app).await;
    let cookie = sign_in(&app, "approver@example.com").await;
    let (status, html, _) = page(&app, Some(&cookie), "/audit?actor=approver%40example.com").await;
    assert_eq!(status, 200);
    assert!(
        html.contains("<td>approver@example.com</td><td>Rejected</td>"),
        "{html}"
    );
    assert!(!html.contains("<td>Drafted</td>"), "filtered by actor");
    let (status, html, _) = page(&app, Some(&cookie), "/audit?action=Drafted").await;
    assert_eq!(status, 200);
    assert_eq!(html.matches("<td>Drafted</td>").count(), 2);
    let (status, csv, headers) =
        page(&app, Some(&cookie), "/audit?format=csv&action=Rejected").await;
    assert_eq!(status, 200);
    assert!(headers["content-type"]
        .to_str()
        .unwrap_or_default()
        .starts_with("text/csv"));
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "recorded_at,actor,action,record_type,record_id,role,from_status,to_status,seq,hash"
    );
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(
        lines[1].contains("\"approver@example.com\",\"Rejected\",\"Proposal\""),
        "{csv}"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_inbox_stream_announces_new_proposals_and_the_list_comes_as_a_fragment() {
    let app = TestApp::spawn_with(configured()).await;
    person(&app, "viewer@example.com", Role::Viewer).await;
    let cookie = sign_in(&app, "viewer@example.com").await;
    let mut stream = browser()
        .get(app.url("/inbox/stream"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("a stream");
    assert_eq!(stream.status().as_u16(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    proposals(&app).await;
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !seen.contains("event: proposals") {
        assert!(std::time::Instant::now() < deadline, "no event: {seen}");
        if let Ok(Ok(Some(chunk))) =
            tokio::time::timeout(std::time::Duration::from_secs(1), stream.chunk()).await
        {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    let fragment = browser()
        .get(app.url("/inbox"))
        .header("cookie", &cookie)
        .header("hx-request", "true")
        .send()
        .await
        .expect("an answer")
        .text()
        .await
        .unwrap_or_default();
    assert!(fragment.contains("class=\"card "));
    assert!(!fragment.contains("<html"), "only the list");
    app.stop().await;
}

#[tokio::test]
async fn bulk_approval_approves_every_selected_card_and_counts_what_it_could_not() {
    let app = TestApp::spawn_with(configured()).await;
    let ids = proposals(&app).await;
    person(&app, "approver@example.com", Role::Approver).await;
    person(&app, "viewer@example.com", Role::Viewer).await;
    let cookie = sign_in(&app, "approver@example.com").await;
    let (_, html, _) = page(&app, Some(&cookie), "/inbox").await;
    assert!(html.contains("Approve selected"));
    let csrf = csrf_of(&html);
    let selected: Vec<String> = ids
        .iter()
        .map(|(id, hash)| format!("{id}:{hash}"))
        .collect();
    let mut fields: Vec<(&str, &str)> = selected.iter().map(|s| ("selected", s.as_str())).collect();
    let (status, _, _) = form(&app, Some(&cookie), "/proposals/approve-selected", &fields).await;
    assert_eq!(status, 403, "no CSRF token");
    let viewer = sign_in(&app, "viewer@example.com").await;
    let (_, viewer_html, _) = page(&app, Some(&viewer), "/inbox").await;
    assert!(!viewer_html.contains("Approve selected"));
    let viewer_csrf = csrf_of(&viewer_html);
    let mut forged = fields.clone();
    forged.push(("csrf", &viewer_csrf));
    let (status, _, _) = form(&app, Some(&viewer), "/proposals/approve-selected", &forged).await;
    assert_eq!(status, 403, "a viewer");

    // One of them is decided meanwhile.
    let token = person(&app, "other@example.com", Role::Approver).await;
    let response = app
        .client
        .post(app.url(&format!("/api/v1/proposals/{}/reject", ids[0].0)))
        .bearer_auth(&token)
        .json(&serde_json::json!({"reason": "no"}))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status().as_u16(), 200);
    fields.push(("csrf", &csrf));
    let (status, location, _) =
        form(&app, Some(&cookie), "/proposals/approve-selected", &fields).await;
    assert_eq!((status, location.as_str()), (303, "/inbox?notice=bulk-1-1"));
    settle(&app).await;
    assert_eq!(status_of(&app, &ids[0].0).await, "rejected");
    assert!(was_approved(&app, &ids[1].0).await);
    let (_, html, _) = page(&app, Some(&cookie), &location).await;
    assert!(html.contains("Approved 1; 1 could not be"), "{html}");
    app.stop().await;
}

#[tokio::test]
async fn with_htmx_a_decision_answers_with_the_fragment_that_replaces_the_card() {
    let app = TestApp::spawn_with(configured()).await;
    let ids = proposals(&app).await;
    person(&app, "approver@example.com", Role::Approver).await;
    let cookie = sign_in(&app, "approver@example.com").await;
    let (_, html, _) = page(&app, Some(&cookie), "/inbox").await;
    assert!(
        html.contains("hx-post=\"/proposals/"),
        "the forms are htmx-enabled"
    );
    assert!(html.contains("src=\"/static/htmx.min.js\""));
    let csrf = csrf_of(&html);
    let (id, hash) = &ids[0];
    let response = browser()
        .post(app.url(&format!("/proposals/{id}/reject")))
        .header("cookie", &cookie)
        .header("hx-request", "true")
        .header("x-csrf-token", &csrf)
        .form(&[("payload_hash", hash.as_str()), ("reason", "not now")])
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status().as_u16(), 200);
    let fragment = response.text().await.unwrap_or_default();
    assert_eq!(
        fragment,
        format!("<p class=\"notice\" role=\"status\" id=\"p-{id}\">Rejected.</p>")
    );
    let (status, script, headers) = page(&app, None, "/static/htmx.min.js").await;
    assert_eq!(status, 200);
    assert!(headers["content-type"]
        .to_str()
        .unwrap_or_default()
        .starts_with("text/javascript"));
    assert!(script.contains("htmx"), "the embedded htmx");
    app.stop().await;
}

#[tokio::test]
async fn the_queue_filters_by_status_owner_and_vertical_and_cards_link_their_signal() {
    let app = TestApp::spawn_with(configured()).await;
    let ids = proposals(&app).await;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/github/workflow_run.completed.failure.json");
    let delivery = execops::send::prepare(
        &path,
        &configured(),
        &format!("http://{}", app.addr),
        chrono::Utc::now(),
    )
    .expect("signs");
    post(&app, &delivery).await;
    settle(&app).await;
    let token = person(&app, "approver@example.com", Role::Approver).await;
    let response = app
        .client
        .post(app.url(&format!("/api/v1/proposals/{}/reject", ids[0].0)))
        .bearer_auth(&token)
        .json(&serde_json::json!({"reason": "no"}))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status().as_u16(), 200);
    settle(&app).await;
    let cookie = sign_in(&app, "approver@example.com").await;
    let count = |html: &str| html.matches("class=\"card ").count();
    let (_, all, _) = page(&app, Some(&cookie), "/queue").await;
    assert_eq!(
        count(&all),
        3,
        "pending: one payment email and two CI proposals"
    );
    let (_, engineering, _) = page(&app, Some(&cookie), "/queue?vertical=engineering").await;
    assert_eq!(count(&engineering), 2);
    let (_, owned, _) = page(&app, Some(&cookie), "/queue?owner=%23founders").await;
    assert_eq!(
        count(&owned),
        0,
        "the owner's DM was rejected; nothing else pending is theirs"
    );
    let (_, rejected, _) = page(&app, Some(&cookie), "/queue?status=rejected").await;
    assert_eq!(count(&rejected), 1);
    assert!(rejected.contains("DM the account owner"));
    let (status, bogus, _) = page(
        &app,
        Some(&cookie),
        "/queue?status=%27%3B%20DROP%20TABLE%20events&vertical=nope",
    )
    .await;
    assert_eq!(status, 200, "unknown filter values are ignored");
    assert_eq!(count(&bogus), 3);

    // Each card links the signal it came from.
    let link = all
        .split("href=\"/signals/")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a signal link");
    let (status, signal, _) = page(&app, Some(&cookie), &format!("/signals/{link}")).await;
    assert_eq!(status, 200);
    assert!(signal.contains("As it was delivered"));
    assert!(signal.contains("<pre>{"), "the payload is shown: {signal}");
    let (status, _, _) = page(&app, Some(&cookie), "/signals/stripe:evt_none").await;
    assert_eq!(status, 404);
    app.stop().await;
}

#[tokio::test]
async fn a_session_ends_at_its_absolute_limit_however_active() {
    let mut pairs: Vec<(&str, &str)> = crate::webhooks::SECRETS.to_vec();
    pairs.push(("EXECOPS_SESSION_MAX_HOURS", "0"));
    let app = TestApp::spawn_with(crate::common::config(&pairs)).await;
    person(&app, "approver@example.com", Role::Approver).await;
    let cookie = sign_in(&app, "approver@example.com").await;
    let (status, _, _) = page(&app, Some(&cookie), "/inbox").await;
    assert_eq!(
        status, 303,
        "an absolute limit of zero ends the session at once"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_sign_in_posted_from_another_site_is_refused() {
    let app = TestApp::spawn_with(configured()).await;
    person(&app, "approver@example.com", Role::Approver).await;
    let ours = format!("http://{}", app.addr);
    for (headers, expected) in [
        (vec![("sec-fetch-site", "cross-site")], 403),
        (vec![("sec-fetch-site", "same-site")], 403),
        (vec![("origin", "https://evil.example")], 403),
        (vec![("origin", "null")], 403),
        (
            vec![("sec-fetch-site", "same-origin"), ("origin", ours.as_str())],
            303,
        ),
        (vec![("sec-fetch-site", "none")], 303),
        (vec![], 303),
    ] {
        let mut request = browser()
            .post(app.url("/login"))
            .form(&[("email", "approver@example.com"), ("password", PASSWORD)]);
        for (name, value) in &headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("an answer");
        assert_eq!(response.status().as_u16(), expected, "{headers:?}");
        if expected == 403 {
            let html = response.text().await.unwrap_or_default();
            assert!(html.contains("sent from another site"), "{html}");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn behind_https_the_session_cookie_is_secure_and_host_prefixed() {
    let mut pairs: Vec<(&str, &str)> = crate::webhooks::SECRETS.to_vec();
    pairs.push(("EXECOPS_PUBLIC_URL", "https://execops.example.com"));
    let app = TestApp::spawn_with(crate::common::config(&pairs)).await;
    person(&app, "approver@example.com", Role::Approver).await;
    let response = browser()
        .post(app.url("/login"))
        .header("origin", "https://execops.example.com")
        .form(&[("email", "approver@example.com"), ("password", PASSWORD)])
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status().as_u16(), 303);
    let set = response.headers()["set-cookie"]
        .to_str()
        .expect("a cookie")
        .to_string();
    assert!(set.starts_with("__Host-execops_session="), "{set}");
    assert!(
        set.contains("; Secure") && set.contains("Path=/") && !set.contains("Domain"),
        "{set}"
    );
    let cookie = set.split(';').next().expect("name=value").to_string();
    let (status, _, _) = page(&app, Some(&cookie), "/inbox").await;
    assert_eq!(status, 200, "the prefixed cookie signs the person in");
    let plain = cookie.replacen("__Host-", "", 1);
    let (status, _, _) = page(&app, Some(&plain), "/inbox").await;
    assert_eq!(status, 303, "the unprefixed name is not read");
    app.stop().await;
}
