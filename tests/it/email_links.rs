//! Approval emails and their links, against a real SMTP server on loopback: one email per
//! proposal per approver, links that only show on GET, decide once on POST, and refuse
//! anything tampered with, expired, spent, cross-site or held by someone no longer allowed.

use std::collections::HashMap;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::Utc;
use execops::domain::user::{Email, UserCommand};
use execops::domain::{ProposalCommand, Revision, Role, Urgency};
use execops::notify::links::{nonce, LinkClaims, LinkKey};
use execops::store::subscription::backlog;
use reqwest::redirect::Policy;
use serde_json::{json, Value};

use crate::adapters::{Mail, Smtp};
use crate::api::person;
use crate::common::{config, count, eventually, TestApp};
use crate::execution::{events_of, payload_of, proposal};

const SECRET: &str = "a link secret of at least thirty-two bytes";
const REQUESTER: &str = "req@example.com";

/// The app with a mail server, its people, and nothing drafted yet.
struct Setup {
    app: TestApp,
    smtp: Smtp,
}

async fn setup(secret: Option<&str>) -> Setup {
    let smtp = Smtp::start();
    let smtp_url = format!("smtp://{}", smtp.addr);
    let mut pairs = vec![
        ("SMTP_URL", smtp_url.as_str()),
        ("EXECOPS_EMAIL_FROM", "ExecOps <execops@acme.test>"),
        ("EXECOPS_PUBLIC_URL", "https://ops.acme.test"),
    ];
    if let Some(secret) = secret {
        pairs.push(("EXECOPS_LINK_SECRET", secret));
    }
    let app = TestApp::spawn_with(config(&pairs)).await;
    person(&app, "ann@example.com", Role::Approver).await;
    person(&app, "boss@example.com", Role::Admin).await;
    person(&app, "vic@example.com", Role::Viewer).await;
    person(&app, REQUESTER, Role::Approver).await;
    Setup { app, smtp }
}

/// Drafts a proposal with `urgency`, requested by [`REQUESTER`].
async fn draft(app: &TestApp, name: &str, urgency: Urgency) -> String {
    draft_needing(app, name, urgency, 1).await
}

/// As [`draft`], needing `approvals` distinct approvers.
async fn draft_needing(app: &TestApp, name: &str, urgency: Urgency, approvals: u32) -> String {
    let mut draft = proposal(
        name,
        "slack.post_message",
        json!({"channel": "#ops", "text": format!("{name} needs doing\nby the on-call person")}),
    );
    draft.urgency = urgency;
    draft.requested_by = Some(REQUESTER.into());
    draft.reasoning = format!("Because {name} matters.");
    draft.terms.approvals_needed = approvals;
    let id = draft.id.to_string();
    app.store
        .proposal(&id, ProposalCommand::Draft(draft), HashMap::new())
        .await
        .expect("drafted");
    id
}

/// Waits until these subscriptions have applied everything in the log.
async fn idle(app: &TestApp) {
    let pool = app.store.pool();
    eventually(
        Duration::from_secs(20),
        "the subscriptions idle",
        || async {
            for name in ["proposals", "users", "email_approvals"] {
                match backlog(pool, name).await {
                    Ok(b) if b.events == 0 => {}
                    _ => return false,
                }
            }
            true
        },
    )
    .await;
}

/// The message as a reader sees it: quoted-printable soft breaks and `=3D` undone.
fn readable(mail: &Mail) -> String {
    mail.data.replace("=\r\n", "").replace("=3D", "=")
}

/// The token after `label` in the plain-text part, e.g. `Approve: https://…/links/TOKEN`.
fn token_after(mail: &Mail, label: &str) -> String {
    let text = readable(mail);
    let start = text
        .find(&format!("{label} https://ops.acme.test/links/"))
        .unwrap_or_else(|| panic!("no {label} link in {text}"));
    let rest = &text[start..];
    let rest = &rest[rest.find("/links/").expect("a link") + "/links/".len()..];
    rest.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .collect()
}

fn claims_of(token: &str) -> Value {
    let body = token.split('.').next().expect("claims");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).expect("base64url")).expect("json")
}

/// Waits for `n` emails and returns them by recipient.
async fn mails(smtp: &Smtp, n: usize) -> HashMap<String, Mail> {
    eventually(Duration::from_secs(20), &format!("{n} emails"), || async {
        smtp.messages().len() >= n
    })
    .await;
    smtp.messages()
        .into_iter()
        .map(|m| (m.to.join(","), m))
        .collect()
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("a client")
}

async fn get(app: &TestApp, token: &str) -> (u16, String) {
    let response = browser()
        .get(app.url(&format!("/links/{token}")))
        .send()
        .await
        .expect("an answer");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

async fn post(app: &TestApp, token: &str, fields: &[(&str, &str)]) -> (u16, String) {
    let response = browser()
        .post(app.url(&format!("/links/{token}")))
        .header("origin", format!("http://{}", app.addr))
        .form(fields)
        .send()
        .await
        .expect("an answer");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

async fn decisions(app: &TestApp, id: &str) -> usize {
    events_of(app, id)
        .await
        .iter()
        .filter(|e| *e == "Approved" || *e == "Rejected")
        .count()
}

async fn status_of(app: &TestApp, id: &str) -> String {
    sqlx::query_scalar("SELECT status FROM proposal_summaries WHERE id = $1")
        .bind(id)
        .fetch_one(app.store.pool())
        .await
        .expect("a status")
}

/// A pending high-urgency proposal and the email Ann got about it.
async fn emailed(secret: Option<&str>) -> (Setup, String, Mail) {
    let setup = setup(secret).await;
    let id = draft(&setup.app, "outage", Urgency::High).await;
    let mut mails = mails(&setup.smtp, 2).await;
    idle(&setup.app).await;
    let mail = mails.remove("ann@example.com").expect("Ann's email");
    (setup, id, mail)
}

#[tokio::test]
async fn an_urgent_proposal_emails_each_approver_once_with_two_links() {
    // No EXECOPS_LINK_SECRET: the key is generated and kept in Postgres.
    let Setup { app, smtp } = setup(None).await;
    let calm = draft(&app, "calm", Urgency::Medium).await;
    let id = draft(&app, "outage", Urgency::Critical).await;
    idle(&app).await;
    let mails = mails(&smtp, 2).await;
    let mut to: Vec<&str> = mails.keys().map(String::as_str).collect();
    to.sort();
    assert_eq!(
        to,
        ["ann@example.com", "boss@example.com"],
        "approvers and admins, not the viewer, not the requester, once each"
    );
    for (who, mail) in &mails {
        let text = readable(mail);
        assert_eq!(mail.from, "execops@acme.test");
        assert!(
            text.contains("Subject: [ExecOps] Approval needed: Test outage"),
            "{text}"
        );
        assert!(text.contains(&format!("Message-ID: <approval.{id}.drafted.")));
        assert!(text.contains("multipart/alternative") && text.contains("text/html"));
        for shown in [
            "Because outage matters.",
            "Urgency: critical",
            "Score: 50/100",
            "slack.post_message",
            "To: Slack #ops",
            "> outage needs doing",
            "> by the on-call person",
            "To</th><td>Slack #ops</td>",
        ] {
            assert!(text.contains(shown), "{who}: no {shown:?} in {text}");
        }
        let approve = token_after(mail, "Approve:");
        let reject = token_after(mail, "Reject: ");
        assert_ne!(approve, reject);
        for (token, decision) in [(&approve, "a"), (&reject, "r")] {
            let claims = claims_of(token);
            assert_eq!(claims["p"], id.as_str());
            assert_eq!(claims["e"], who.as_str());
            assert_eq!(claims["d"], decision);
            let expires = claims["x"].as_i64().expect("an expiry");
            let in_72h = (Utc::now() + chrono::Duration::hours(72)).timestamp();
            assert!((in_72h - 120..=in_72h).contains(&expires), "{expires}");
        }
    }
    let recorded = count(
        app.store.pool(),
        "SELECT count(*) FROM approval_emails WHERE reason = 'drafted' AND failure IS NULL",
    )
    .await;
    assert_eq!(recorded, 2);
    let about_calm: i64 =
        sqlx::query_scalar("SELECT count(*) FROM approval_emails WHERE proposal_id = $1")
            .bind(&calm)
            .fetch_one(app.store.pool())
            .await
            .expect("a count");
    assert_eq!(about_calm, 0, "a medium-urgency proposal mails nobody");
    // A process that dies after sending and before its checkpoint commits: the next one
    // handles the events again and sends nothing twice.
    let pool = app.store.pool().clone();
    let settings = [
        ("SMTP_URL", format!("smtp://{}", smtp.addr)),
        ("EXECOPS_PUBLIC_URL", "https://ops.acme.test".to_string()),
    ];
    app.stop().await;
    sqlx::query(
        "UPDATE subscription_checkpoints SET transaction_id = '0'::xid8, position = 0 \
         WHERE name = 'email_approvals'",
    )
    .execute(&pool)
    .await
    .expect("rewound");
    let borrowed: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = TestApp::spawn_on(pool, config(&borrowed)).await;
    idle(&app).await;
    assert_eq!(smtp.messages().len(), 2, "no email sent twice");
    // The generated key verifies the links it signed.
    let key = LinkKey::load(app.store.pool(), &config(&[]).links)
        .await
        .expect("the stored key");
    let token = token_after(&mails["ann@example.com"], "Approve:");
    assert!(key.verify(&token, Utc::now()).is_ok());
    app.stop().await;
}

#[tokio::test]
async fn an_escalation_emails_the_named_approvers_with_new_links() {
    let Setup { app, smtp } = setup(Some(SECRET)).await;
    let id = draft(&app, "outage", Urgency::High).await;
    mails(&smtp, 2).await;
    idle(&app).await;
    // As the escalation feature records it; appended by hand, its variant being newer.
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
           payload, metadata) \
         VALUES ('Proposal', $1, 2, 'Escalated', '1.0', $2, '{}')",
    )
    .bind(&id)
    .bind(json!({"Escalated": {
        "at": Utc::now(),
        "level": 1,
        "to": ["Boss@Example.com", "vic@example.com", REQUESTER, "stranger@example.com"]
    }}))
    .execute(app.store.pool())
    .await
    .expect("escalated");
    eventually(Duration::from_secs(20), "the escalation email", || async {
        smtp.messages().len() >= 3
    })
    .await;
    // Only the notifier: this build's projections do not know the event yet.
    let pool = app.store.pool();
    eventually(Duration::from_secs(20), "the notifier idle", || async {
        backlog(pool, "email_approvals")
            .await
            .is_ok_and(|b| b.events == 0)
    })
    .await;
    let messages = smtp.messages();
    assert_eq!(messages.len(), 3, "only the named approver or admin");
    let escalation = &messages[2];
    assert_eq!(escalation.to, ["boss@example.com"]);
    let text = readable(escalation);
    assert!(text.contains("Subject: [ExecOps] Escalated (level 1): Test outage"));
    assert!(text.contains("escalated to you (level 1)"));
    let first = token_after(
        messages
            .iter()
            .find(|m| m.to == ["boss@example.com"])
            .expect("the first email"),
        "Approve:",
    );
    let again = token_after(escalation, "Approve:");
    assert_ne!(first, again, "new links with new nonces");
    // The aggregate of this build cannot load the hand-made event, so the link is checked
    // with the key rather than used.
    let claims = LinkKey::from_bytes(SECRET.as_bytes())
        .verify(&again, Utc::now())
        .expect("a genuine link");
    assert_eq!(claims.approver, "boss@example.com");
    assert_eq!(claims.proposal, id);
    app.stop().await;
}

#[tokio::test]
async fn opening_a_link_as_a_scanner_would_changes_nothing() {
    let (Setup { app, .. }, id, mail) = emailed(Some(SECRET)).await;
    let token = token_after(&mail, "Approve:");
    for _ in 0..3 {
        let (status, html) = get(&app, &token).await;
        assert_eq!(status, 200);
        assert!(html.contains("Approve this proposal?"), "{html}");
        assert!(html.contains("Test outage") && html.contains("Because outage matters."));
        assert!(
            html.contains(&format!("<form method=\"post\" action=\"/links/{token}\"")),
            "{html}"
        );
    }
    let head = browser()
        .head(app.url(&format!("/links/{token}")))
        .send()
        .await
        .expect("an answer");
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["cache-control"], "no-store");
    let prefetch = browser()
        .get(app.url(&format!("/links/{token}")))
        .header("purpose", "prefetch")
        .header("sec-purpose", "prefetch")
        .send()
        .await
        .expect("an answer");
    assert_eq!(prefetch.status(), 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(events_of(&app, &id).await, ["Drafted"]);
    assert_eq!(status_of(&app, &id).await, "pending");
    assert_eq!(
        count(app.store.pool(), "SELECT count(*) FROM used_approval_links").await,
        0
    );
    app.stop().await;
}

#[tokio::test]
async fn a_link_decides_once_and_a_second_use_is_told_it_was_used() {
    let (Setup { app, .. }, id, mail) = emailed(Some(SECRET)).await;
    let token = token_after(&mail, "Approve:");
    let (status, html) = post(&app, &token, &[("comment", "go ahead")]).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("You approved it"), "{html}");
    let approved = payload_of(&app, &id, "Approved").await;
    assert_eq!(approved["actor"], "ann@example.com");
    assert_eq!(approved["role"], "approver");
    assert_eq!(approved["comment"], "go ahead");
    assert_eq!(approved["payload_hash"], claims_of(&token)["h"]);
    let metadata: Value = sqlx::query_scalar(
        "SELECT metadata FROM events WHERE aggregate_id = $1 AND event_type = 'Approved'",
    )
    .bind(&id)
    .fetch_one(app.store.pool())
    .await
    .expect("metadata");
    assert_eq!(metadata["via"], "email");
    assert_eq!(metadata["link_nonce"], claims_of(&token)["n"]);

    let (status, html) = post(&app, &token, &[("comment", "again")]).await;
    assert_eq!(status, 409, "{html}");
    assert!(html.contains("This link was already used"), "{html}");
    assert!(html.contains("(approved)"), "{html}");
    idle(&app).await;
    let (status, html) = get(&app, &token).await;
    assert_eq!(status, 409);
    assert!(html.contains("This link was already used"), "{html}");
    assert!(html.contains("It was approved (now "), "{html}");
    assert_eq!(decisions(&app, &id).await, 1);
    app.stop().await;
}

#[tokio::test]
async fn two_simultaneous_posts_of_one_link_decide_once() {
    let (Setup { app, .. }, id, mail) = emailed(Some(SECRET)).await;
    let token = token_after(&mail, "Approve:");
    let (a, b) = tokio::join!(post(&app, &token, &[]), post(&app, &token, &[]));
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{} / {}", a.1, b.1);
    assert_eq!(decisions(&app, &id).await, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_tampered_link_is_refused_and_changes_nothing() {
    let (Setup { app, .. }, id, mail) = emailed(Some(SECRET)).await;
    let token = token_after(&mail, "Reject: ");
    let (body, tag) = token.split_once('.').expect("claims.mac");
    let edit = |change: &dyn Fn(&mut Value)| {
        let mut claims = claims_of(&token);
        change(&mut claims);
        format!(
            "{}.{tag}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("json"))
        )
    };
    let mut flipped = URL_SAFE_NO_PAD.decode(tag).expect("a MAC");
    flipped[5] ^= 0x40;
    let genuine: LinkClaims =
        serde_json::from_value(claims_of(&token)).expect("claims this build reads");
    let cases: Vec<(&str, String)> = vec![
        ("reject made approve", edit(&|c| c["d"] = json!("a"))),
        (
            "another approver",
            edit(&|c| c["e"] = json!("boss@example.com")),
        ),
        (
            "a later expiry",
            edit(&|c| c["x"] = json!(c["x"].as_i64().unwrap_or(0) + 86_400)),
        ),
        (
            "another payload hash",
            edit(&|c| c["h"] = json!("0".repeat(64))),
        ),
        (
            "the MAC edited",
            format!("{body}.{}", URL_SAFE_NO_PAD.encode(&flipped)),
        ),
        ("the MAC truncated", format!("{body}.{}", &tag[..20])),
        ("the MAC left off", body.to_string()),
        ("the link truncated", token[..token.len() - 30].to_string()),
        ("garbage", "garbage".into()),
        (
            "another key",
            LinkKey::from_bytes(b"another secret of thirty-two b!!").sign(&genuine),
        ),
    ];
    for (what, tampered) in &cases {
        let (status, html) = get(&app, tampered).await;
        assert_eq!(status, 400, "GET {what}");
        assert!(
            html.contains("This link is not valid"),
            "GET {what}: {html}"
        );
        let (status, html) = post(&app, tampered, &[("reason", "no")]).await;
        assert_eq!(status, 400, "POST {what}");
        assert!(
            html.contains("This link is not valid"),
            "POST {what}: {html}"
        );
    }
    assert_eq!(events_of(&app, &id).await, ["Drafted"]);
    assert_eq!(
        count(app.store.pool(), "SELECT count(*) FROM used_approval_links").await,
        0
    );
    // The genuine link still works after all that.
    let (status, _) = post(&app, &token, &[("reason", "not now")]).await;
    assert_eq!(status, 200);
    app.stop().await;
}

#[tokio::test]
async fn an_expired_link_gets_the_expired_page_and_changes_nothing() {
    let (Setup { app, .. }, id, mail) = emailed(Some(SECRET)).await;
    let mut claims: LinkClaims =
        serde_json::from_value(claims_of(&token_after(&mail, "Approve:"))).expect("claims");
    claims.expires = Utc::now().timestamp() - 1;
    claims.nonce = nonce();
    let expired = LinkKey::from_bytes(SECRET.as_bytes()).sign(&claims);
    let (status, html) = get(&app, &expired).await;
    assert_eq!(status, 410);
    assert!(html.contains("This link has expired") && html.contains("href=\"/login\""));
    let (status, html) = post(&app, &expired, &[]).await;
    assert_eq!(status, 410, "{html}");
    assert_eq!(events_of(&app, &id).await, ["Drafted"]);
    app.stop().await;
}

#[tokio::test]
async fn a_reject_link_rejects_with_the_reason_and_asks_for_one_first() {
    let (Setup { app, .. }, id, mail) = emailed(Some(SECRET)).await;
    let token = token_after(&mail, "Reject: ");
    let (status, html) = get(&app, &token).await;
    assert_eq!(status, 200);
    assert!(html.contains("Reject this proposal?") && html.contains("name=\"reason\""));
    for blank in [vec![], vec![("reason", "   ")]] {
        let (status, html) = post(&app, &token, &blank).await;
        assert_eq!(status, 400, "{html}");
        assert!(html.contains("A rejection needs a reason"));
    }
    assert_eq!(events_of(&app, &id).await, ["Drafted"]);
    let (status, html) = post(&app, &token, &[("reason", "we fixed it by hand")]).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("You rejected it"));
    let rejected = payload_of(&app, &id, "Rejected").await;
    assert_eq!(rejected["reason"], "we fixed it by hand");
    assert_eq!(rejected["actor"], "ann@example.com");
    assert_eq!(decisions(&app, &id).await, 1);
    app.stop().await;
}

#[tokio::test]
async fn an_approver_demoted_after_the_email_is_refused() {
    let (Setup { app, .. }, id, mail) = emailed(Some(SECRET)).await;
    let token = token_after(&mail, "Approve:");
    let ann = Email::parse("ann@example.com").expect("an email");
    app.store
        .user(
            &ann,
            UserCommand::GrantRole {
                role: Role::Viewer,
                by: "boss@example.com".into(),
            },
            Default::default(),
        )
        .await
        .expect("demoted");
    idle(&app).await;
    let (status, html) = post(&app, &token, &[]).await;
    assert_eq!(status, 403, "{html}");
    assert!(
        html.contains("Not allowed") && html.contains("viewer"),
        "{html}"
    );
    assert_eq!(events_of(&app, &id).await, ["Drafted"]);
    assert_eq!(status_of(&app, &id).await, "pending");
    app.stop().await;
}

#[tokio::test]
async fn a_disabled_approvers_link_is_refused() {
    let (Setup { app, .. }, id, mail) = emailed(Some(SECRET)).await;
    let token = token_after(&mail, "Approve:");
    app.store
        .user(
            &Email::parse("ann@example.com").expect("an email"),
            UserCommand::Disable {
                by: "boss@example.com".into(),
            },
            Default::default(),
        )
        .await
        .expect("disabled");
    idle(&app).await;
    let (status, html) = post(&app, &token, &[]).await;
    assert_eq!(status, 403, "{html}");
    assert!(html.contains("Not allowed"), "{html}");
    assert_eq!(events_of(&app, &id).await, ["Drafted"]);
    assert_eq!(status_of(&app, &id).await, "pending");
    app.stop().await;
}

#[tokio::test]
async fn a_cross_site_post_is_refused_and_the_link_still_works() {
    let (Setup { app, .. }, id, mail) = emailed(Some(SECRET)).await;
    let token = token_after(&mail, "Approve:");
    for (name, value) in [
        ("origin", "https://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let response = browser()
            .post(app.url(&format!("/links/{token}")))
            .header(name, value)
            .form(&[("comment", "")])
            .send()
            .await
            .expect("an answer");
        assert_eq!(response.status(), 403, "{name}: {value}");
    }
    assert_eq!(events_of(&app, &id).await, ["Drafted"]);
    let (status, _) = post(&app, &token, &[]).await;
    assert_eq!(status, 200);
    app.stop().await;
}

#[tokio::test]
async fn a_link_to_a_proposal_that_changed_since_is_refused() {
    let (Setup { app, .. }, id, mail) = emailed(Some(SECRET)).await;
    let token = token_after(&mail, "Approve:");
    app.store
        .proposal(
            &id,
            ProposalCommand::Revise(Revision {
                title: "Test outage, worse".into(),
                action: json!({"channel": "#ops", "text": "something else entirely"}),
                reasoning: "It got worse.".into(),
                drivers: vec![],
                score: 80,
                urgency: Urgency::Critical,
                due_by: None,
                inbound_id: "test:outage-2".into(),
                terms: None,
            }),
            HashMap::new(),
        )
        .await
        .expect("revised");
    idle(&app).await;
    let (status, html) = get(&app, &token).await;
    assert_eq!(status, 409);
    assert!(html.contains("The proposal changed"), "{html}");
    let (status, html) = post(&app, &token, &[]).await;
    assert_eq!(status, 409, "{html}");
    assert!(html.contains("The proposal changed"), "{html}");
    assert_eq!(decisions(&app, &id).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_link_held_by_the_requester_cannot_approve_their_own_proposal() {
    let (Setup { app, .. }, id, mail) = emailed(Some(SECRET)).await;
    // No email goes to the requester; a link made out to them anyway meets the same rule.
    let mut claims: LinkClaims =
        serde_json::from_value(claims_of(&token_after(&mail, "Approve:"))).expect("claims");
    claims.approver = REQUESTER.into();
    claims.nonce = nonce();
    let own = LinkKey::from_bytes(SECRET.as_bytes()).sign(&claims);
    let (status, html) = post(&app, &own, &[]).await;
    assert_eq!(status, 403, "{html}");
    assert!(
        html.contains("may not approve a proposal they requested"),
        "{html}"
    );
    assert_eq!(events_of(&app, &id).await, ["Drafted"]);
    app.stop().await;
}

#[tokio::test]
async fn a_mailbox_the_server_refuses_for_good_is_recorded_and_skipped() {
    let Setup { app, smtp } = setup(Some(SECRET)).await;
    // The test server answers 550 for `nobody@…`.
    person(&app, "nobody@example.com", Role::Approver).await;
    let id = draft(&app, "outage", Urgency::High).await;
    mails(&smtp, 2).await;
    idle(&app).await;
    let failure: Option<String> = sqlx::query_scalar(
        "SELECT failure FROM approval_emails WHERE proposal_id = $1 AND approver = $2",
    )
    .bind(&id)
    .bind("nobody@example.com")
    .fetch_one(app.store.pool())
    .await
    .expect("a row for the refused address");
    assert!(
        failure.is_some_and(|f| f.contains("550")),
        "recorded with the refusal"
    );
    assert_eq!(smtp.messages().len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn a_busy_mail_server_is_retried_without_sending_anyone_a_second_email() {
    let Setup { app, smtp } = setup(Some(SECRET)).await;
    // The test server answers 451 for `later@…`, after Ann's and Boss's emails went out.
    person(&app, "later@example.com", Role::Approver).await;
    let id = draft(&app, "outage", Urgency::High).await;
    mails(&smtp, 2).await;
    // Let the runner fail and retry a few times (100 ms, 200 ms, 400 ms …).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut to: Vec<String> = smtp.messages().iter().map(|m| m.to.join(",")).collect();
    to.sort();
    assert_eq!(to, ["ann@example.com", "boss@example.com"], "once each");
    let later = count(
        app.store.pool(),
        "SELECT count(*) FROM approval_emails WHERE approver = 'later@example.com'",
    )
    .await;
    assert_eq!(later, 0, "not recorded: it will be tried again");
    let behind = backlog(app.store.pool(), "email_approvals")
        .await
        .expect("a backlog");
    assert!(behind.events > 0, "the event waits for the mail server");
    assert_eq!(events_of(&app, &id).await, ["Drafted"]);
    app.stop().await;
}

/// With a quorum of two, the first link used records a vote and says the proposal waits for
/// another approver; the second approver's link approves it.
#[tokio::test]
async fn with_a_quorum_of_two_each_approvers_link_counts_once_and_the_second_approves() {
    let setup = setup(Some(SECRET)).await;
    let id = draft_needing(&setup.app, "payroll", Urgency::Critical, 2).await;
    let mut mails = mails(&setup.smtp, 2).await;
    idle(&setup.app).await;
    let app = &setup.app;
    let ann = token_after(&mails.remove("ann@example.com").expect("Ann's"), "Approve:");
    let boss = token_after(
        &mails.remove("boss@example.com").expect("Boss's"),
        "Approve:",
    );
    let (status, html) = post(app, &ann, &[]).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("Your approval is recorded"), "{html}");
    assert!(html.contains("1 of 2 approvals"), "{html}");
    assert_eq!(status_of(app, &id).await, "pending");
    assert_eq!(decisions(app, &id).await, 0);
    let (status, html) = post(app, &boss, &[]).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("You approved it"), "{html}");
    assert_eq!(decisions(app, &id).await, 1);
    let approvals = events_of(app, &id).await;
    assert!(
        approvals.contains(&"ApprovalAdded".to_string()),
        "{approvals:?}"
    );
    setup.app.stop().await;
}
