//! Approvals in Slack end to end: the approval message reaches a local Slack with its
//! buttons and the bot token; clicks and `/execops approve|reject`, signed as Slack signs
//! them, decide once through the shared decision path for the person linked to the Slack
//! member, and everyone else is told why nothing happened.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use execops::domain::user::{Email, SlackUserId, UserCommand};
use execops::domain::{ProposalCommand, Role, Urgency};
use execops::ingest::slack::sign;
use serde_json::{json, Value};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

use crate::api::person;
use crate::common::{count, eventually, TestApp};
use crate::execution::{events_of, payload_of, proposal, Fakes, SLACK_TOKEN};
use crate::policies::settle;
use crate::webhooks::SECRETS;

const ADA: &str = "ada@example.com";
const BOB: &str = "bob@example.com";
const VIC: &str = "vic@example.com";
const CAL: &str = "cal@example.com";
const REQ: &str = "req@example.com";

fn signing_secret() -> &'static str {
    SECRETS
        .iter()
        .find(|(k, _)| *k == "SLACK_SIGNING_SECRET")
        .map(|(_, v)| *v)
        .expect("a Slack signing secret in the test settings")
}

/// Slack's `users.info` as it answers with the bot token: what each member's profile says.
#[derive(Clone, Default)]
struct Members(Arc<Mutex<HashMap<String, Value>>>);

impl Members {
    fn say(&self, member: &str, email: &str, confirmed: bool) {
        self.0.lock().expect("lock").insert(
            member.to_string(),
            json!({"id": member, "is_email_confirmed": confirmed, "profile": {"email": email}}),
        );
    }
}

impl Respond for Members {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let authorised = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            == Some(format!("Bearer {SLACK_TOKEN}").as_str());
        if !authorised {
            return ResponseTemplate::new(200)
                .set_body_json(json!({"ok": false, "error": "not_authed"}));
        }
        let member = request
            .url
            .query_pairs()
            .find(|(k, _)| k == "user")
            .map(|(_, v)| v.to_string())
            .unwrap_or_default();
        match self.0.lock().expect("lock").get(&member) {
            Some(user) => {
                ResponseTemplate::new(200).set_body_json(json!({"ok": true, "user": user}))
            }
            None => ResponseTemplate::new(200)
                .set_body_json(json!({"ok": false, "error": "user_not_found"})),
        }
    }
}

/// A local Slack: `chat.postMessage`, `users.info` and response URLs; and ExecOps on it.
struct World {
    app: TestApp,
    fakes: Fakes,
    members: Members,
}

impl World {
    async fn start(extra: &[(&str, &str)]) -> Self {
        let fakes = Fakes::start().await;
        fakes.slack_accepts().await;
        let members = Members::default();
        Mock::given(method("GET"))
            .and(path("/users.info"))
            .respond_with(members.clone())
            .mount(&fakes.slack)
            .await;
        Mock::given(method("POST"))
            .and(path_regex("^/respond/"))
            .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
            .mount(&fakes.slack)
            .await;
        let mut settings = vec![("EXECOPS_PUBLIC_URL", "https://execops.example.com")];
        settings.extend_from_slice(extra);
        let app = TestApp::spawn_with(fakes.config(&settings)).await;
        Self {
            app,
            fakes,
            members,
        }
    }

    /// Adds a person, linked to `member` when given, and waits until both show.
    async fn person(&self, email: &str, role: Role, member: Option<&str>) {
        person(&self.app, email, role).await;
        if let Some(member) = member {
            link(&self.app, email, member).await;
        }
    }

    fn response_url(&self, tag: &str) -> String {
        format!("{}/respond/{tag}", self.fakes.slack.uri())
    }

    /// What reached the response URL `tag`.
    async fn responses(&self, tag: &str) -> Vec<Value> {
        let wanted = format!("/respond/{tag}");
        self.fakes
            .slack
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.url.path() == wanted)
            .filter_map(|r| serde_json::from_slice(&r.body).ok())
            .collect()
    }

    /// Waits for the one answer to the click whose response URL is `tag`.
    async fn answer(&self, tag: &str) -> Value {
        eventually(
            Duration::from_secs(20),
            "the answer through response_url",
            || async { !self.responses(tag).await.is_empty() },
        )
        .await;
        let answers = self.responses(tag).await;
        assert_eq!(answers.len(), 1, "{answers:?}");
        answers[0].clone()
    }

    async fn approval_posts(&self) -> Vec<(String, Value)> {
        self.fakes
            .slack
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.url.path() == "/chat.postMessage")
            .map(|r| {
                let auth = r
                    .headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                (auth, serde_json::from_slice(&r.body).unwrap_or(Value::Null))
            })
            .collect()
    }
}

pub(crate) async fn link(app: &TestApp, email: &str, member: &str) {
    let address = Email::parse(email).expect("an email");
    app.store
        .user(
            &address,
            UserCommand::LinkSlack {
                slack_user_id: SlackUserId::parse(member).expect("a member id"),
                by: "test".into(),
            },
            HashMap::new(),
        )
        .await
        .expect("linked");
    let pool = app.store.pool().clone();
    eventually(Duration::from_secs(10), "the link projected", || {
        let pool = pool.clone();
        async move {
            execops::projections::users::actor_for_slack(&pool, member)
                .await
                .ok()
                .flatten()
                .is_some()
        }
    })
    .await;
}

/// Drafts a proposal as the router would, with the urgency and requester given; the action
/// is an email, which no Slack call carries out.
async fn draft(app: &TestApp, name: &str, urgency: Urgency, requested_by: Option<&str>) -> String {
    draft_needing(app, name, urgency, requested_by, 1).await
}

/// As [`draft`], needing `approvals` distinct approvers.
async fn draft_needing(
    app: &TestApp,
    name: &str,
    urgency: Urgency,
    requested_by: Option<&str>,
    approvals: u32,
) -> String {
    let mut draft = proposal(
        name,
        "email.send",
        json!({"to": "customer@example.com", "subject": "Your card", "body": "Please update it."}),
    );
    draft.urgency = urgency;
    draft.requested_by = requested_by.map(str::to_string);
    draft.terms.approvals_needed = approvals;
    let id = draft.id.to_string();
    app.store
        .proposal(&id, ProposalCommand::Draft(draft), HashMap::new())
        .await
        .expect("drafted");
    id
}

async fn hash_of(app: &TestApp, id: &str) -> String {
    payload_of(app, id, "Drafted").await["payload_hash"]
        .as_str()
        .expect("a payload hash")
        .to_string()
}

static TRIGGERS: AtomicU32 = AtomicU32::new(0);

fn trigger_id() -> String {
    format!(
        "{}.{}.test",
        std::process::id(),
        TRIGGERS.fetch_add(1, Ordering::Relaxed)
    )
}

/// A block_actions payload as Slack sends it for a click on an ExecOps button.
fn click(action_id: &str, member: &str, value: &str, response_url: &str) -> Value {
    json!({
        "type": "block_actions",
        "user": {"id": member, "username": "someone", "name": "someone", "team_id": "T111"},
        "api_app_id": "A111",
        "container": {"type": "message", "message_ts": "1700000000.000100", "channel_id": "D111", "is_ephemeral": false},
        "trigger_id": trigger_id(),
        "team": {"id": "T111", "domain": "example"},
        "channel": {"id": "D111", "name": "directmessage"},
        "response_url": response_url,
        "actions": [{
            "action_id": action_id,
            "block_id": "execops_decision",
            "text": {"type": "plain_text", "text": "Approve"},
            "value": value,
            "type": "button",
            "action_ts": "1700000001.000200"
        }]
    })
}

fn interaction_body(payload: &Value) -> String {
    serde_urlencoded::to_string([("payload", payload.to_string())]).expect("a form")
}

/// Posts `body` to `path` signed with `secret` at `at` (unix seconds).
async fn deliver(app: &TestApp, path: &str, body: &str, at: i64, secret: &str) -> (u16, Value) {
    let response = app
        .client
        .post(app.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", at.to_string())
        .header("x-slack-signature", sign(secret, at, body.as_bytes()))
        .body(body.to_string())
        .send()
        .await
        .expect("the server answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn press(world: &World, payload: &Value) -> (u16, Value) {
    let body = interaction_body(payload);
    deliver(
        &world.app,
        "/webhooks/slack/interactions",
        &body,
        Utc::now().timestamp(),
        signing_secret(),
    )
    .await
}

async fn slash(world: &World, member: &str, text: &str) -> (u16, Value) {
    slash_in(world, "T111", member, text).await
}

/// `/execops TEXT` typed by `member` in the workspace `team`.
async fn slash_in(world: &World, team: &str, member: &str, text: &str) -> (u16, Value) {
    let body = serde_urlencoded::to_string([
        ("token", "legacy-verification-token"),
        ("team_id", team),
        ("channel_id", "D111"),
        ("user_id", member),
        ("user_name", "someone"),
        ("command", "/execops"),
        ("text", text),
        ("response_url", &world.response_url("slash")),
        ("trigger_id", &trigger_id()),
    ])
    .expect("a form");
    deliver(
        &world.app,
        "/webhooks/slack/commands",
        &body,
        Utc::now().timestamp(),
        signing_secret(),
    )
    .await
}

async fn decisions(app: &TestApp, id: &str) -> Vec<String> {
    events_of(app, id)
        .await
        .into_iter()
        .filter(|e| {
            matches!(
                e.as_str(),
                "Approved" | "Rejected" | "ApprovalAdded" | "RejectionAdded"
            )
        })
        .collect()
}

async fn inbound_count(app: &TestApp) -> i64 {
    count(
        app.store.pool(),
        "SELECT count(*) FROM events WHERE aggregate_type = 'Inbound'",
    )
    .await
}

#[tokio::test]
async fn a_high_urgency_proposal_reaches_each_linked_approver_with_buttons_and_the_bot_token() {
    let world = World::start(&[]).await;
    world.person(ADA, Role::Approver, Some("U0ADA")).await;
    world.person(BOB, Role::Admin, Some("U0BOB")).await;
    world.person(VIC, Role::Viewer, Some("U0VIC")).await;
    world.person(CAL, Role::Approver, None).await;
    world.person(REQ, Role::Approver, Some("U0REQ")).await;
    // Drafted first, so the subscriber has passed it by the time the second is announced.
    let quiet = draft(&world.app, "quiet", Urgency::Medium, None).await;
    let id = draft(&world.app, "loud", Urgency::Critical, Some(REQ)).await;
    eventually(Duration::from_secs(10), "two approval messages", || async {
        world.approval_posts().await.len() >= 2
    })
    .await;
    settle(&world.app).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let posts = world.approval_posts().await;
    let mut channels: Vec<&str> = posts
        .iter()
        .map(|(_, body)| body["channel"].as_str().unwrap_or_default())
        .collect();
    channels.sort();
    // Not the viewer, not the unlinked approver, not the person who asked for it.
    assert_eq!(channels, ["U0ADA", "U0BOB"]);
    let hash = hash_of(&world.app, &id).await;
    for (auth, body) in &posts {
        assert_eq!(auth, &format!("Bearer {SLACK_TOKEN}"));
        assert!(!body.to_string().contains(&quiet), "{body}");
        assert_eq!(
            body["text"],
            format!("Waiting for your decision: Test loud")
        );
        let blocks = body["blocks"].as_array().expect("blocks");
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(blocks[0]["text"]["text"], "Test loud");
        let fields = blocks[1]["fields"].to_string();
        for shown in [
            "*Score*\\n50",
            "*Urgency*\\ncritical",
            "*Action*\\n`email.send`",
        ] {
            assert!(fields.contains(shown), "{shown} in {fields}");
        }
        // The action itself, without a click: whom it reaches, its subject, its lines.
        let action = blocks[2]["text"]["text"]
            .as_str()
            .expect("the action's text");
        for shown in [
            "*What will run* `email.send`",
            "*To:* email to customer@example.com",
            "*Subject:* Your card",
            ">Please update it.",
        ] {
            assert!(action.contains(shown), "{shown} in {action}");
        }
        assert!(blocks[3].to_string().contains(&format!(
            "<https://execops.example.com/proposals/{id}|Open in ExecOps>"
        )));
        let actions = blocks
            .iter()
            .find(|b| b["type"] == "actions")
            .expect("an actions block");
        let buttons = actions["elements"].as_array().expect("buttons");
        assert_eq!(buttons.len(), 2);
        let value = format!("{id}:{hash}");
        assert_eq!(buttons[0]["action_id"], "execops_approve");
        assert_eq!(buttons[0]["style"], "primary");
        assert_eq!(buttons[0]["value"], value.as_str());
        assert_eq!(buttons[0]["text"]["text"], "Approve");
        assert_eq!(buttons[1]["action_id"], "execops_reject");
        assert_eq!(buttons[1]["style"], "danger");
        assert_eq!(buttons[1]["value"], value.as_str());
        assert_eq!(buttons[1]["confirm"]["confirm"]["text"], "Reject");
        assert_eq!(buttons[1]["confirm"]["deny"]["text"], "Cancel");
    }
    // Telling approvers needs no approval and changes nothing about the proposal.
    assert_eq!(events_of(&world.app, &id).await, ["Drafted"]);
}

#[tokio::test]
async fn with_an_approvals_channel_the_message_goes_there_instead_of_direct_messages() {
    let world = World::start(&[("EXECOPS_SLACK_APPROVALS_CHANNEL", "C0APPROVALS")]).await;
    world.person(ADA, Role::Approver, Some("U0ADA")).await;
    let id = draft(&world.app, "channel", Urgency::High, None).await;
    eventually(Duration::from_secs(10), "the approval message", || async {
        !world.approval_posts().await.is_empty()
    })
    .await;
    settle(&world.app).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let posts = world.approval_posts().await;
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0].1["channel"], "C0APPROVALS");
    assert!(posts[0].1.to_string().contains(&id));
}

#[tokio::test]
async fn a_linked_approvers_click_approves_once_and_the_message_then_says_who() {
    let world = World::start(&[]).await;
    world.person(ADA, Role::Approver, Some("U0ADA")).await;
    let id = draft(&world.app, "click", Urgency::High, None).await;
    settle(&world.app).await;
    let hash = hash_of(&world.app, &id).await;
    let payload = click(
        "execops_approve",
        "U0ADA",
        &format!("{id}:{hash}"),
        &world.response_url("approve"),
    );
    let body = interaction_body(&payload);
    let at = Utc::now().timestamp();
    let (status, answer) = deliver(
        &world.app,
        "/webhooks/slack/interactions",
        &body,
        at,
        signing_secret(),
    )
    .await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")));

    let update = world.answer("approve").await;
    assert_eq!(update["replace_original"], true);
    let line = "Approved by <@U0ADA> (ada@example.com)";
    assert!(
        update["text"].as_str().unwrap_or_default().contains(line),
        "{update}"
    );
    assert!(update["blocks"].to_string().contains(line), "{update}");
    assert!(
        update["blocks"].to_string().contains("Test click"),
        "{update}"
    );
    assert!(
        !update["blocks"].to_string().contains("execops_approve"),
        "the buttons are gone: {update}"
    );
    assert_eq!(decisions(&world.app, &id).await, ["Approved"]);
    let approved = payload_of(&world.app, &id, "Approved").await;
    assert_eq!(approved["actor"], ADA);
    assert_eq!(approved["role"], "approver");
    assert_eq!(approved["payload_hash"], hash.as_str());
    let metadata: Value = sqlx::query_scalar(
        "SELECT metadata FROM events WHERE aggregate_id = $1 AND event_type = 'Approved'",
    )
    .bind(&id)
    .fetch_one(world.app.store.pool())
    .await
    .expect("the approval's metadata");
    assert_eq!(metadata["via"], "slack");
    assert_eq!(metadata["slack_user_id"], "U0ADA");

    // The same click again, as a replay: acknowledged, and nothing more happens.
    let (status, answer) = deliver(
        &world.app,
        "/webhooks/slack/interactions",
        &body,
        at,
        signing_secret(),
    )
    .await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("duplicate"))
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(decisions(&world.app, &id).await, ["Approved"]);
    assert_eq!(world.responses("approve").await.len(), 1);
}

#[tokio::test]
async fn a_reject_click_records_who_rejected_it_in_slack_as_the_reason() {
    let world = World::start(&[]).await;
    world.person(ADA, Role::Approver, Some("U0ADA")).await;
    let id = draft(&world.app, "reject", Urgency::High, None).await;
    settle(&world.app).await;
    let hash = hash_of(&world.app, &id).await;
    let (status, _) = press(
        &world,
        &click(
            "execops_reject",
            "U0ADA",
            &format!("{id}:{hash}"),
            &world.response_url("reject"),
        ),
    )
    .await;
    assert_eq!(status, 200);
    let update = world.answer("reject").await;
    assert!(
        update["text"]
            .as_str()
            .unwrap_or_default()
            .contains("Rejected by <@U0ADA> (ada@example.com)"),
        "{update}"
    );
    assert_eq!(decisions(&world.app, &id).await, ["Rejected"]);
    let rejected = payload_of(&world.app, &id, "Rejected").await;
    assert_eq!(rejected["actor"], ADA);
    assert_eq!(rejected["reason"], "Rejected in Slack by ada@example.com");
}

#[tokio::test]
async fn stale_or_badly_signed_clicks_are_refused_and_nothing_is_stored_or_decided() {
    let world = World::start(&[]).await;
    world.person(ADA, Role::Approver, Some("U0ADA")).await;
    let id = draft(&world.app, "forged", Urgency::High, None).await;
    settle(&world.app).await;
    let hash = hash_of(&world.app, &id).await;
    let now = Utc::now().timestamp();
    // Far outside Slack's five minutes, so that the time the cases take does not matter.
    let cases = [
        ("stale", now - 900, signing_secret(), "stale_timestamp"),
        (
            "from the future",
            now + 900,
            signing_secret(),
            "stale_timestamp",
        ),
        (
            "wrong secret",
            now,
            "not-the-signing-secret",
            "bad_signature",
        ),
    ];
    for (what, at, secret, code) in cases {
        let payload = click(
            "execops_approve",
            "U0ADA",
            &format!("{id}:{hash}"),
            &world.response_url("forged"),
        );
        let (status, answer) = deliver(
            &world.app,
            "/webhooks/slack/interactions",
            &interaction_body(&payload),
            at,
            secret,
        )
        .await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (401, Some(code)),
            "{what}"
        );
    }
    // A signature for other bytes than those sent.
    let payload = click(
        "execops_approve",
        "U0ADA",
        &format!("{id}:{hash}"),
        &world.response_url("forged"),
    );
    let signed_for = interaction_body(&payload);
    let sent = signed_for.replace("U0ADA", "U0EVE");
    let response = world
        .app
        .client
        .post(world.app.url("/webhooks/slack/interactions"))
        .header("x-slack-request-timestamp", now.to_string())
        .header(
            "x-slack-signature",
            sign(signing_secret(), now, signed_for.as_bytes()),
        )
        .body(sent)
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), 401, "altered body");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(inbound_count(&world.app).await, 0);
    assert!(decisions(&world.app, &id).await.is_empty());
    assert!(world.responses("forged").await.is_empty());
}

#[tokio::test]
async fn with_a_workspace_set_a_member_of_another_is_refused_and_nothing_is_decided() {
    let world = World::start(&[("SLACK_TEAM_ID", "T111")]).await;
    world.person(ADA, Role::Approver, Some("U0ADA")).await;
    let id = draft(&world.app, "workspace", Urgency::High, None).await;
    settle(&world.app).await;
    let hash = hash_of(&world.app, &id).await;
    let elsewhere = |tag: &str| {
        let mut payload = click(
            "execops_approve",
            "U0ADA",
            &format!("{id}:{hash}"),
            &world.response_url(tag),
        );
        payload["team"]["id"] = json!("T999");
        payload
    };

    let (status, answer) = press(&world, &elsewhere("elsewhere")).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")));
    let refusal = world.answer("elsewhere").await;
    assert_eq!(refusal["response_type"], "ephemeral");
    assert!(
        refusal["text"]
            .as_str()
            .unwrap_or_default()
            .contains("not the one ExecOps works with"),
        "{refusal}"
    );
    for text in [format!("approve {id}"), String::new()] {
        let (status, answer) = slash_in(&world, "T999", "U0ADA", &text).await;
        assert_eq!(status, 200, "{text:?}");
        assert!(
            answer["text"]
                .as_str()
                .unwrap_or_default()
                .contains("not the one ExecOps works with"),
            "{text:?}: {answer}"
        );
    }
    assert!(decisions(&world.app, &id).await.is_empty());

    // The same member in the workspace that is set decides.
    let (status, _) = press(
        &world,
        &click(
            "execops_approve",
            "U0ADA",
            &format!("{id}:{hash}"),
            &world.response_url("ours"),
        ),
    )
    .await;
    assert_eq!(status, 200);
    world.answer("ours").await;
    assert_eq!(decisions(&world.app, &id).await, ["Approved"]);
}

#[tokio::test]
async fn an_unlinked_member_is_refused_in_private_and_nothing_changes() {
    let world = World::start(&[]).await;
    world.person(ADA, Role::Approver, None).await;
    // Slack knows ada's address but has not confirmed it; eve's is nobody's at ExecOps;
    // U0GHOST is unknown to Slack.
    world.members.say("U0ADA", ADA, false);
    world.members.say("U0EVE", "eve@example.com", true);
    let id = draft(&world.app, "unlinked", Urgency::High, None).await;
    settle(&world.app).await;
    let hash = hash_of(&world.app, &id).await;
    for member in ["U0ADA", "U0EVE", "U0GHOST"] {
        let tag = format!("unlinked-{member}");
        let (status, answer) = press(
            &world,
            &click(
                "execops_approve",
                member,
                &format!("{id}:{hash}"),
                &world.response_url(&tag),
            ),
        )
        .await;
        assert_eq!(
            (status, answer["status"].as_str()),
            (200, Some("accepted")),
            "{member}"
        );
        let refusal = world.answer(&tag).await;
        assert_eq!(refusal["response_type"], "ephemeral", "{member}");
        assert_eq!(refusal["replace_original"], false, "{member}");
        assert!(
            refusal["text"]
                .as_str()
                .unwrap_or_default()
                .contains("not linked"),
            "{member}: {refusal}"
        );
    }
    assert!(decisions(&world.app, &id).await.is_empty());
    let links = count(
        world.app.store.pool(),
        "SELECT count(*) FROM events WHERE event_type = 'SlackLinked'",
    )
    .await;
    assert_eq!(links, 0);
}

#[tokio::test]
async fn a_disabled_approvers_click_is_refused_in_private_and_decides_nothing() {
    let world = World::start(&[]).await;
    world.person(ADA, Role::Approver, Some("U0ADA")).await;
    // Slack vouches for her address too: being disabled must not let her be linked again.
    world.members.say("U0ADA", ADA, true);
    let id = draft(&world.app, "disabled", Urgency::High, None).await;
    settle(&world.app).await;
    let hash = hash_of(&world.app, &id).await;
    world
        .app
        .store
        .user(
            &Email::parse(ADA).expect("an email"),
            UserCommand::Disable {
                by: "boss@example.com".into(),
            },
            Default::default(),
        )
        .await
        .expect("disabled");
    settle(&world.app).await;
    let (status, answer) = press(
        &world,
        &click(
            "execops_approve",
            "U0ADA",
            &format!("{id}:{hash}"),
            &world.response_url("disabled"),
        ),
    )
    .await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")));
    let refusal = world.answer("disabled").await;
    assert_eq!(refusal["response_type"], "ephemeral");
    assert!(
        refusal["text"]
            .as_str()
            .unwrap_or_default()
            .contains("not linked"),
        "{refusal}"
    );
    assert!(decisions(&world.app, &id).await.is_empty());
}

#[tokio::test]
async fn a_member_whose_confirmed_email_is_an_approvers_is_linked_and_their_click_counts() {
    let world = World::start(&[]).await;
    world.person(ADA, Role::Approver, None).await;
    world.members.say("U0ADA", "Ada@Example.com", true);
    let id = draft(&world.app, "verified", Urgency::High, None).await;
    settle(&world.app).await;
    let hash = hash_of(&world.app, &id).await;
    let (status, _) = press(
        &world,
        &click(
            "execops_approve",
            "U0ADA",
            &format!("{id}:{hash}"),
            &world.response_url("verified"),
        ),
    )
    .await;
    assert_eq!(status, 200);
    let update = world.answer("verified").await;
    assert!(
        update["text"]
            .as_str()
            .unwrap_or_default()
            .contains("Approved by <@U0ADA> (ada@example.com)"),
        "{update}"
    );
    assert_eq!(payload_of(&world.app, &id, "Approved").await["actor"], ADA);
    let linked: Value = sqlx::query_scalar(
        "SELECT payload FROM events WHERE aggregate_type = 'User' AND event_type = 'SlackLinked'",
    )
    .fetch_one(world.app.store.pool())
    .await
    .expect("a link");
    assert_eq!(
        linked,
        json!({"SlackLinked": {"slack_user_id": "U0ADA", "by": "slack:verified-email"}})
    );
    let pool = world.app.store.pool().clone();
    eventually(Duration::from_secs(10), "the link projected", || async {
        execops::projections::users::actor_for_slack(&pool, "U0ADA")
            .await
            .ok()
            .flatten()
            .is_some_and(|actor| actor.email == ADA)
    })
    .await;
}

#[tokio::test]
async fn clicks_the_decision_rules_refuse_get_a_private_answer_and_decide_nothing() {
    let world = World::start(&[]).await;
    world.person(ADA, Role::Approver, Some("U0ADA")).await;
    world.person(VIC, Role::Viewer, Some("U0VIC")).await;
    world.person(REQ, Role::Approver, Some("U0REQ")).await;
    let requested = draft(&world.app, "requested", Urgency::High, Some(REQ)).await;
    let decided = draft(&world.app, "decided", Urgency::High, None).await;
    settle(&world.app).await;
    let requested_hash = hash_of(&world.app, &requested).await;
    let decided_hash = hash_of(&world.app, &decided).await;
    let value = format!("{requested}:{requested_hash}");
    // `decided` is approved by ada first; a second click on it finds it decided.
    press(
        &world,
        &click(
            "execops_approve",
            "U0ADA",
            &format!("{decided}:{decided_hash}"),
            &world.response_url("first"),
        ),
    )
    .await;
    world.answer("first").await;
    settle(&world.app).await;
    let other_hash = "0".repeat(64);
    let cases = [
        (
            "viewer",
            click(
                "execops_approve",
                "U0VIC",
                &value,
                &world.response_url("viewer"),
            ),
            "a viewer may not decide",
        ),
        (
            "viewer rejecting",
            click(
                "execops_reject",
                "U0VIC",
                &value,
                &world.response_url("viewer-reject"),
            ),
            "a viewer may not decide",
        ),
        (
            "requester",
            click(
                "execops_approve",
                "U0REQ",
                &value,
                &world.response_url("requester"),
            ),
            "may not approve a proposal they requested",
        ),
        (
            "changed payload",
            click(
                "execops_approve",
                "U0ADA",
                &format!("{requested}:{other_hash}"),
                &world.response_url("changed"),
            ),
            "the action shown is not the action drafted",
        ),
        (
            "already decided",
            click(
                "execops_reject",
                "U0ADA",
                &format!("{decided}:{decided_hash}"),
                &world.response_url("again"),
            ),
            "not pending",
        ),
        (
            "no such proposal",
            click(
                "execops_approve",
                "U0ADA",
                &format!("00000000-0000-4000-8000-000000000000:{other_hash}"),
                &world.response_url("missing"),
            ),
            "no proposal",
        ),
    ];
    for (what, payload, words) in cases {
        let tag = payload["response_url"]
            .as_str()
            .and_then(|u| u.rsplit('/').next())
            .unwrap_or_default()
            .to_string();
        let (status, _) = press(&world, &payload).await;
        assert_eq!(status, 200, "{what}");
        let refusal = world.answer(&tag).await;
        assert_eq!(refusal["response_type"], "ephemeral", "{what}");
        let text = refusal["text"].as_str().unwrap_or_default();
        assert!(text.starts_with("Nothing was decided"), "{what}: {text}");
        assert!(text.contains(words), "{what}: {text}");
    }
    assert!(decisions(&world.app, &requested).await.is_empty());
    assert_eq!(decisions(&world.app, &decided).await, ["Approved"]);
}

#[tokio::test]
async fn slash_commands_approve_and_reject_and_refuse_as_the_buttons_do() {
    let world = World::start(&[]).await;
    world.person(ADA, Role::Approver, Some("U0ADA")).await;
    world.person(VIC, Role::Viewer, Some("U0VIC")).await;
    let first = draft(&world.app, "slash-approve", Urgency::High, None).await;
    let second = draft(&world.app, "slash-reject", Urgency::Low, None).await;
    settle(&world.app).await;

    let (status, answer) = slash(&world, "U0VIC", &format!("approve {first}")).await;
    assert_eq!(status, 200);
    assert_eq!(answer["response_type"], "ephemeral");
    assert!(
        answer["text"]
            .as_str()
            .unwrap_or_default()
            .contains("a viewer may not decide"),
        "{answer}"
    );
    let (_, answer) = slash(&world, "U0NOBODY", &format!("approve {first}")).await;
    assert!(
        answer["text"]
            .as_str()
            .unwrap_or_default()
            .contains("not linked"),
        "{answer}"
    );
    assert!(decisions(&world.app, &first).await.is_empty());

    for (text, words) in [
        ("approve", "approve needs a proposal id"),
        ("approve 42", "\"42\" is not a proposal id"),
        (
            &format!("reject {second}") as &str,
            "a rejection needs a reason",
        ),
        ("launch the rocket", "unknown command \"launch\""),
        ("help", "/execops approve PROPOSAL_ID"),
    ] {
        let (status, answer) = slash(&world, "U0ADA", text).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(answer["response_type"], "ephemeral", "{text}");
        let said = answer["text"].as_str().unwrap_or_default();
        assert!(said.contains(words), "{text}: {said}");
        assert!(said.contains("Usage"), "{text}: {said}");
    }

    // Approving takes a look first: the answer shows the action and buttons bound to its
    // hash, and decides nothing; the click does.
    let (_, answer) = slash(&world, "U0ADA", &format!("approve {first}")).await;
    assert_eq!(answer["response_type"], "ephemeral");
    let blocks = answer["blocks"].to_string();
    for shown in [
        "*To:* email to customer@example.com",
        "*Subject:* Your card",
        ">Please update it.",
    ] {
        assert!(blocks.contains(shown), "{shown} in {blocks}");
    }
    let value = format!("{first}:{}", hash_of(&world.app, &first).await);
    assert!(
        blocks.contains(&format!("\"value\":\"{value}\"")),
        "{blocks}"
    );
    assert!(
        decisions(&world.app, &first).await.is_empty(),
        "nothing decided blind"
    );
    press(
        &world,
        &click(
            "execops_approve",
            "U0ADA",
            &value,
            &world.response_url("slash"),
        ),
    )
    .await;
    eventually(Duration::from_secs(10), "the click approves", || async {
        decisions(&world.app, &first).await == ["Approved"]
    })
    .await;
    let (_, answer) = slash(
        &world,
        "U0ADA",
        &format!("reject {second} not this quarter"),
    )
    .await;
    assert!(
        answer["text"]
            .as_str()
            .unwrap_or_default()
            .contains("Rejected by <@U0ADA> (ada@example.com): not this quarter"),
        "{answer}"
    );
    assert_eq!(decisions(&world.app, &first).await, ["Approved"]);
    assert_eq!(decisions(&world.app, &second).await, ["Rejected"]);
    assert_eq!(
        payload_of(&world.app, &second, "Rejected").await["reason"],
        "not this quarter"
    );
    settle(&world.app).await;
    let (_, answer) = slash(&world, "U0ADA", &format!("approve {first}")).await;
    assert!(
        answer["text"]
            .as_str()
            .unwrap_or_default()
            .contains("is not waiting for a decision"),
        "{answer}"
    );
    assert!(answer.get("blocks").is_none(), "no buttons: {answer}");
    assert_eq!(decisions(&world.app, &first).await, ["Approved"]);
}

#[tokio::test]
async fn malformed_interaction_payloads_are_refused_with_a_clear_error_and_store_nothing() {
    let world = World::start(&[]).await;
    let id = "6f1c2d4e-9a3b-4c5d-8e7f-0a1b2c3d4e5f";
    let hash = "ab".repeat(32);
    let good = || {
        click(
            "execops_approve",
            "U0ADA",
            &format!("{id}:{hash}"),
            &world.response_url("bad"),
        )
    };
    let without = |pointer: &str| {
        let mut payload = good();
        let (parent, key) = pointer.rsplit_once('/').unwrap_or_default();
        if let Some(Value::Object(map)) = payload.pointer_mut(parent) {
            map.remove(key);
        }
        interaction_body(&payload)
    };
    let with = |pointer: &str, value: Value| {
        let mut payload = good();
        if let Some(slot) = payload.pointer_mut(pointer) {
            *slot = value;
        }
        interaction_body(&payload)
    };
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "no payload field",
            "text=hello".into(),
            "missing_field",
            "payload",
        ),
        (
            "payload is not JSON",
            "payload=%7Bnot-json".into(),
            "malformed_json",
            "not valid JSON",
        ),
        ("no type", without("/type"), "missing_field", "type"),
        (
            "no actions",
            without("/actions"),
            "missing_field",
            "actions",
        ),
        ("no user", without("/user"), "missing_field", "user.id"),
        (
            "no response_url",
            without("/response_url"),
            "missing_field",
            "response_url",
        ),
        (
            "no button value",
            without("/actions/0/value"),
            "missing_field",
            "actions[].value",
        ),
        (
            "value without a hash",
            with("/actions/0/value", json!(id)),
            "invalid_field",
            "PROPOSAL_ID:PAYLOAD_HASH",
        ),
        (
            "value with a bad id",
            with("/actions/0/value", json!(format!("P-1:{hash}"))),
            "invalid_field",
            "not a proposal id",
        ),
        (
            "value with a bad hash",
            with("/actions/0/value", json!(format!("{id}:xyz"))),
            "invalid_field",
            "not a payload hash",
        ),
        (
            "response_url not a URL",
            with("/response_url", json!("hooks")),
            "invalid_field",
            "response_url",
        ),
        (
            "response_url not http",
            with("/response_url", json!("file:///etc/passwd")),
            "invalid_field",
            "http(s)",
        ),
    ];
    for (what, body, code, words) in cases {
        let (status, answer) = deliver(
            &world.app,
            "/webhooks/slack/interactions",
            &body,
            Utc::now().timestamp(),
            signing_secret(),
        )
        .await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some(code)),
            "{what}: {answer}"
        );
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains(words), "{what}: {message}");
    }
    assert_eq!(inbound_count(&world.app).await, 0);
    assert!(world.responses("bad").await.is_empty());
    // Another app's button is none of ExecOps's business: recorded, nothing else.
    let (status, answer) = press(
        &world,
        &click(
            "another_apps_button",
            "U0ADA",
            "anything",
            &world.response_url("other"),
        ),
    )
    .await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")));
    assert_eq!(inbound_count(&world.app).await, 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(world.responses("other").await.is_empty());
}

#[tokio::test]
async fn an_escalation_tells_the_linked_deciders_it_names() {
    let world = World::start(&[]).await;
    world.person(ADA, Role::Approver, Some("U0ADA")).await;
    world.person(BOB, Role::Admin, Some("U0BOB")).await;
    world.person(VIC, Role::Viewer, Some("U0VIC")).await;
    world.person(CAL, Role::Approver, None).await;
    // Medium: no message when drafted.
    let id = draft(&world.app, "escalated", Urgency::Medium, None).await;
    settle(&world.app).await;
    assert!(world.approval_posts().await.is_empty());
    // The escalation rules record this; it is appended here as they will store it.
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('Proposal', $1, 2, 'Escalated', '1.0', $2, '{}')",
    )
    .bind(&id)
    .bind(json!({"Escalated": {"at": Utc::now(), "level": 1, "to": [ADA, VIC, CAL]}}))
    .execute(world.app.store.pool())
    .await
    .expect("an Escalated event");
    eventually(
        Duration::from_secs(10),
        "the escalation message",
        || async { !world.approval_posts().await.is_empty() },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let posts = world.approval_posts().await;
    // Only ada: bob was not named, vic may not decide, cal is not linked.
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0].1["channel"], "U0ADA");
    assert_eq!(
        posts[0].1["text"],
        "Escalated to you (level 1): Test escalated"
    );
    let hash = hash_of(&world.app, &id).await;
    assert!(posts[0].1["blocks"]
        .to_string()
        .contains(&format!("{id}:{hash}")));
}

fn execops(url: &str, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_execops"))
        .env("DATABASE_URL", url)
        .args(args)
        .output()
        .expect("runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn the_link_slack_command_links_relinks_unlinks_and_refuses_bad_input() {
    let (db, store) = crate::common::store().await;
    for (email, role) in [(ADA, Role::Approver), (BOB, Role::Admin)] {
        let address = Email::parse(email).expect("an email");
        store
            .user(
                &address,
                UserCommand::Add {
                    email: address.clone(),
                    role,
                    password_hash: "$argon2id$test".into(),
                    by: "test".into(),
                },
                HashMap::new(),
            )
            .await
            .expect("added");
    }
    let url = db.url.as_str();
    let events = || async {
        count(
            &db.pool,
            "SELECT count(*) FROM events WHERE event_type IN ('SlackLinked', 'SlackUnlinked')",
        )
        .await
    };
    let (ok, out) = execops(url, &["user", "link-slack", "Ada@Example.com", "U0ADA"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("linked ada@example.com to Slack member U0ADA"),
        "{out}"
    );
    let (ok, out) = execops(url, &["user", "link-slack", ADA, "U0ADA"]);
    assert!(ok, "{out}");
    assert!(out.contains("already linked"), "{out}");
    assert_eq!(events().await, 1);

    for (args, words) in [
        (
            vec!["user", "link-slack", "nobody@example.com", "U0NOBODY"],
            "no ExecOps user nobody@example.com",
        ),
        (
            vec!["user", "link-slack", ADA, "C0CHANNEL"],
            "is not a Slack member id",
        ),
        (
            vec!["user", "link-slack", ADA, "u0lower"],
            "is not a Slack member id",
        ),
        (
            vec!["user", "link-slack", ADA, "@ada"],
            "is not a Slack member id",
        ),
        (
            vec!["user", "link-slack", "not-an-email", "U0ADA"],
            "is not an email address",
        ),
        (
            vec!["user", "link-slack", BOB, "U0ADA"],
            "already linked to ada@example.com",
        ),
        (
            vec!["user", "unlink-slack", BOB],
            "bob@example.com is not linked",
        ),
        (vec!["user", "link-slack", ADA], "SLACK_USER_ID"),
    ] {
        let (ok, out) = execops(url, &args);
        assert!(!ok, "{args:?} succeeded: {out}");
        assert!(out.contains(words), "{args:?}: {out}");
    }
    assert_eq!(events().await, 1, "refusals record nothing");

    // Relinking replaces the link; unlinking frees the member for someone else.
    let (ok, out) = execops(url, &["user", "link-slack", ADA, "U0ADA2"]);
    assert!(ok, "{out}");
    let (ok, out) = execops(url, &["user", "link-slack", BOB, "U0ADA"]);
    assert!(ok, "{out}");
    let (ok, out) = execops(url, &["user", "unlink-slack", ADA]);
    assert!(ok, "{out}");
    assert!(out.contains("unlinked ada@example.com from Slack"), "{out}");
    let kinds: Vec<String> = sqlx::query_scalar(
        "SELECT event_type || ':' || aggregate_id FROM events \
         WHERE event_type IN ('SlackLinked', 'SlackUnlinked') ORDER BY position",
    )
    .fetch_all(&db.pool)
    .await
    .expect("events");
    assert_eq!(
        kinds,
        [
            "SlackLinked:ada@example.com",
            "SlackLinked:ada@example.com",
            "SlackLinked:bob@example.com",
            "SlackUnlinked:ada@example.com"
        ]
    );
}

#[tokio::test]
async fn a_slash_decision_slower_than_slacks_deadline_is_answered_later_in_private() {
    // Slow, but not so slow that the adapter gives up on it.
    let world = World::start(&[("EXECOPS_ADAPTER_TIMEOUT_MS", "20000")]).await;
    world.person(ADA, Role::Approver, None).await;
    // Slack takes its time to vouch for ada's address: well past the acknowledgement's
    // 2 s budget, so the answer comes first and by a wide margin.
    Mock::given(method("GET"))
        .and(path("/users.info"))
        .and(wiremock::matchers::query_param("user", "U0SLOW"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"ok": true, "user": {"id": "U0SLOW", "is_email_confirmed": true, "profile": {"email": ADA}}}))
                .set_delay(Duration::from_millis(5_000)),
        )
        .with_priority(1)
        .mount(&world.fakes.slack)
        .await;
    let id = draft(&world.app, "slow", Urgency::High, None).await;
    settle(&world.app).await;
    let started = std::time::Instant::now();
    let (status, answer) = slash(&world, "U0SLOW", &format!("reject {id} not now")).await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(4_500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        answer["text"],
        "ExecOps is still deciding; the result will follow here."
    );
    let late = world.answer("slash").await;
    assert_eq!(late["response_type"], "ephemeral");
    assert!(
        late["text"]
            .as_str()
            .unwrap_or_default()
            .contains("Rejected by <@U0SLOW> (ada@example.com): not now"),
        "{late}"
    );
    assert_eq!(decisions(&world.app, &id).await, ["Rejected"]);
}

/// With a quorum of two, the first click is a vote that everyone in the conversation sees,
/// and the buttons stay for the second approver, whose click approves it. The same member
/// again counts once.
#[tokio::test]
async fn a_quorum_takes_clicks_from_two_members_and_keeps_the_buttons_until_then() {
    let world = World::start(&[]).await;
    world.person(ADA, Role::Approver, Some("U0ADA")).await;
    world.person(BOB, Role::Approver, Some("U0BOB")).await;
    let id = draft_needing(&world.app, "two", Urgency::High, None, 2).await;
    settle(&world.app).await;
    let value = format!("{id}:{}", hash_of(&world.app, &id).await);
    let first = click(
        "execops_approve",
        "U0ADA",
        &value,
        &world.response_url("q1"),
    );
    press(&world, &first).await;
    let vote = world.answer("q1").await;
    assert_eq!(vote["replace_original"], false, "{vote}");
    assert_eq!(vote["response_type"], "in_channel", "{vote}");
    assert!(
        vote["text"]
            .as_str()
            .unwrap_or_default()
            .contains("1 of 2 approvals; still waiting"),
        "{vote}"
    );
    assert_eq!(decisions(&world.app, &id).await, ["ApprovalAdded"]);

    let again = click(
        "execops_approve",
        "U0ADA",
        &value,
        &world.response_url("q1b"),
    );
    press(&world, &again).await;
    let refused = world.answer("q1b").await;
    assert_eq!(refused["response_type"], "ephemeral", "{refused}");
    assert!(
        refused["text"]
            .as_str()
            .unwrap_or_default()
            .contains("already approved"),
        "{refused}"
    );
    assert_eq!(decisions(&world.app, &id).await, ["ApprovalAdded"]);

    let second = click(
        "execops_approve",
        "U0BOB",
        &value,
        &world.response_url("q2"),
    );
    press(&world, &second).await;
    let done = world.answer("q2").await;
    assert_eq!(done["replace_original"], true, "{done}");
    assert!(
        done["text"]
            .as_str()
            .unwrap_or_default()
            .contains("Approved by <@U0BOB> (bob@example.com)"),
        "{done}"
    );
    assert_eq!(
        decisions(&world.app, &id).await,
        ["ApprovalAdded", "Approved"]
    );
}

/// A proposal someone set off from Slack may not be approved by them through their linked
/// member, nor through their email anywhere else.
#[tokio::test]
async fn the_member_who_set_a_proposal_off_may_not_approve_it_by_click_or_by_email() {
    let world = World::start(&[]).await;
    let token = person(&world.app, REQ, Role::Approver).await;
    link(&world.app, REQ, "U0REQ").await;
    world.person(ADA, Role::Approver, Some("U0ADA")).await;
    let id = draft(&world.app, "mine", Urgency::High, Some("slack:U0REQ")).await;
    settle(&world.app).await;
    // Put to the other approver, not to the member who asked.
    let dms = || async {
        let posts = world.approval_posts().await;
        posts
            .iter()
            .map(|(_, body)| body["channel"].as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    eventually(Duration::from_secs(10), "the approval DM", || async {
        !dms().await.is_empty()
    })
    .await;
    assert_eq!(dms().await, ["U0ADA"]);
    let value = format!("{id}:{}", hash_of(&world.app, &id).await);
    press(
        &world,
        &click(
            "execops_approve",
            "U0REQ",
            &value,
            &world.response_url("own"),
        ),
    )
    .await;
    let refused = world.answer("own").await;
    assert_eq!(refused["response_type"], "ephemeral", "{refused}");
    let response = reqwest::Client::new()
        .post(format!(
            "http://{}/api/v1/proposals/{id}/approve",
            world.app.addr
        ))
        .bearer_auth(token)
        .json(&json!({"payload_hash": crate::api::shown(&world.app, &id).await}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 403);
    assert!(decisions(&world.app, &id).await.is_empty());
}

#[tokio::test]
async fn settings_warn_while_slack_decisions_are_taken_from_any_workspace() {
    for (extra, warned) in [(&[][..], true), (&[("SLACK_TEAM_ID", "T111")][..], false)] {
        let world = World::start(extra).await;
        world.person(BOB, Role::Admin, None).await;
        let html = page_as(&world, BOB, "/settings").await;
        assert_eq!(
            html.contains("id=\"slack-warning\"") && html.contains("SLACK_TEAM_ID is not set"),
            warned,
            "{extra:?}"
        );
        world.app.stop().await;
    }
}

#[tokio::test]
async fn a_response_url_that_is_not_slacks_is_never_called_nor_shown() {
    let world = World::start(&[]).await;
    world.person(ADA, Role::Approver, Some("U0ADA")).await;
    world.person(BOB, Role::Viewer, None).await;
    let id = draft(&world.app, "elsewhere", Urgency::High, None).await;
    settle(&world.app).await;
    let value = format!("{id}:{}", hash_of(&world.app, &id).await);
    let elsewhere = format!("{}/elsewhere/steal", world.fakes.slack.uri());
    let (status, _) = press(
        &world,
        &click("execops_approve", "U0ADA", &value, &elsewhere),
    )
    .await;
    assert_eq!(status, 200);
    // The click is Slack's own, signed: it decides; only the answer is not sent there.
    eventually(Duration::from_secs(10), "the click approves", || async {
        decisions(&world.app, &id).await == ["Approved"]
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let called: Vec<String> = world
        .fakes
        .slack
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| r.url.path().to_string())
        .filter(|p| p.starts_with("/elsewhere"))
        .collect();
    assert!(called.is_empty(), "{called:?}");
    // The delivery's page shows no response_url.
    let inbound: String = sqlx::query_scalar(
        "SELECT aggregate_id FROM events WHERE aggregate_type = 'Inbound' \
         AND payload::text LIKE '%elsewhere/steal%'",
    )
    .fetch_one(world.app.store.pool())
    .await
    .expect("the stored click");
    let html = page_as(&world, BOB, &format!("/signals/{inbound}")).await;
    assert!(html.contains("U0ADA"), "the click is shown");
    assert!(!html.contains("response_url") && !html.contains("elsewhere/steal"));
}

/// The page at `path` as `email` sees it, signed in with the password every test person
/// has (the world's https address makes the cookie `Secure`, so it is sent by hand).
async fn page_as(world: &World, email: &str, path: &str) -> String {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client");
    let signed_in = client
        .post(world.app.url("/login"))
        .form(&[("email", email), ("password", crate::pages::PASSWORD)])
        .send()
        .await
        .expect("signed in");
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .expect("a cookie")
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    let response = client
        .get(world.app.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .expect("the page");
    assert_eq!(response.status(), 200, "{path}");
    response.text().await.expect("a page")
}

/// Every way a proposal might run without a person's valid approval of exactly what runs:
/// each case ends with the fake providers having recorded no effect of it. Each proposal
/// posts its own case's name to Slack (or charges Stripe), so an effect would show.
#[tokio::test]
async fn the_adversarial_matrix_records_no_effect_at_any_provider() {
    use crate::execution::{proposal, FakeStripe};

    // A receiver of ExecOps's outbound webhooks, which acts on a delivery whose signature
    // verifies.
    const OUTBOUND: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let receiver = wiremock::MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&receiver)
        .await;
    let hooks = format!("matrix={}/in", receiver.uri());
    let outbound = [
        ("EXECOPS_OUTBOUND_WEBHOOKS", hooks.as_str()),
        ("EXECOPS_OUTBOUND_SECRET", OUTBOUND),
    ];
    let world = World::start(&outbound).await;
    let stripe = FakeStripe::default();
    world.fakes.stripe_answers(stripe.clone()).await;
    crate::common::enable_writes(&world.app.store).await;
    let app = &world.app;
    let approver = crate::api::person(app, ADA, Role::Approver).await;
    link(app, ADA, "U0ADA").await;
    let viewer = crate::api::person(app, VIC, Role::Viewer).await;
    let requester = crate::api::person(app, REQ, Role::Approver).await;
    let api = |token: String, id: String, verb: &'static str, body: Value| async move {
        app.client
            .post(app.url(&format!("/api/v1/proposals/{id}/{verb}")))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("the server answers")
            .status()
            .as_u16()
    };
    let post = |case: &str| json!({"channel": "#matrix", "text": format!("matrix {case}")});
    let store_draft = |draft: execops::domain::ProposalDraft| async move {
        let id = draft.id.to_string();
        app.store
            .proposal(&id, ProposalCommand::Draft(draft), HashMap::new())
            .await
            .expect("drafted");
        id
    };
    let mut refusals: Vec<(&str, u16)> = Vec::new();

    // Unapproved: drafted and left alone, with a job row put in by hand.
    let unapproved = store_draft(proposal(
        "unapproved",
        "slack.post_message",
        post("unapproved"),
    ))
    .await;
    // A forged read-model row: the inbox says approved, and a job row exists.
    let forged = store_draft(proposal("forged", "slack.post_message", post("forged"))).await;
    settle(app).await;
    sqlx::query("UPDATE proposal_summaries SET status = 'approved' WHERE id = $1")
        .bind(&forged)
        .execute(app.store.pool())
        .await
        .expect("forged");
    for id in [&unapproved, &forged] {
        sqlx::query(
            "INSERT INTO execution_jobs (proposal_id, approved_at, due_at) VALUES ($1, now(), now())",
        )
        .bind(id)
        .execute(app.store.pool())
        .await
        .expect("a job put in by hand");
    }
    sqlx::query("SELECT pg_notify('execops_jobs', '')")
        .execute(app.store.pool())
        .await
        .expect("notified");

    // Rejected, then approved.
    let rejected = store_draft(proposal("rejected", "slack.post_message", post("rejected"))).await;
    settle(app).await;
    let hash = hash_of(app, &rejected).await;
    assert_eq!(
        api(
            approver.clone(),
            rejected.clone(),
            "reject",
            json!({"reason": "no"})
        )
        .await,
        200
    );
    refusals.push((
        "rejected",
        api(
            approver.clone(),
            rejected.clone(),
            "approve",
            json!({"payload_hash": hash}),
        )
        .await,
    ));

    // Expired, with nobody having settled it: the approval itself is refused.
    let mut draft = proposal("expired", "slack.post_message", post("expired"));
    draft.terms.expires_at = Some(chrono::Utc::now() - chrono::Duration::seconds(1));
    let expired = store_draft(draft).await;
    let hash = hash_of(app, &expired).await;
    let past_expiry = app
        .store
        .proposal(
            &expired,
            ProposalCommand::Approve(execops::domain::Decision {
                actor: ADA.into(),
                role: Role::Approver,
                comment: None,
                payload_hash: hash.clone(),
                identities: vec![],
                at: Some(chrono::Utc::now()),
            }),
            HashMap::new(),
        )
        .await;
    assert!(
        past_expiry.is_err(),
        "the aggregate refuses: {past_expiry:?}"
    );
    settle(app).await;
    refusals.push((
        "expired",
        api(
            approver.clone(),
            expired.clone(),
            "approve",
            json!({"payload_hash": hash}),
        )
        .await,
    ));

    // Superseded.
    let superseded = store_draft(proposal(
        "superseded",
        "slack.post_message",
        post("superseded"),
    ))
    .await;
    let hash = hash_of(app, &superseded).await;
    app.store
        .proposal(
            &superseded,
            ProposalCommand::Supersede {
                by: None,
                reason: "a newer signal".into(),
            },
            HashMap::new(),
        )
        .await
        .expect("superseded");
    settle(app).await;
    refusals.push((
        "superseded",
        api(
            approver.clone(),
            superseded.clone(),
            "approve",
            json!({"payload_hash": hash}),
        )
        .await,
    ));

    // Revised after the first of two approvals: the old hash approves nothing.
    let mut draft = proposal("revised", "slack.post_message", post("revised"));
    draft.terms.approvals_needed = 2;
    let revised = store_draft(draft).await;
    settle(app).await;
    let old = hash_of(app, &revised).await;
    assert_eq!(
        api(
            approver.clone(),
            revised.clone(),
            "approve",
            json!({"payload_hash": old})
        )
        .await,
        200
    );
    app.store
        .proposal(
            &revised,
            ProposalCommand::Revise(execops::domain::Revision {
                title: "Test revised, again".into(),
                action: post("revised, again"),
                reasoning: "changed".into(),
                drivers: vec![],
                score: 50,
                urgency: Urgency::High,
                due_by: None,
                inbound_id: "test:revised-2".into(),
                terms: None,
            }),
            HashMap::new(),
        )
        .await
        .expect("revised");
    settle(app).await;
    refusals.push((
        "revised after an approval, old hash",
        api(
            requester.clone(),
            revised.clone(),
            "approve",
            json!({"payload_hash": old}),
        )
        .await,
    ));

    // A viewer; the requester; a quorum short by one.
    let viewed = store_draft(proposal("viewer", "slack.post_message", post("viewer"))).await;
    let mut draft = proposal(
        "self",
        "stripe.retry_invoice",
        json!({"invoice": "in_self", "amount_cents": 1000, "currency": "usd"}),
    );
    draft.requested_by = Some(REQ.into());
    let own = store_draft(draft).await;
    let mut draft = proposal("short", "slack.post_message", post("short"));
    draft.terms.approvals_needed = 2;
    let short = store_draft(draft).await;
    settle(app).await;
    for (case, token, id) in [
        ("viewer", viewer.clone(), viewed.clone()),
        ("self-approval", requester.clone(), own.clone()),
    ] {
        let hash = hash_of(app, &id).await;
        refusals.push((
            case,
            api(token, id, "approve", json!({"payload_hash": hash})).await,
        ));
    }
    let hash = hash_of(app, &short).await;
    assert_eq!(
        api(
            approver.clone(),
            short.clone(),
            "approve",
            json!({"payload_hash": hash})
        )
        .await,
        200,
        "one vote of two"
    );

    // A Slack click replayed: the same delivery again decides nothing more.
    let mut draft = proposal("replayed", "slack.post_message", post("replayed"));
    draft.terms.approvals_needed = 2;
    let replayed = store_draft(draft).await;
    settle(app).await;
    let value = format!("{replayed}:{}", hash_of(app, &replayed).await);
    let click = click(
        "execops_approve",
        "U0ADA",
        &value,
        &world.response_url("replay"),
    );
    for _ in 0..3 {
        let (status, _) = press(&world, &click).await;
        assert_eq!(status, 200);
    }

    // An email link opened by a mail scanner: it follows the link (HEAD, then GET) and
    // never posts the confirmation.
    let scanned = store_draft(proposal("scanned", "slack.post_message", post("scanned"))).await;
    settle(app).await;
    let links = execops::config::Config::from_lookup(|_| None)
        .expect("the defaults")
        .links;
    let key = execops::notify::links::LinkKey::load(app.store.pool(), &links)
        .await
        .expect("the link key");
    let token = key.sign(&execops::notify::links::LinkClaims {
        proposal: scanned.clone(),
        approver: ADA.into(),
        decision: execops::notify::links::LinkDecision::Approve,
        payload_hash: hash_of(app, &scanned).await,
        expires: (chrono::Utc::now() + chrono::Duration::hours(1)).timestamp(),
        nonce: execops::notify::links::nonce(),
    });
    let scanner = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::limited(5))
        .build()
        .expect("a client");
    for method in [
        reqwest::Method::HEAD,
        reqwest::Method::GET,
        reqwest::Method::GET,
    ] {
        let status = scanner
            .request(method.clone(), app.url(&format!("/links/{token}")))
            .send()
            .await
            .expect("an answer")
            .status();
        assert!(status.is_success(), "{method}: {status}");
    }

    // A preview replayed at the receiver: what a viewer could copy from the timeline.
    let adapters = execops::adapters::Adapters::new(&world.fakes.config(&outbound).adapters);
    let previews = adapters
        .preview(
            "webhook.post",
            &json!({"target": "matrix", "type": "invoice.flagged", "data": {"n": 1}}),
            "matrix-preview",
        )
        .expect("a preview");
    for preview in &previews {
        let mut request = reqwest::Client::new().post(&preview.url);
        for (name, value) in &preview.headers {
            request = request.header(name, value);
        }
        let body = serde_json::to_vec(&preview.body).expect("json");
        request
            .body(body)
            .send()
            .await
            .expect("the receiver answers");
    }
    let key = execops::ingest::standard::decode_secret(OUTBOUND).expect("the secret");
    let delivered = receiver.received_requests().await.unwrap_or_default();
    assert!(!delivered.is_empty(), "the replay reached the receiver");
    for request in &delivered {
        let text = |name: &str| {
            request
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let timestamp: i64 = text("webhook-timestamp").parse().unwrap_or_default();
        let valid =
            execops::ingest::standard::sign(&key, &text("webhook-id"), timestamp, &request.body);
        assert!(
            !text("webhook-signature").contains(valid.trim_start_matches("v1,")),
            "a replayed preview carries a signature the receiver would act on"
        );
        // Nor any signature at all, whatever bytes a replay would send with it.
        assert!(
            !text("webhook-signature").contains("v1,"),
            "{}",
            text("webhook-signature")
        );
    }

    // Undo without its quorum: executed with two approvals, undone by one person's ask.
    let mut draft = proposal(
        "undo",
        "slack.post_message",
        json!({"channel": "#matrix", "text": "executed, to be undone"}),
    );
    draft.terms.approvals_needed = 2;
    let undone = store_draft(draft).await;
    settle(app).await;
    let hash = hash_of(app, &undone).await;
    for token in [approver.clone(), requester.clone()] {
        assert_eq!(
            api(
                token,
                undone.clone(),
                "approve",
                json!({"payload_hash": hash})
            )
            .await,
            200
        );
    }
    crate::execution::wait_for(app, &undone, "ExecutionSucceeded").await;
    app.store
        .proposal(
            &undone,
            ProposalCommand::RequestRollback {
                actor: ADA.into(),
                role: Role::Approver,
                reason: "one person's mind changed".into(),
                at: chrono::Utc::now(),
                window: chrono::Duration::hours(1),
            },
            HashMap::new(),
        )
        .await
        .expect("asked");

    // Nothing refused was let through, and no case had an effect anywhere.
    for (case, status) in &refusals {
        assert!(
            (400..500).contains(status),
            "{case}: refused in words, got {status}"
        );
    }
    settle(app).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let posted: Vec<String> = world
        .fakes
        .slack_posts()
        .await
        .iter()
        .filter_map(|p| p["text"].as_str().map(str::to_string))
        .filter(|text| text.starts_with("matrix "))
        .collect();
    assert!(posted.is_empty(), "effects in Slack: {posted:?}");
    assert!(
        stripe.effects().is_empty(),
        "effects in Stripe: {:?}",
        stripe.effects()
    );
    let deleted = world
        .fakes
        .slack
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == "/chat.delete")
        .count();
    assert_eq!(deleted, 0, "an undo short of its quorum deletes nothing");
    assert_eq!(
        crate::execution::events_of(app, &undone)
            .await
            .last()
            .map(String::as_str),
        Some("RollbackRequested"),
        "asked, and nothing run"
    );
    for id in [
        &unapproved,
        &forged,
        &rejected,
        &expired,
        &superseded,
        &revised,
        &viewed,
        &own,
        &short,
        &replayed,
        &scanned,
    ] {
        let events = crate::execution::events_of(app, id).await;
        assert!(
            !events
                .iter()
                .any(|e| e == "Approved" || e.starts_with("Execution")),
            "{id}: {events:?}"
        );
    }
    assert_eq!(
        decisions(app, &replayed).await,
        ["ApprovalAdded"],
        "the replayed click counted once"
    );
}
