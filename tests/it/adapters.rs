//! The execution adapters against local peers: wiremock servers that check the request
//! shapes Slack, Stripe, GitHub and Standard Webhooks receivers document, and a real SMTP
//! server. Each adapter's preview must be what it then sends, minus its secrets.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use execops::adapters::{Adapter, AdapterError, Adapters, RequestPreview};
use execops::config::AdapterConfig;
use execops::ingest::standard;
use lettre::message::Mailbox;
use mailin_embedded::{response, Handler, Response, Server};
use serde_json::{json, Value};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const KEY: &str = "execops-8c4e5f0a1b2c3d4e5f60718293a4b5c6";
const SLACK_TOKEN: &str = "xoxb-adapters-test";
const STRIPE_KEY: &str = "sk_test_adapters";
const GITHUB_TOKEN: &str = "ghp_adapters_test";
const OUTBOUND_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One email as the SMTP server received it.
#[derive(Clone, Debug, PartialEq)]
pub struct Mail {
    /// The envelope's `MAIL FROM`.
    pub from: String,
    /// The envelope's `RCPT TO`s.
    pub to: Vec<String>,
    /// The message as sent after `DATA`: headers and body.
    pub data: String,
}

/// A real SMTP server (mailin-embedded) on a free loopback port that keeps what it
/// receives. Like a real server it refuses some recipients: `nobody@…` with 550 (permanent)
/// and `later@…` with 451 (transient).
pub struct Smtp {
    pub addr: SocketAddr,
    messages: Arc<Mutex<Vec<Mail>>>,
}

#[derive(Clone)]
struct Collector {
    messages: Arc<Mutex<Vec<Mail>>>,
    current: Option<Mail>,
}

impl Handler for Collector {
    fn rcpt(&mut self, to: &str) -> Response {
        if to.starts_with("nobody@") {
            response::NO_MAILBOX
        } else if to.starts_with("later@") {
            response::INTERNAL_ERROR
        } else {
            response::OK
        }
    }

    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.current = Some(Mail {
            from: from.to_string(),
            to: to.to_vec(),
            data: String::new(),
        });
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> io::Result<()> {
        if let Some(mail) = &mut self.current {
            mail.data.push_str(&String::from_utf8_lossy(buf));
        }
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        if let Some(mail) = self.current.take() {
            self.messages.lock().expect("lock").push(mail);
        }
        response::OK
    }

    fn helo(&mut self, _ip: IpAddr, _domain: &str) -> Response {
        response::OK
    }
}

/// A loopback address that refuses connections: its port is bound for as long as the socket
/// lives, so no other test is handed it meanwhile, but nothing listens on it.
fn refusing() -> (tokio::net::TcpSocket, SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("a free port");
    let addr = socket.local_addr().expect("its address");
    (socket, addr)
}

impl Smtp {
    pub fn start() -> Smtp {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
        let addr = listener.local_addr().expect("the listener's address");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let mut server = Server::new(Collector {
            messages: messages.clone(),
            current: None,
        });
        server.with_name("smtp.test").with_tcp_listener(listener);
        // The server blocks its thread for good; it ends with the test process.
        std::thread::spawn(move || {
            if let Err(e) = server.serve() {
                eprintln!("the test SMTP server stopped: {e}");
            }
        });
        Smtp { addr, messages }
    }

    pub fn messages(&self) -> Vec<Mail> {
        self.messages.lock().expect("lock").clone()
    }
}

/// Local Slack, Stripe, GitHub and webhook receivers.
struct Peers {
    slack: MockServer,
    stripe: MockServer,
    github: MockServer,
    hooks: MockServer,
}

impl Peers {
    async fn start() -> Self {
        Self {
            slack: MockServer::start().await,
            stripe: MockServer::start().await,
            github: MockServer::start().await,
            hooks: MockServer::start().await,
        }
    }

    /// Every adapter configured against these peers, plus `extra` settings.
    fn config(&self, extra: &[(&str, &str)]) -> AdapterConfig {
        let slack = self.slack.uri();
        let stripe = format!("{}/", self.stripe.uri());
        let github = self.github.uri();
        let hooks = format!("ops={}/hooks/ops", self.hooks.uri());
        let mut pairs = vec![
            ("SLACK_BOT_TOKEN", SLACK_TOKEN),
            ("SLACK_API_BASE", slack.as_str()),
            ("STRIPE_API_KEY", STRIPE_KEY),
            ("STRIPE_API_BASE", stripe.as_str()),
            ("GITHUB_TOKEN", GITHUB_TOKEN),
            ("GITHUB_API_BASE", github.as_str()),
            ("EXECOPS_OUTBOUND_WEBHOOKS", hooks.as_str()),
            ("EXECOPS_OUTBOUND_SECRET", OUTBOUND_SECRET),
            ("EXECOPS_ADAPTER_TIMEOUT_MS", "5000"),
        ];
        pairs.extend_from_slice(extra);
        crate::common::config(&pairs).adapters
    }

    fn adapters(&self, extra: &[(&str, &str)]) -> Adapters {
        Adapters::new(&self.config(extra))
    }
}

async fn received(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.unwrap_or_default()
}

fn header_of<'a>(request: &'a Request, name: &str) -> &'a str {
    request
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("the request has no {name} header"))
}

fn json_of(request: &Request) -> Value {
    serde_json::from_slice(&request.body).expect("a JSON body")
}

/// The URL a request was sent to; wiremock names every request's host `localhost`.
fn sent_url(request: &Request) -> String {
    let mut url = format!(
        "http://{}{}",
        header_of(request, "host"),
        request.url.path()
    );
    if let Some(query) = request.url.query() {
        url = format!("{url}?{query}");
    }
    url
}

/// Asserts that `preview` shows what `request` was: method, URL, body and every header the
/// preview lists other than the credential, which it shows redacted.
fn assert_preview_matches(preview: &RequestPreview, request: &Request, secret: &str) {
    assert_eq!(preview.method, request.method.as_str());
    assert_eq!(preview.url, sent_url(request));
    for (name, value) in &preview.headers {
        if name.eq_ignore_ascii_case("authorization") {
            assert_eq!(value, "Bearer [redacted]");
            assert_eq!(header_of(request, name), format!("Bearer {secret}"));
        } else {
            assert_eq!(header_of(request, name), value, "header {name}");
        }
    }
    let sent = if request.body.is_empty() && !preview.headers.contains_key("Content-Type") {
        Value::Null
    } else {
        serde_json::from_slice::<Value>(&request.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&request.body).into_owned()))
    };
    assert_eq!(preview.body, sent);
    let shown = serde_json::to_string(preview).expect("a preview serialises");
    assert!(
        !shown.contains(secret),
        "the preview shows the secret: {shown}"
    );
}

fn permanent(result: Result<Value, AdapterError>) -> String {
    match result {
        Err(AdapterError::Permanent(message)) => message,
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

fn transient(result: Result<Value, AdapterError>) -> (String, Option<Duration>) {
    match result {
        Err(AdapterError::Transient {
            message,
            retry_after,
        }) => (message, retry_after),
        other => panic!("expected a transient error, got {other:?}"),
    }
}

// Slack

fn slack_action() -> Value {
    json!({ "channel": "#founders", "text": "Invoice in_123 failed twice." })
}

#[tokio::test]
async fn a_slack_message_is_posted_with_the_bot_token_and_previewed_exactly() {
    let peers = Peers::start().await;
    Mock::given(method("POST"))
        .and(path("/chat.postMessage"))
        .and(header(
            "authorization",
            format!("Bearer {SLACK_TOKEN}").as_str(),
        ))
        .and(header("content-type", "application/json; charset=utf-8"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({ "ok": true, "channel": "C0FOUNDERS", "ts": "1700000000.000100" }),
        ))
        .expect(1)
        .mount(&peers.slack)
        .await;
    let adapters = peers.adapters(&[]);

    let result = adapters
        .execute("slack.post_message", &slack_action(), KEY)
        .await
        .expect("posted");

    assert_eq!(
        result,
        json!({ "channel": "C0FOUNDERS", "ts": "1700000000.000100" })
    );
    let requests = received(&peers.slack).await;
    assert_eq!(requests.len(), 1);
    assert_eq!(json_of(&requests[0]), slack_action());
    let preview = adapters
        .preview("slack.post_message", &slack_action(), KEY)
        .expect("a preview");
    assert_eq!(preview.len(), 1);
    assert_eq!(
        preview[0].headers.keys().collect::<Vec<_>>(),
        ["Authorization", "Content-Type"]
    );
    assert_preview_matches(&preview[0], &requests[0], SLACK_TOKEN);
    assert!(!adapters.dedupes("slack.post_message"));
}

#[tokio::test]
async fn slack_rate_limits_and_outages_are_transient_and_refusals_keep_slacks_error() {
    let peers = Peers::start().await;
    let adapters = peers.adapters(&[]);
    let cases = [
        (
            "429 with Retry-After",
            ResponseTemplate::new(429).insert_header("retry-after", "7"),
            Some(Some(Duration::from_secs(7))),
        ),
        (
            "ok:false ratelimited",
            ResponseTemplate::new(200)
                .set_body_json(json!({ "ok": false, "error": "ratelimited" })),
            Some(None),
        ),
        ("503", ResponseTemplate::new(503), Some(None)),
        (
            "ok:false channel_not_found",
            ResponseTemplate::new(200)
                .set_body_json(json!({ "ok": false, "error": "channel_not_found" })),
            None,
        ),
        (
            "ok:false not_in_channel",
            ResponseTemplate::new(200)
                .set_body_json(json!({ "ok": false, "error": "not_in_channel" })),
            None,
        ),
    ];
    for (case, answer, expected) in cases {
        peers.slack.reset().await;
        Mock::given(method("POST"))
            .and(path("/chat.postMessage"))
            .respond_with(answer)
            .mount(&peers.slack)
            .await;
        let result = adapters
            .execute("slack.post_message", &slack_action(), KEY)
            .await;
        match expected {
            Some(retry_after) => {
                let (_, after) = transient(result);
                assert_eq!(after, retry_after, "{case}");
            }
            None => {
                let message = permanent(result);
                let error = case.trim_start_matches("ok:false ");
                assert!(message.contains(error), "{case}: {message}");
            }
        }
    }
}

#[tokio::test]
async fn undoing_a_slack_message_deletes_it_with_chat_delete() {
    let peers = Peers::start().await;
    Mock::given(method("POST"))
        .and(path("/chat.delete"))
        .and(header(
            "authorization",
            format!("Bearer {SLACK_TOKEN}").as_str(),
        ))
        .and(header("content-type", "application/json; charset=utf-8"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({ "ok": true, "channel": "C0FOUNDERS", "ts": "1700000000.000100" }),
        ))
        .expect(1)
        .mount(&peers.slack)
        .await;
    let adapters = peers.adapters(&[]);
    assert_eq!(adapters.rollback_limit("slack.post_message"), None);

    let result = json!({ "channel": "C0FOUNDERS", "ts": "1700000000.000100" });
    adapters
        .rollback("slack.post_message", &slack_action(), &result, KEY)
        .await
        .expect("deleted");

    let requests = received(&peers.slack).await;
    assert_eq!(requests.len(), 1);
    assert_eq!(json_of(&requests[0]), result);
}

// Email

fn email_action(to: Value) -> Value {
    json!({
        "to": to,
        "template": "card_update",
        "subject": "Your payment didn't go through",
        "body": "Hi,\n\nPlease update your card for invoice in_123.\n",
        "invoice": "in_123",
    })
}

#[tokio::test]
async fn an_email_arrives_at_the_smtp_server_with_its_message_id() {
    let peers = Peers::start().await;
    let smtp = Smtp::start();
    let smtp_url = format!("smtp://{}", smtp.addr);
    let adapters = peers.adapters(&[
        ("SMTP_URL", &smtp_url),
        ("EXECOPS_EMAIL_FROM", "Acme Billing <billing@acme.test>"),
    ]);
    let action = email_action(json!({ "email": "jenny.rosen@example.com" }));

    let result = adapters
        .execute("email.send", &action, KEY)
        .await
        .expect("sent");

    let message_id = format!("<{KEY}@execops>");
    assert_eq!(
        result,
        json!({ "message_id": message_id, "to": "jenny.rosen@example.com" })
    );
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1, "one email");
    let mail = &mails[0];
    assert_eq!(mail.from, "billing@acme.test");
    assert_eq!(mail.to, ["jenny.rosen@example.com"]);
    assert!(
        mail.data.contains(&format!("Message-ID: {message_id}\r\n")),
        "{}",
        mail.data
    );
    assert!(mail
        .data
        .contains("Please update your card for invoice in_123."));

    let preview = adapters
        .preview("email.send", &action, KEY)
        .expect("a preview");
    assert_eq!(preview.len(), 1);
    assert_eq!(preview[0].method, "SMTP");
    assert_eq!(preview[0].url, smtp_url);
    assert_eq!(preview[0].body, action["body"]);
    assert_eq!(preview[0].headers["Message-ID"], message_id);
    // The preview shows header values as a mail client does, before their encoding.
    for (name, value) in &preview[0].headers {
        let sent = mail
            .data
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in {}", mail.data));
        if name == "From" || name == "To" {
            let sent: Mailbox = sent.parse().expect("a mailbox");
            assert_eq!(Ok(sent), value.parse::<Mailbox>(), "{name}");
        } else {
            assert_eq!(sent, value, "{name}");
        }
    }
    assert!(!adapters.dedupes("email.send"));
}

#[tokio::test]
async fn an_email_to_a_stripe_customer_goes_to_the_address_stripe_has() {
    let peers = Peers::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/customers/cus_QXg1o8vcGmoR32"))
        .and(header(
            "authorization",
            format!("Bearer {STRIPE_KEY}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "cus_QXg1o8vcGmoR32",
            "object": "customer",
            "email": "jenny.rosen@example.com",
            "name": "Jenny Rosen",
        })))
        .expect(1)
        .mount(&peers.stripe)
        .await;
    let smtp = Smtp::start();
    let smtp_url = format!("smtp://{}", smtp.addr);
    let adapters = peers.adapters(&[("SMTP_URL", &smtp_url)]);
    let action = email_action(json!({ "stripe_customer": "cus_QXg1o8vcGmoR32" }));

    let result = adapters
        .execute("email.send", &action, KEY)
        .await
        .expect("sent");

    assert_eq!(result["to"], "jenny.rosen@example.com");
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, ["jenny.rosen@example.com"]);
    assert!(mails[0].data.contains("To: jenny.rosen@example.com\r\n"));
    assert!(mails[0]
        .data
        .contains("Subject: Your payment didn't go through\r\n"));

    // The preview shows the lookup, then the email with the address it will carry.
    let preview = adapters
        .preview("email.send", &action, KEY)
        .expect("a preview");
    assert_eq!(preview.len(), 2);
    let lookups = received(&peers.stripe).await;
    assert_eq!(lookups.len(), 1, "the preview itself calls nobody");
    assert_preview_matches(&preview[0], &lookups[0], STRIPE_KEY);
    assert_eq!(preview[1].method, "SMTP");
    assert!(preview[1].headers["To"].contains("cus_QXg1o8vcGmoR32"));
}

#[tokio::test]
async fn a_stripe_customer_without_an_address_or_unknown_to_stripe_gets_no_email() {
    let peers = Peers::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/customers/cus_NoEmail"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "id": "cus_NoEmail", "object": "customer", "email": null })),
        )
        .mount(&peers.stripe)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/customers/cus_Missing"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({
            "error": { "type": "invalid_request_error", "message": "No such customer: 'cus_Missing'" }
        })))
        .mount(&peers.stripe)
        .await;
    let smtp = Smtp::start();
    let smtp_url = format!("smtp://{}", smtp.addr);
    let adapters = peers.adapters(&[("SMTP_URL", &smtp_url)]);

    for (customer, expected) in [
        ("cus_NoEmail", "has no email address"),
        ("cus_Missing", "No such customer: 'cus_Missing'"),
        ("cus_../../v1/charges", "is not a Stripe customer id"),
    ] {
        let action = email_action(json!({ "stripe_customer": customer }));
        let message = permanent(adapters.execute("email.send", &action, KEY).await);
        assert!(message.contains(expected), "{customer}: {message}");
    }
    assert!(smtp.messages().is_empty());
}

#[tokio::test]
async fn an_intercom_user_cannot_be_emailed_without_an_address_in_the_signal() {
    let peers = Peers::start().await;
    let smtp = Smtp::start();
    let smtp_url = format!("smtp://{}", smtp.addr);
    let adapters = peers.adapters(&[("SMTP_URL", &smtp_url)]);
    let action = email_action(json!({ "intercom_user": "5f1a2b" }));

    let message = permanent(adapters.execute("email.send", &action, KEY).await);

    assert!(message.contains("Intercom"), "{message}");
    assert!(message.contains("must be in the signal"), "{message}");
    assert!(adapters.preview("email.send", &action, KEY).is_err());
    assert!(smtp.messages().is_empty());
}

#[tokio::test]
async fn smtp_refusals_are_permanent_and_busy_or_unreachable_servers_transient() {
    let peers = Peers::start().await;
    let smtp = Smtp::start();
    let smtp_url = format!("smtp://{}", smtp.addr);
    let adapters = peers.adapters(&[("SMTP_URL", &smtp_url)]);

    let refused = email_action(json!({ "email": "nobody@example.com" }));
    let message = permanent(adapters.execute("email.send", &refused, KEY).await);
    assert!(message.contains("550"), "{message}");

    let busy = email_action(json!({ "email": "later@example.com" }));
    let (message, _) = transient(adapters.execute("email.send", &busy, KEY).await);
    assert!(message.contains("451"), "{message}");
    assert!(smtp.messages().is_empty());

    let (_held, closed) = refusing();
    let unreachable = peers.adapters(&[
        ("SMTP_URL", &format!("smtp://{closed}")),
        ("EXECOPS_ADAPTER_TIMEOUT_MS", "1000"),
    ]);
    let ok = email_action(json!({ "email": "jenny.rosen@example.com" }));
    transient(unreachable.execute("email.send", &ok, KEY).await);
}

#[tokio::test]
async fn an_email_cannot_be_undone() {
    let peers = Peers::start().await;
    let adapters = peers.adapters(&[]);
    let limit = "an email cannot be unsent";
    assert_eq!(adapters.rollback_limit("email.send"), Some(limit));
    let action = email_action(json!({ "email": "jenny.rosen@example.com" }));
    let result =
        json!({ "message_id": format!("<{KEY}@execops>"), "to": "jenny.rosen@example.com" });
    assert_eq!(
        adapters.rollback("email.send", &action, &result, KEY).await,
        Err(AdapterError::Unsupported(limit.into()))
    );
}

// Stripe

fn invoice(id: &str, status: &str) -> Value {
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/stripe/invoice.paid.json"
        ))
        .expect("the invoice.paid fixture"),
    )
    .expect("json");
    let mut invoice = fixture["data"]["object"].clone();
    invoice["id"] = json!(id);
    invoice["status"] = json!(status);
    invoice
}

/// An open invoice that owes `amount` in `currency`.
fn owing(id: &str, amount: i64, currency: &str) -> Value {
    let mut open = invoice(id, "open");
    open["amount_remaining"] = json!(amount);
    open["amount_due"] = json!(amount);
    open["amount_paid"] = json!(0);
    open["currency"] = json!(currency);
    open
}

/// Stripe's answer to reading invoice `id`.
async fn stripe_reads(peers: &Peers, id: &str, answer: Value) {
    Mock::given(method("GET"))
        .and(path(format!("/v1/invoices/{id}")))
        .and(header(
            "authorization",
            format!("Bearer {STRIPE_KEY}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .mount(&peers.stripe)
        .await;
}

#[tokio::test]
async fn a_stripe_invoice_is_retried_with_the_proposals_idempotency_key() {
    let peers = Peers::start().await;
    let id = "in_1Pgc6tB7WZ01zgkWu9fdqL6I";
    stripe_reads(&peers, id, owing(id, 1000, "usd")).await;
    let paid = invoice(id, "paid");
    Mock::given(method("POST"))
        .and(path("/v1/invoices/in_1Pgc6tB7WZ01zgkWu9fdqL6I/pay"))
        .and(header(
            "authorization",
            format!("Bearer {STRIPE_KEY}").as_str(),
        ))
        .and(header("idempotency-key", KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(paid.clone()))
        .expect(1)
        .mount(&peers.stripe)
        .await;
    let adapters = peers.adapters(&[]);
    let action = json!({ "invoice": id, "amount_cents": 1000, "currency": "usd" });

    let result = adapters
        .execute("stripe.retry_invoice", &action, KEY)
        .await
        .expect("paid");

    assert_eq!(
        result,
        json!({
            "invoice": "in_1Pgc6tB7WZ01zgkWu9fdqL6I",
            "status": "paid",
            "amount_paid": paid["amount_paid"],
        })
    );
    // The invoice is read first, then paid.
    let requests = received(&peers.stripe).await;
    assert_eq!(requests.len(), 2);
    let preview = adapters
        .preview("stripe.retry_invoice", &action, KEY)
        .expect("a preview");
    assert_eq!(preview.len(), 2);
    assert_eq!(preview[1].headers["Idempotency-Key"], KEY);
    assert_eq!(
        preview[1].headers["Content-Type"],
        "application/x-www-form-urlencoded"
    );
    assert_preview_matches(&preview[0], &requests[0], STRIPE_KEY);
    assert_preview_matches(&preview[1], &requests[1], STRIPE_KEY);
    // Stripe replays its first answer for a repeated key: a lost answer may be asked again.
    assert!(adapters.dedupes("stripe.retry_invoice"));
}

#[tokio::test]
async fn an_invoice_that_no_longer_owes_what_was_approved_is_not_paid() {
    let peers = Peers::start().await;
    let adapters = peers.adapters(&[]);
    let approved = json!({ "invoice": "in_changed", "amount_cents": 1000, "currency": "usd" });
    for (now, words) in [
        (
            owing("in_changed", 2500, "usd"),
            "has $25.00 USD remaining, but $10.00 USD was approved",
        ),
        (
            owing("in_changed", 1000, "eur"),
            "has €10.00 EUR remaining, but $10.00 USD was approved",
        ),
        (owing("in_changed", 400, "usd"), "has $4.00 USD remaining"),
    ] {
        peers.stripe.reset().await;
        stripe_reads(&peers, "in_changed", now).await;
        let message = permanent(
            adapters
                .execute("stripe.retry_invoice", &approved, KEY)
                .await,
        );
        assert!(message.contains(words), "{message}");
        assert!(message.contains("nothing was paid"), "{message}");
        let calls = received(&peers.stripe).await;
        assert!(
            calls.iter().all(|r| r.method.as_str() == "GET"),
            "only read: {:?}",
            calls.iter().map(|r| r.url.path()).collect::<Vec<_>>()
        );
    }
    // An action without the amount it was approved for is not paid either.
    let message = permanent(
        adapters
            .execute(
                "stripe.retry_invoice",
                &json!({ "invoice": "in_changed" }),
                KEY,
            )
            .await,
    );
    assert!(
        message.contains("names no amount_cents and currency"),
        "{message}"
    );
}

#[tokio::test]
async fn stripe_rate_limits_and_outages_are_transient_and_declines_keep_stripes_message() {
    let peers = Peers::start().await;
    let adapters = peers.adapters(&[]);
    let error = |status: u16, kind: &str, message: &str| {
        ResponseTemplate::new(status)
            .set_body_json(json!({ "error": { "type": kind, "message": message } }))
    };
    let cases = [
        (
            error(429, "invalid_request_error", "Too many requests"),
            true,
            "Too many requests",
        ),
        (
            error(500, "api_error", "Something went wrong"),
            true,
            "Something went wrong",
        ),
        (
            ResponseTemplate::new(502).set_body_string("<html>Bad gateway</html>"),
            true,
            "",
        ),
        (
            error(402, "card_error", "Your card was declined."),
            false,
            "Your card was declined.",
        ),
        (
            error(404, "invalid_request_error", "No such invoice: 'in_404'"),
            false,
            "No such invoice: 'in_404'",
        ),
    ];
    for (answer, retryable, expected) in cases {
        peers.stripe.reset().await;
        // The first call, reading the invoice, gets the answer.
        Mock::given(wiremock::matchers::any())
            .respond_with(answer)
            .mount(&peers.stripe)
            .await;
        let result = adapters
            .execute(
                "stripe.retry_invoice",
                &json!({ "invoice": "in_404", "amount_cents": 1000, "currency": "usd" }),
                KEY,
            )
            .await;
        let message = if retryable {
            transient(result).0
        } else {
            permanent(result)
        };
        assert!(message.contains(expected), "{expected}: {message}");
        // The strategy is one attempt: retrying is the executor's decision.
        assert_eq!(received(&peers.stripe).await.len(), 1, "{expected}");
    }

    let message = permanent(
        adapters
            .execute(
                "stripe.retry_invoice",
                &json!({ "invoice": "in_1/../../charges" }),
                KEY,
            )
            .await,
    );
    assert!(message.contains("not a Stripe invoice id"), "{message}");
}

#[tokio::test]
async fn an_unreachable_stripe_is_transient_and_a_payment_cannot_be_undone() {
    let (_held, closed) = refusing();
    let peers = Peers::start().await;
    let adapters = peers.adapters(&[("STRIPE_API_BASE", &format!("http://{closed}/"))]);
    let action = json!({ "invoice": "in_123", "amount_cents": 1000, "currency": "usd" });

    transient(adapters.execute("stripe.retry_invoice", &action, KEY).await);

    let limit = adapters
        .rollback_limit("stripe.retry_invoice")
        .expect("a limit");
    assert!(limit.contains("refunded from Stripe's dashboard"));
    assert_eq!(
        adapters
            .rollback("stripe.retry_invoice", &action, &json!({}), KEY)
            .await,
        Err(AdapterError::Unsupported(limit.into()))
    );
}

// GitHub

fn issue_action(repo: &str) -> Value {
    json!({
        "repo": repo,
        "title": "CI is failing on main",
        "body": "CI failure on `main` at abc1234.\n\nOpened by ExecOps after a person approved it.",
        "labels": ["ci", "execops"],
    })
}

fn github_mock(verb: &str, route: &str) -> wiremock::MockBuilder {
    Mock::given(method(verb))
        .and(path(route))
        .and(header(
            "authorization",
            format!("Bearer {GITHUB_TOKEN}").as_str(),
        ))
        .and(header("accept", "application/vnd.github+json"))
        .and(header("x-github-api-version", "2022-11-28"))
}

#[tokio::test]
async fn a_github_issue_is_opened_with_the_api_version_header_and_previewed_exactly() {
    let peers = Peers::start().await;
    github_mock("POST", "/repos/acme/web/issues")
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "number": 42,
            "html_url": "https://github.com/acme/web/issues/42",
            "state": "open",
        })))
        .expect(1)
        .mount(&peers.github)
        .await;
    let adapters = peers.adapters(&[]);
    let action = issue_action("acme/web");

    let result = adapters
        .execute("github.create_issue", &action, KEY)
        .await
        .expect("opened");

    assert_eq!(
        result,
        json!({
            "repo": "acme/web",
            "number": 42,
            "html_url": "https://github.com/acme/web/issues/42",
        })
    );
    let requests = received(&peers.github).await;
    assert_eq!(requests.len(), 1);
    assert_eq!(
        json_of(&requests[0]),
        json!({ "title": action["title"], "body": action["body"], "labels": ["ci", "execops"] })
    );
    // GitHub refuses requests without a User-Agent.
    assert!(header_of(&requests[0], "user-agent").starts_with("execops/"));
    let preview = adapters
        .preview("github.create_issue", &action, KEY)
        .expect("a preview");
    assert_eq!(preview.len(), 1);
    assert_eq!(preview[0].headers["X-GitHub-Api-Version"], "2022-11-28");
    assert_preview_matches(&preview[0], &requests[0], GITHUB_TOKEN);
    assert!(!adapters.dedupes("github.create_issue"));
}

#[tokio::test]
async fn github_rate_limits_and_outages_are_transient_and_refusals_keep_githubs_message() {
    let peers = Peers::start().await;
    let adapters = peers.adapters(&[]);
    let message = |status: u16, text: &str| {
        ResponseTemplate::new(status).set_body_json(json!({
            "message": text,
            "documentation_url": "https://docs.github.com/rest",
        }))
    };
    let reset = (Utc::now().timestamp() + 120).to_string();
    let cases = [
        (
            "primary rate limit",
            message(403, "API rate limit exceeded")
                .insert_header("x-ratelimit-remaining", "0")
                .insert_header("x-ratelimit-reset", reset.as_str()),
            Some(None),
        ),
        (
            "secondary rate limit",
            message(403, "You have exceeded a secondary rate limit")
                .insert_header("retry-after", "60"),
            Some(Some(Duration::from_secs(60))),
        ),
        (
            "429",
            message(429, "Too many requests").insert_header("retry-after", "30"),
            Some(Some(Duration::from_secs(30))),
        ),
        ("502", message(502, "Server Error"), Some(None)),
        (
            "Resource not accessible by personal access token",
            message(403, "Resource not accessible by personal access token"),
            None,
        ),
        ("Not Found", message(404, "Not Found"), None),
        ("Validation Failed", message(422, "Validation Failed"), None),
    ];
    for (case, answer, expected) in cases {
        peers.github.reset().await;
        Mock::given(method("POST"))
            .respond_with(answer)
            .mount(&peers.github)
            .await;
        let result = adapters
            .execute("github.create_issue", &issue_action("acme/web"), KEY)
            .await;
        match expected {
            Some(Some(after)) => assert_eq!(transient(result).1, Some(after), "{case}"),
            Some(None) => {
                let (_, after) = transient(result);
                if case == "primary rate limit" {
                    // Until the reset GitHub announced, give or take the test's own time.
                    let after = after.expect("a wait until the reset");
                    assert!(after.as_secs() > 100 && after.as_secs() <= 120, "{after:?}");
                }
            }
            None => {
                let text = permanent(result);
                assert!(text.contains(case), "{case}: {text}");
            }
        }
    }
}

#[tokio::test]
async fn a_repository_that_is_not_owner_and_name_is_refused_before_any_call() {
    let peers = Peers::start().await;
    let adapters = peers.adapters(&[]);
    for repo in [
        "acme",
        "acme/web/issues",
        "../acme",
        "acme/..",
        "acme/",
        "/web",
        "acme/w b",
    ] {
        let message = permanent(
            adapters
                .execute("github.create_issue", &issue_action(repo), KEY)
                .await,
        );
        assert!(message.contains("owner/name"), "{repo}: {message}");
        assert!(adapters
            .preview("github.create_issue", &issue_action(repo), KEY)
            .is_err());
    }
    assert!(received(&peers.github).await.is_empty());
}

#[tokio::test]
async fn undoing_a_github_issue_comments_and_closes_it_as_not_planned() {
    let peers = Peers::start().await;
    github_mock("POST", "/repos/acme/web/issues/42/comments")
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "id": 1,
            "html_url": "https://github.com/acme/web/issues/42#issuecomment-1",
        })))
        .expect(1)
        .mount(&peers.github)
        .await;
    github_mock("PATCH", "/repos/acme/web/issues/42")
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({ "number": 42, "state": "closed" })),
        )
        .expect(1)
        .mount(&peers.github)
        .await;
    let adapters = peers.adapters(&[]);
    assert_eq!(adapters.rollback_limit("github.create_issue"), None);
    let result = json!({
        "repo": "acme/web",
        "number": 42,
        "html_url": "https://github.com/acme/web/issues/42",
    });

    adapters
        .rollback(
            "github.create_issue",
            &issue_action("acme/web"),
            &result,
            KEY,
        )
        .await
        .expect("closed");

    let requests = received(&peers.github).await;
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0].method.as_str(),
        "POST",
        "the comment comes first"
    );
    let comment = json_of(&requests[0]);
    assert!(
        comment["body"]
            .as_str()
            .is_some_and(|b| b.contains("undone in ExecOps")),
        "{comment}"
    );
    assert_eq!(requests[1].method.as_str(), "PATCH");
    assert_eq!(
        json_of(&requests[1]),
        json!({ "state": "closed", "state_reason": "not_planned" })
    );
}

// Outbound webhooks

fn webhook_action() -> Value {
    json!({
        "target": "ops",
        "type": "invoice.flagged",
        "data": { "invoice": "in_123", "amount_cents": 4900 },
    })
}

/// The signing key, decoded the way ExecOps decodes the secrets of inbound senders.
fn outbound_key() -> Vec<u8> {
    standard::decode_secret(OUTBOUND_SECRET).expect("a valid secret")
}

/// Checks a received delivery with ExecOps's own Standard Webhooks verifier.
fn assert_verifies(request: &Request) {
    let verified = standard::verify(
        "ops",
        &outbound_key(),
        &request.headers,
        &request.body,
        Utc::now(),
    );
    assert!(
        verified.is_ok(),
        "the signature does not verify: {verified:?}"
    );
}

#[tokio::test]
async fn an_outbound_webhook_is_signed_so_execops_own_verifier_accepts_it() {
    let peers = Peers::start().await;
    Mock::given(method("POST"))
        .and(path("/hooks/ops"))
        .and(header("content-type", "application/json"))
        .and(header("webhook-id", KEY))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&peers.hooks)
        .await;
    let adapters = peers.adapters(&[]);

    let result = adapters
        .execute("webhook.post", &webhook_action(), KEY)
        .await
        .expect("delivered");

    assert_eq!(
        result,
        json!({ "target": "ops", "webhook_id": KEY, "status": 204 })
    );
    let requests = received(&peers.hooks).await;
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    assert_verifies(sent);
    let body = json_of(sent);
    assert_eq!(body["type"], "invoice.flagged");
    assert_eq!(body["data"], webhook_action()["data"]);
    let timestamp = body["timestamp"].as_str().expect("a timestamp");
    let at = chrono::DateTime::parse_from_rfc3339(timestamp).expect("RFC 3339");
    assert_eq!(
        at.timestamp().to_string(),
        header_of(sent, "webhook-timestamp")
    );
    // Recomputed by hand too, so the check does not rest on ExecOps's verifier alone.
    assert_eq!(
        header_of(sent, "webhook-signature"),
        standard::sign(&outbound_key(), KEY, at.timestamp(), &sent.body)
    );

    let preview = adapters
        .preview("webhook.post", &webhook_action(), KEY)
        .expect("a preview");
    assert_eq!(preview.len(), 1);
    let preview = &preview[0];
    assert_eq!(preview.method, "POST");
    assert_eq!(preview.url, sent_url(sent));
    assert_eq!(preview.headers["webhook-id"], KEY);
    assert_eq!(preview.headers["Content-Type"], "application/json");
    assert_eq!(preview.body["type"], body["type"]);
    assert_eq!(preview.body["data"], body["data"]);
    // A valid signature would let a viewer replay the preview at the receiver.
    assert_eq!(preview.headers["webhook-signature"], "[redacted]");
    let shown = serde_json::to_string(preview).expect("serialises");
    assert!(!shown.contains(OUTBOUND_SECRET.trim_start_matches("whsec_")));
    assert!(adapters.dedupes("webhook.post"));
}

#[tokio::test]
async fn outbound_webhook_failures_are_sorted_by_status() {
    let peers = Peers::start().await;
    let adapters = peers.adapters(&[]);
    let cases = [
        (ResponseTemplate::new(503), true, "503"),
        (
            ResponseTemplate::new(429).insert_header("retry-after", "5"),
            true,
            "429",
        ),
        (
            ResponseTemplate::new(410).set_body_string("this hook was removed"),
            false,
            "this hook was removed",
        ),
        (ResponseTemplate::new(400), false, "400"),
    ];
    for (answer, retryable, expected) in cases {
        peers.hooks.reset().await;
        Mock::given(method("POST"))
            .respond_with(answer)
            .mount(&peers.hooks)
            .await;
        let result = adapters
            .execute("webhook.post", &webhook_action(), KEY)
            .await;
        let message = if retryable {
            transient(result).0
        } else {
            permanent(result)
        };
        assert!(message.contains(expected), "{expected}: {message}");
    }

    let mut unknown = webhook_action();
    unknown["target"] = json!("billing");
    let message = permanent(adapters.execute("webhook.post", &unknown, KEY).await);
    assert!(message.contains("\"billing\""), "{message}");
    assert!(
        message.contains("ops"),
        "names the configured targets: {message}"
    );
}

#[tokio::test]
async fn a_webhook_target_that_does_not_answer_in_time_is_transient() {
    let peers = Peers::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .mount(&peers.hooks)
        .await;
    let adapters = peers.adapters(&[("EXECOPS_ADAPTER_TIMEOUT_MS", "300")]);

    transient(
        adapters
            .execute("webhook.post", &webhook_action(), KEY)
            .await,
    );
}

#[tokio::test]
async fn undoing_an_outbound_webhook_sends_a_reverted_event_with_its_own_id() {
    let peers = Peers::start().await;
    Mock::given(method("POST"))
        .and(path("/hooks/ops"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&peers.hooks)
        .await;
    let adapters = peers.adapters(&[]);
    assert_eq!(adapters.rollback_limit("webhook.post"), None);
    let result = json!({ "target": "ops", "webhook_id": KEY, "status": 200 });

    let undone = adapters
        .rollback("webhook.post", &webhook_action(), &result, KEY)
        .await
        .expect("reverted");

    let rollback_id = format!("{KEY}-rollback");
    assert_eq!(undone["webhook_id"], rollback_id);
    let requests = received(&peers.hooks).await;
    assert_eq!(requests.len(), 1);
    assert_eq!(header_of(&requests[0], "webhook-id"), rollback_id);
    assert_verifies(&requests[0]);
    let body = json_of(&requests[0]);
    assert_eq!(body["type"], "invoice.flagged.reverted");
    assert_eq!(
        body["data"],
        json!({ "reverts": KEY, "data": webhook_action()["data"] })
    );
}

// Configuration

#[tokio::test]
async fn an_adapter_without_its_credential_names_the_missing_setting() {
    let smtp = Smtp::start();
    let hooks = MockServer::start().await;
    let outbound = format!("ops={}/hooks/ops", hooks.uri());
    let bare =
        Adapters::new(&crate::common::config(&[("EXECOPS_OUTBOUND_WEBHOOKS", &outbound)]).adapters);
    let email = email_action(json!({ "email": "jenny.rosen@example.com" }));
    let to_customer = email_action(json!({ "stripe_customer": "cus_QXg1o8vcGmoR32" }));
    let smtp_url = format!("smtp://{}", smtp.addr);
    let smtp_only = Adapters::new(&crate::common::config(&[("SMTP_URL", &smtp_url)]).adapters);
    let cases: [(&Adapters, &str, Value, &str); 6] = [
        (
            &bare,
            "slack.post_message",
            slack_action(),
            "SLACK_BOT_TOKEN is not set: ",
        ),
        (&bare, "email.send", email.clone(), "SMTP_URL is not set: "),
        (
            &smtp_only,
            "email.send",
            to_customer,
            "STRIPE_API_KEY is not set: ",
        ),
        (
            &bare,
            "stripe.retry_invoice",
            json!({ "invoice": "in_123", "amount_cents": 1000, "currency": "usd" }),
            "STRIPE_API_KEY is not set: ",
        ),
        (
            &bare,
            "github.create_issue",
            issue_action("acme/web"),
            "GITHUB_TOKEN is not set: ",
        ),
        (
            &bare,
            "webhook.post",
            webhook_action(),
            "EXECOPS_OUTBOUND_SECRET is not set: ",
        ),
    ];
    for (adapters, action_type, action, expected) in cases {
        let message = permanent(adapters.execute(action_type, &action, KEY).await);
        assert!(message.starts_with(expected), "{action_type}: {message}");
        let previewed = adapters.preview(action_type, &action, KEY);
        assert!(
            matches!(&previewed, Err(AdapterError::Permanent(m)) if m.starts_with(expected)),
            "{action_type}: {previewed:?}"
        );
    }
    assert!(smtp.messages().is_empty());
    assert!(received(&hooks).await.is_empty());
}

#[tokio::test]
async fn each_adapter_reports_its_own_name() {
    let config = crate::common::config(&[]).adapters;
    let adapters = Adapters::new(&config);
    let names: BTreeMap<&str, &str> = [
        ("slack", adapters.slack.name()),
        ("email", adapters.email.name()),
        ("stripe", adapters.stripe.name()),
        ("github", adapters.github.name()),
        ("webhook", adapters.webhook.name()),
    ]
    .into_iter()
    .collect();
    for (action_type, adapter) in execops::adapters::ACTION_TYPES {
        assert_eq!(names.get(adapter), Some(adapter), "{action_type}");
    }
}
