//! Webhook ingestion over real HTTP: every fixture accepted once and then a duplicate, the
//! table of bad inputs refused with nothing stored, races, disabled sources, and Postgres
//! going away and coming back.

use std::path::{Path, PathBuf};

use chrono::Utc;
use execops::config::Config;
use execops::send::{prepare, sender_of, sign, Delivery, Sender};
use serde_json::{json, Value};

use crate::common::{config, count, TestApp};

/// Every sender's secret, and the address HubSpot is told to call (it signs that URL).
pub const SECRETS: [(&str, &str); 7] = [
    ("EXECOPS_PUBLIC_URL", PUBLIC_URL),
    ("STRIPE_WEBHOOK_SECRET", "whsec_test_stripe_secret"),
    ("GITHUB_WEBHOOK_SECRET", "It's a Secret to Everybody"),
    ("SLACK_SIGNING_SECRET", "8f742231b10e8888abcd99yyyzzz85a5"),
    ("HUBSPOT_CLIENT_SECRET", "hubspot-client-secret"),
    ("INTERCOM_CLIENT_SECRET", "intercom-client-secret"),
    (
        "EXECOPS_WEBHOOK_SECRETS",
        "bank=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ),
];

const LIMIT: usize = 256 * 1024;

/// The address senders are told to call: HubSpot signs it.
pub const PUBLIC_URL: &str = "http://execops.test";

pub fn configured() -> Config {
    let mut pairs: Vec<(&str, &str)> = SECRETS.to_vec();
    pairs.push(("EXECOPS_WEBHOOK_MAX_BODY_BYTES", "262144"));
    config(&pairs)
}

/// Secrets that are all wrong.
fn impostor() -> Config {
    config(&[
        ("STRIPE_WEBHOOK_SECRET", "whsec_wrong"),
        ("GITHUB_WEBHOOK_SECRET", "wrong"),
        ("SLACK_SIGNING_SECRET", "wrong"),
        ("HUBSPOT_CLIENT_SECRET", "wrong"),
        ("INTERCOM_CLIENT_SECRET", "wrong"),
        (
            "EXECOPS_WEBHOOK_SECRETS",
            "bank=whsec_d3JvbmcgYnV0IHZhbGlkIGJhc2U2NA==",
        ),
    ])
}

pub fn fixtures() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir)
            .expect("fixtures directory")
            .flatten()
        {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "json" || e == "txt") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures"),
        &mut out,
    );
    out.sort();
    out
}

pub async fn post(app: &TestApp, delivery: &Delivery) -> (u16, Value) {
    let mut request = app.client.post(app.url(&delivery.path));
    for (name, value) in &delivery.headers {
        request = request.header(name, value);
    }
    let response = request
        .body(delivery.body.clone())
        .send()
        .await
        .expect("the server answers");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// Signs the fixture `name` (a path under `fixtures/`) as its sender would and posts it;
/// it must be taken.
pub async fn send_fixture(app: &TestApp, name: &str) -> Value {
    let delivery = prepare(&fixture(name), &configured(), &base(app), Utc::now()).expect("signs");
    let (status, body) = post(app, &delivery).await;
    assert_eq!(status, 200, "{name}: {body}");
    body
}

/// Deliveries recorded (the router adds proposals of its own meanwhile).
async fn events(app: &TestApp) -> i64 {
    count(
        app.store.pool(),
        "SELECT count(*) FROM events WHERE aggregate_type = 'Inbound'",
    )
    .await
}

fn base(app: &TestApp) -> String {
    format!("http://{}", app.addr)
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

#[tokio::test]
async fn every_fixture_is_accepted_once_and_then_a_duplicate() {
    let config = configured();
    let app = TestApp::spawn_with(config.clone()).await;
    let fixtures = fixtures();
    assert!(fixtures.len() >= 20, "{} fixtures", fixtures.len());
    for path in fixtures {
        let name = path.display().to_string();
        let delivery = prepare(&path, &config, &base(&app), Utc::now()).expect("signs");
        let before = events(&app).await;
        let (status, body) = post(&app, &delivery).await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(body["status"], "accepted", "{name}: {body}");
        assert_eq!(events(&app).await, before + 1, "{name}: one event");

        let (status, body) = post(&app, &delivery).await;
        assert_eq!(status, 200, "{name} again: {body}");
        assert_eq!(body["status"], "duplicate", "{name} again: {body}");
        assert_eq!(events(&app).await, before + 1, "{name}: nothing more");
    }
    let kinds: Vec<(String, String)> = sqlx::query_as(
        "SELECT payload->'Received'->>'source', payload->'Received'->>'kind' FROM events WHERE aggregate_type = 'Inbound' ORDER BY position",
    )
    .fetch_all(app.store.pool())
    .await
    .expect("kinds");
    for expected in [
        ("stripe", "invoice.payment_failed"),
        ("github", "workflow_run.completed"),
        ("github", "ping"),
        ("slack", "event.app_mention"),
        ("slack", "slash_command"),
        ("slack", "interaction.block_actions"),
        ("hubspot", "contact.creation"),
        ("hubspot", "deal.propertyChange"),
        ("intercom", "conversation.user.replied"),
        ("bank", "expense.recorded"),
    ] {
        assert!(
            kinds.contains(&(expected.0.to_string(), expected.1.to_string())),
            "{expected:?} not recorded"
        );
    }
    app.stop().await;
}

/// One way a delivery can be wrong, and what must come of it.
#[derive(Debug, Clone, Copy)]
enum Bad {
    TamperedBody,
    WrongSecret,
    TimestampPastTolerance,
    TimestampAheadOfTolerance,
    MissingSignature,
    NotUtf8,
    MalformedBody,
    Oversized,
}

fn without(delivery: &mut Delivery, header: &str) {
    delivery.headers.retain(|(name, _)| name != header);
}

fn signature_header(sender: &Sender) -> &'static str {
    match sender {
        Sender::Stripe => "stripe-signature",
        Sender::GitHub { .. } => "x-hub-signature-256",
        Sender::SlackEvents | Sender::SlackCommands | Sender::SlackInteractions => {
            "x-slack-signature"
        }
        Sender::HubSpot => "x-hubspot-signature-v3",
        Sender::Intercom => "x-hub-signature",
        Sender::Standard { .. } => "webhook-signature",
    }
}

fn has_timestamp(sender: &Sender) -> bool {
    !matches!(sender, Sender::GitHub { .. } | Sender::Intercom)
}

/// The delivery for `bad`, and the status it must get; `None` where it does not apply.
fn bad_delivery(path: &Path, bad: Bad, config: &Config, base: &str) -> Option<(Delivery, u16)> {
    let sender = sender_of(path).expect("a known sender");
    let body = std::fs::read(path).expect("the fixture");
    let now = Utc::now();
    let form = matches!(sender, Sender::SlackCommands | Sender::SlackInteractions);
    Some(match bad {
        Bad::TamperedBody => {
            let mut d = sign(&sender, body, config, base, now).ok()?;
            d.body.push(b' ');
            (d, 401)
        }
        Bad::WrongSecret => (sign(&sender, body, &impostor(), base, now).ok()?, 401),
        Bad::TimestampPastTolerance if has_timestamp(&sender) => {
            // Far past the tolerance: the time a loaded machine takes to send it can only
            // bring a timestamp ahead of it back within it (the edges are unit tested).
            let at = now - chrono::Duration::seconds(900);
            (sign(&sender, body, config, base, at).ok()?, 401)
        }
        Bad::TimestampAheadOfTolerance if has_timestamp(&sender) => {
            let at = now + chrono::Duration::seconds(900);
            (sign(&sender, body, config, base, at).ok()?, 401)
        }
        Bad::TimestampPastTolerance | Bad::TimestampAheadOfTolerance => return None,
        Bad::MissingSignature => {
            let mut d = sign(&sender, body, config, base, now).ok()?;
            without(&mut d, signature_header(&sender));
            (d, 401)
        }
        Bad::NotUtf8 => {
            let body = b"{\"id\": \"\xff\xfe\xfd\"}".to_vec();
            (sign(&sender, body, config, base, now).ok()?, 400)
        }
        Bad::MalformedBody => {
            let body = if form {
                b"payload=%7Bnot%20json&trigger_id=1".to_vec()
            } else {
                b"{\"id\": \"evt_1\", \"type\": ".to_vec()
            };
            // A slash command's form has no JSON to be malformed: it misses its fields.
            (sign(&sender, body, config, base, now).ok()?, 400)
        }
        Bad::Oversized => {
            let mut body = body;
            body.resize(LIMIT + 1, b' ');
            (sign(&sender, body, config, base, now).ok()?, 413)
        }
    })
}

#[tokio::test]
async fn bad_deliveries_are_refused_with_a_clear_error_and_store_nothing() {
    let config = configured();
    let app = TestApp::spawn_with(config.clone()).await;
    let one_per_sender = [
        "stripe/invoice.payment_failed.json",
        "github/workflow_run.completed.failure.json",
        "slack/events/app_mention.json",
        "slack/commands/weather.txt",
        "slack/interactions/block_actions.txt",
        "hubspot/contact.creation.json",
        "intercom/conversation.user.created.json",
        "std/bank/expense.recorded.json",
    ];
    let table = [
        Bad::TamperedBody,
        Bad::WrongSecret,
        Bad::TimestampPastTolerance,
        Bad::TimestampAheadOfTolerance,
        Bad::MissingSignature,
        Bad::NotUtf8,
        Bad::MalformedBody,
        Bad::Oversized,
    ];
    let mut checked = 0;
    for name in one_per_sender {
        for bad in table {
            let Some((delivery, expected)) =
                bad_delivery(&fixture(name), bad, &config, &base(&app))
            else {
                continue;
            };
            let (status, body) = post(&app, &delivery).await;
            assert_eq!(status, expected, "{name} {bad:?}: {body}");
            assert!(
                body["error"].is_string() && body["message"].is_string(),
                "{name} {bad:?}: a clear JSON error, got {body}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 8 * 8 - 2 * 2, "every applicable row ran");
    assert_eq!(events(&app).await, 0, "nothing was stored");
    app.stop().await;
}

#[tokio::test]
async fn missing_headers_other_than_the_signature_are_400() {
    let config = configured();
    let app = TestApp::spawn_with(config.clone()).await;
    for (name, header) in [
        ("github/push.json", "x-github-event"),
        ("github/push.json", "x-github-delivery"),
        ("std/bank/expense.recorded.json", "webhook-id"),
        ("slack/events/app_mention.json", "x-slack-request-timestamp"),
        (
            "hubspot/contact.creation.json",
            "x-hubspot-request-timestamp",
        ),
        ("std/bank/expense.recorded.json", "webhook-timestamp"),
    ] {
        let mut delivery =
            prepare(&fixture(name), &config, &base(&app), Utc::now()).expect("signs");
        without(&mut delivery, header);
        let (status, body) = post(&app, &delivery).await;
        let expected = if header.contains("timestamp") {
            401
        } else {
            400
        };
        assert_eq!(status, expected, "{name} without {header}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap_or_default()
                .contains(header),
            "{body}"
        );
    }
    assert_eq!(events(&app).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn several_signatures_pass_when_one_of_them_is_valid() {
    let config = configured();
    let app = TestApp::spawn_with(config.clone()).await;
    // Stripe while a secret is rolled: one v1 per secret.
    let mut stripe = prepare(
        &fixture("stripe/invoice.paid.json"),
        &config,
        &base(&app),
        Utc::now(),
    )
    .expect("signs");
    for (name, value) in stripe.headers.iter_mut() {
        if name == "stripe-signature" {
            let (t, v1) = value.split_once(",v1=").expect("t and v1");
            *value = format!("{t},v1={},v0=ignored,v1={v1}", "ab".repeat(32));
        }
    }
    let (status, body) = post(&app, &stripe).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("accepted")),
        "{body}"
    );
    // Standard Webhooks: a space-separated list, an asymmetric one among them.
    let mut std = prepare(
        &fixture("std/bank/expense.recorded.json"),
        &config,
        &base(&app),
        Utc::now(),
    )
    .expect("signs");
    for (name, value) in std.headers.iter_mut() {
        if name == "webhook-signature" {
            *value = format!("v1a,AAAA v1,bm90IGl0 {value}");
        }
    }
    let (status, body) = post(&app, &std).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("accepted")),
        "{body}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_standard_webhooks_secret_works_without_its_prefix() {
    let mut pairs: Vec<(&str, &str)> = SECRETS.to_vec();
    pairs.retain(|(k, _)| *k != "EXECOPS_WEBHOOK_SECRETS");
    pairs.push((
        "EXECOPS_WEBHOOK_SECRETS",
        "bank=MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ));
    let unprefixed = config(&pairs);
    let app = TestApp::spawn_with(unprefixed).await;
    // Signed with the prefixed form of the same secret.
    let delivery = prepare(
        &fixture("std/bank/expense.recorded.json"),
        &configured(),
        &base(&app),
        Utc::now(),
    )
    .expect("signs");
    let (status, body) = post(&app, &delivery).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("accepted")),
        "{body}"
    );
    app.stop().await;
}

#[tokio::test]
async fn concurrent_copies_of_a_delivery_are_all_acknowledged_and_stored_once() {
    let config = configured();
    let app = std::sync::Arc::new(TestApp::spawn_with(config.clone()).await);
    let delivery = prepare(
        &fixture("stripe/charge.dispute.created.json"),
        &config,
        &base(&app),
        Utc::now(),
    )
    .expect("signs");
    let mut copies = Vec::new();
    for _ in 0..25 {
        let app = app.clone();
        let delivery = delivery.clone();
        copies.push(tokio::spawn(async move { post(&app, &delivery).await }));
    }
    let mut accepted = 0;
    for copy in copies {
        let (status, body) = copy.await.expect("a copy finishes");
        assert_eq!(status, 200, "{body}");
        if body["status"] == "accepted" {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 1);
    assert_eq!(events(&app).await, 1);
}

#[tokio::test]
async fn slack_url_verification_is_answered_with_its_challenge_and_not_stored() {
    let config = configured();
    let app = TestApp::spawn_with(config.clone()).await;
    let body = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/provider-examples/slack/url_verification.json"),
    )
    .unwrap_or_else(|_| {
        br#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#.to_vec()
    });
    let delivery =
        sign(&Sender::SlackEvents, body, &config, &base(&app), Utc::now()).expect("signs");
    let (status, answer) = post(&app, &delivery).await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );
    assert_eq!(events(&app).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_event_type_of_a_configured_sender_is_stored_with_its_kind() {
    let config = configured();
    let app = TestApp::spawn_with(config.clone()).await;
    let body = br#"{"id":"evt_unknown_1","object":"event","type":"issuing_card.shipped","created":1721954100,"data":{"object":{}}}"#.to_vec();
    let delivery = sign(&Sender::Stripe, body, &config, &base(&app), Utc::now()).expect("signs");
    let (status, answer) = post(&app, &delivery).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")));
    assert_eq!(answer["id"], "stripe:evt_unknown_1");
    let kind: String = sqlx::query_scalar("SELECT payload->'Received'->>'kind' FROM events")
        .fetch_one(app.store.pool())
        .await
        .expect("one event");
    assert_eq!(kind, "issuing_card.shipped");
    app.stop().await;
}

#[tokio::test]
async fn a_sender_without_a_secret_is_disabled_with_a_clear_error() {
    let app = TestApp::spawn_with(config(&[])).await;
    let signed_anyway = configured();
    for name in [
        "stripe/invoice.paid.json",
        "github/ping.json",
        "slack/events/app_mention.json",
        "hubspot/contact.creation.json",
        "intercom/conversation.user.created.json",
        "std/bank/expense.recorded.json",
    ] {
        let delivery =
            prepare(&fixture(name), &signed_anyway, &base(&app), Utc::now()).expect("signs");
        let (status, body) = post(&app, &delivery).await;
        assert_eq!(status, 503, "{name}: {body}");
        assert_eq!(body["error"], "source_disabled", "{name}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains("set "), "{name}: {message}");
    }
    assert_eq!(events(&app).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn hubspot_batches_become_one_inbound_per_event() {
    let config = configured();
    let app = TestApp::spawn_with(config.clone()).await;
    let body = br#"[{"eventId":11,"subscriptionType":"contact.creation","objectId":1,"occurredAt":1564113600000},{"eventId":12,"subscriptionType":"deal.propertyChange","objectId":2,"occurredAt":1564113600000,"propertyName":"dealstage","propertyValue":"closedwon"}]"#.to_vec();
    let delivery = sign(&Sender::HubSpot, body, &config, &base(&app), Utc::now()).expect("signs");
    let (status, answer) = post(&app, &delivery).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "accepted");
    assert_eq!(answer["events"][1]["id"], "hubspot:12");
    assert_eq!(events(&app).await, 2);
    let (_, again) = post(&app, &delivery).await;
    assert_eq!(again["status"], "duplicate");
    assert_eq!(events(&app).await, 2);
    app.stop().await;
}

#[tokio::test]
async fn the_send_command_signs_and_posts_a_fixture() {
    let app = TestApp::spawn_with(configured()).await;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_execops"));
    command
        .args(["send", "--to", &base(&app)])
        .arg(fixture("github/workflow_run.completed.failure.json"));
    for (key, value) in SECRETS {
        command.env(key, value);
    }
    // The server runs on this test's runtime: wait for the command off it.
    let run = |mut command: std::process::Command| async move {
        tokio::task::spawn_blocking(move || command.output())
            .await
            .expect("send task")
            .expect("send runs")
    };
    let command_again = {
        let mut again = std::process::Command::new(env!("CARGO_BIN_EXE_execops"));
        again.args(command.get_args());
        for (key, value) in SECRETS {
            again.env(key, value);
        }
        again
    };
    let first = run(command).await;
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stdout).starts_with("200 "));
    assert!(String::from_utf8_lossy(&first.stdout).contains("accepted"));
    let second = run(command_again).await;
    assert!(String::from_utf8_lossy(&second.stdout).contains("duplicate"));
    assert_eq!(events(&app).await, 1);
    app.stop().await;
}

#[tokio::test]
async fn the_slash_command_answer_is_shown_only_to_its_sender() {
    let config = configured();
    let app = TestApp::spawn_with(config.clone()).await;
    let delivery = prepare(
        &fixture("slack/commands/weather.txt"),
        &config,
        &base(&app),
        Utc::now(),
    )
    .expect("signs");
    let (status, body) = post(&app, &delivery).await;
    assert_eq!(status, 200);
    assert_eq!(body["response_type"], "ephemeral");
    assert_eq!(body["status"], "accepted");
    app.stop().await;
}

#[tokio::test]
async fn webhooks_get_503_while_postgres_is_down_and_200_once_it_is_back() {
    use execops::store::embedded::{EmbeddedOptions, EmbeddedPostgres};
    use execops::store::{connect, create_database_if_missing, MIGRATOR};

    let dir = std::env::temp_dir().join(format!("execops-outage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = crate::common::free_port();
    let options = EmbeddedOptions {
        port: Some(port),
        ..EmbeddedOptions::new(&dir).throwaway()
    };
    let start = |options: EmbeddedOptions| async move {
        tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&options))
            .await
            .expect("start task")
            .expect("postgres starts")
    };
    let cluster = start(options.clone()).await;
    create_database_if_missing(&cluster.url("postgres"), "execops")
        .await
        .expect("a database");
    // Room for the eight subscriptions, the executor and the requests, as the product's
    // default of 20 gives: when Postgres comes back they all reconnect at once.
    let pool = connect(&cluster.url("execops"), 12)
        .await
        .expect("connects");
    MIGRATOR.run(&pool).await.expect("migrates");
    let config = configured();
    let app = TestApp::spawn_on(pool.clone(), config.clone()).await;
    let send =
        |name: &str| prepare(&fixture(name), &config, &base(&app), Utc::now()).expect("signs");

    let (status, _) = post(&app, &send("stripe/invoice.payment_failed.json")).await;
    assert_eq!(status, 200);
    // Several idle connections in the pool when Postgres goes away: each is dead once it
    // is back, and none may fail a request.
    let idle = futures::future::try_join_all((0..4).map(|_| pool.acquire()))
        .await
        .expect("connections");
    drop(idle);

    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .expect("stop task")
        .expect("postgres stops");
    let down = send("stripe/invoice.paid.json");
    let mut request = app.client.post(app.url(&down.path));
    for (name, value) in &down.headers {
        request = request.header(name, value);
    }
    let response = request
        .body(down.body.clone())
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status().as_u16(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"], "store_unavailable");

    let cluster = start(options).await;
    let (status, body) = post(&app, &down).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("accepted")),
        "{body}"
    );
    assert_eq!(
        events(&app).await,
        2,
        "the delivery refused while down is stored once retried"
    );
    app.stop().await;
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn hubspot_is_verified_only_against_the_public_url_never_the_host_a_request_names() {
    // Without EXECOPS_PUBLIC_URL the sender is disabled, signature or not.
    let mut pairs: Vec<(&str, &str)> = SECRETS[1..].to_vec();
    pairs.push(("EXECOPS_WEBHOOK_MAX_BODY_BYTES", "262144"));
    let app = TestApp::spawn_with(config(&pairs)).await;
    let body = std::fs::read(fixture("hubspot/contact.creation.json")).expect("fixture");
    let mut spoofed = configured();
    spoofed.public_url = Some(format!("http://{}", app.addr));
    let delivery = sign(
        &Sender::HubSpot,
        body.clone(),
        &spoofed,
        &base(&app),
        Utc::now(),
    )
    .expect("signs");
    let (status, answer) = post(&app, &delivery).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"], "source_disabled");
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or_default()
            .contains("EXECOPS_PUBLIC_URL"),
        "{answer}"
    );
    app.stop().await;

    // With it, a delivery signed for the host the request names is refused.
    let app = TestApp::spawn_with(configured()).await;
    let (status, answer) = post(&app, &delivery).await;
    assert_eq!(status, 401, "{answer}");
    let genuine = sign(
        &Sender::HubSpot,
        body,
        &configured(),
        &base(&app),
        Utc::now(),
    )
    .expect("signs");
    let (status, answer) = post(&app, &genuine).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(events(&app).await, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_captured_github_delivery_sent_again_under_a_new_delivery_id_changes_nothing() {
    let config = configured();
    let app = TestApp::spawn_with(config.clone()).await;
    let delivery = prepare(
        &fixture("github/workflow_run.completed.failure.json"),
        &config,
        &base(&app),
        Utc::now(),
    )
    .expect("signs");
    let (status, body) = post(&app, &delivery).await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("accepted")),
        "{body}"
    );
    // The same signed body under a delivery id GitHub never sent.
    let mut replayed = delivery.clone();
    without(&mut replayed, "x-github-delivery");
    replayed.headers.push((
        "x-github-delivery".into(),
        "00000000-0000-4000-8000-000000000001".into(),
    ));
    let (status, body) = post(&app, &replayed).await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("duplicate")),
        "{body}"
    );
    // GitHub's own redelivery keeps the id and the body: a duplicate too.
    let (status, body) = post(&app, &delivery).await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("duplicate")),
        "{body}"
    );
    assert_eq!(events(&app).await, 1);
    app.stop().await;
}
