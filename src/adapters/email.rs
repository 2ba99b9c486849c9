//! Sends plain-text email over SMTP with lettre. SMTP cannot dedupe, so the Message-ID is
//! derived from the proposal's key: a receiver (or a person) can tell a repeat from a new
//! email. A Stripe customer's address is looked up in Stripe when the email is sent.

use std::collections::BTreeMap;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use super::{field, status_error, truncate, Adapter, AdapterError, HttpRequest, RequestPreview};
use crate::config::AdapterConfig;

const LIMIT: &str = "an email cannot be unsent";

#[derive(Clone)]
pub struct Email {
    smtp_url: Option<SecretString>,
    from: String,
    timeout: Duration,
    stripe_key: Option<SecretString>,
    stripe_base: String,
    http: reqwest::Client,
}

/// Whom the action addresses.
enum Recipient<'a> {
    Address(&'a str),
    StripeCustomer(&'a str),
}

/// One email as both the preview and the sending see it.
struct Draft {
    server: String,
    from: Mailbox,
    to: String,
    subject: String,
    body: String,
    message_id: String,
}

impl Email {
    pub fn new(config: &AdapterConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(concat!("execops/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Self {
            smtp_url: config.smtp_url.clone(),
            from: config.email_from.clone(),
            timeout: config.timeout,
            stripe_key: config.stripe_api_key.clone(),
            stripe_base: config.stripe_api_base.clone(),
            http,
        }
    }

    fn smtp_url(&self) -> Result<&str, AdapterError> {
        self.smtp_url
            .as_ref()
            .map(|url| url.expose_secret())
            .ok_or_else(|| {
                super::not_set(
                    "SMTP_URL",
                    "ExecOps has no mail server to send email through",
                )
            })
    }

    /// The email to `to`; everything but the address comes from the action.
    fn draft(&self, action: &Value, key: &str, to: &str) -> Result<Draft, AdapterError> {
        let server = server(self.smtp_url()?)?;
        let from: Mailbox = self.from.parse().map_err(|e| {
            AdapterError::Permanent(format!(
                "EXECOPS_EMAIL_FROM {:?} is not an address: {e}",
                self.from
            ))
        })?;
        Ok(Draft {
            server,
            from,
            to: to.to_string(),
            subject: field(action, "subject")?.to_string(),
            body: field(action, "body")?.to_string(),
            message_id: format!("<{key}@execops>"),
        })
    }

    /// `GET /v1/customers/{id}`, the call that finds a Stripe customer's address.
    fn customer_lookup(&self, customer: &str) -> Result<HttpRequest, AdapterError> {
        let key = self.stripe_key.as_ref().ok_or_else(|| {
            super::not_set(
                "STRIPE_API_KEY",
                &format!(
                    "the recipient is Stripe customer {customer}, whose address only Stripe knows"
                ),
            )
        })?;
        Ok(HttpRequest {
            method: Method::GET,
            url: format!("{}v1/customers/{customer}", self.stripe_base),
            headers: Vec::new(),
            bearer: Some(key.clone()),
            body: Vec::new(),
        })
    }

    async fn customer_email(&self, customer: &str) -> Result<String, AdapterError> {
        let answer = self
            .customer_lookup(customer)?
            .send(&self.http, "Stripe")
            .await?;
        let body = answer.json();
        if !answer.status.is_success() {
            let message = body
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or_else(|| truncate(&answer.text, 300));
            return Err(status_error(
                "Stripe",
                answer.status,
                &answer.headers,
                &format!("looking up customer {customer}: {message}"),
            ));
        }
        if body.get("deleted").and_then(Value::as_bool) == Some(true) {
            return Err(AdapterError::Permanent(format!(
                "Stripe customer {customer} is deleted"
            )));
        }
        body.get("email")
            .and_then(Value::as_str)
            .filter(|e| !e.trim().is_empty())
            .map(str::to_string)
            .ok_or_else(|| {
                AdapterError::Permanent(format!("Stripe customer {customer} has no email address"))
            })
    }

    async fn send(&self, draft: &Draft) -> Result<(), AdapterError> {
        let message = message(draft)?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(self.smtp_url()?)
            .map_err(|e| AdapterError::Permanent(format!("SMTP_URL is not usable: {e}")))?
            .timeout(Some(self.timeout))
            .build();
        transport.send(message).await.map_err(sort)?;
        Ok(())
    }
}

fn recipient(action: &Value) -> Result<Recipient<'_>, AdapterError> {
    let to = action
        .get("to")
        .ok_or_else(|| AdapterError::Permanent("the action has no recipient".into()))?;
    let text = |name: &str| to.get(name).and_then(Value::as_str);
    if let Some(address) = to.as_str().or_else(|| text("email")) {
        return Ok(Recipient::Address(address));
    }
    if let Some(customer) = text("stripe_customer") {
        // The id becomes part of a URL path.
        let valid = customer.starts_with("cus_")
            && customer
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        return if valid {
            Ok(Recipient::StripeCustomer(customer))
        } else {
            Err(AdapterError::Permanent(format!(
                "{customer:?} is not a Stripe customer id"
            )))
        };
    }
    if let Some(user) = text("intercom_user") {
        return Err(AdapterError::Permanent(format!(
            "the recipient is Intercom user {user}, and ExecOps has no access to Intercom's \
             API to look up an address: the email address must be in the signal"
        )));
    }
    for key in ["hubspot_contact", "hubspot_deal_contacts"] {
        if let Some(id) = text(key) {
            return Err(AdapterError::Permanent(format!(
                "the recipient is HubSpot's {key} {id}, and ExecOps has no access to HubSpot's \
                 API to look up an address: the email address must be in the signal"
            )));
        }
    }
    Err(AdapterError::Permanent(format!(
        "the action's recipient {to} names no email address"
    )))
}

/// `scheme://host:port` of an SMTP URL, without its credentials, with lettre's default
/// ports filled in.
fn server(smtp_url: &str) -> Result<String, AdapterError> {
    let url = url::Url::parse(smtp_url)
        .map_err(|e| AdapterError::Permanent(format!("SMTP_URL is not a URL: {e}")))?;
    let host = url
        .host_str()
        .ok_or_else(|| AdapterError::Permanent("SMTP_URL names no host".into()))?;
    let tls = url.query_pairs().any(|(k, _)| k == "tls");
    let port = url.port().unwrap_or(match (url.scheme(), tls) {
        ("smtps", _) => 465,
        (_, true) => 587,
        _ => 25,
    });
    Ok(format!("{}://{host}:{port}", url.scheme()))
}

fn message(draft: &Draft) -> Result<Message, AdapterError> {
    let to: Mailbox = draft.to.parse().map_err(|e| {
        AdapterError::Permanent(format!("{:?} is not an email address: {e}", draft.to))
    })?;
    Message::builder()
        .from(draft.from.clone())
        .to(to)
        .subject(draft.subject.clone())
        .message_id(Some(draft.message_id.clone()))
        .header(ContentType::TEXT_PLAIN)
        .body(draft.body.clone())
        .map_err(|e| AdapterError::Permanent(format!("the email cannot be built: {e}")))
}

fn preview_of(draft: &Draft) -> RequestPreview {
    RequestPreview {
        method: "SMTP".into(),
        url: draft.server.clone(),
        headers: BTreeMap::from([
            ("From".to_string(), draft.from.to_string()),
            ("To".to_string(), draft.to.clone()),
            ("Subject".to_string(), draft.subject.clone()),
            ("Message-ID".to_string(), draft.message_id.clone()),
        ]),
        body: Value::String(draft.body.clone()),
    }
}

/// Sorts an SMTP failure: a 5xx reply, a TLS or client problem will not go away by itself;
/// a 4xx reply, a refused connection or a timeout may.
fn sort(error: lettre::transport::smtp::Error) -> AdapterError {
    if error.is_permanent() {
        AdapterError::Permanent(format!("the mail server refused the email: {error}"))
    } else if error.is_client() || error.is_tls() {
        AdapterError::Permanent(format!("SMTP: {error}"))
    } else {
        AdapterError::transient(format!("the mail server did not take the email: {error}"))
    }
}

impl Adapter for Email {
    fn name(&self) -> &'static str {
        "email"
    }

    fn dedupes(&self) -> bool {
        false
    }

    fn rollback_limit(&self) -> Option<&'static str> {
        Some(LIMIT)
    }

    fn preview(&self, action: &Value, key: &str) -> Result<Vec<RequestPreview>, AdapterError> {
        match recipient(action)? {
            Recipient::Address(to) => {
                let draft = self.draft(action, key, to)?;
                message(&draft)?;
                Ok(vec![preview_of(&draft)])
            }
            Recipient::StripeCustomer(customer) => {
                let lookup = self.customer_lookup(customer)?.preview();
                let to = format!("the email address of Stripe customer {customer}");
                Ok(vec![lookup, preview_of(&self.draft(action, key, &to)?)])
            }
        }
    }

    async fn execute(&self, action: &Value, key: &str) -> Result<Value, AdapterError> {
        // Checked before the lookup, so a missing setting is reported without a call.
        self.draft(action, key, "")?;
        let to = match recipient(action)? {
            Recipient::Address(to) => to.to_string(),
            Recipient::StripeCustomer(customer) => self.customer_email(customer).await?,
        };
        let draft = self.draft(action, key, &to)?;
        self.send(&draft).await?;
        Ok(json!({ "message_id": draft.message_id, "to": to }))
    }

    async fn rollback(
        &self,
        _action: &Value,
        _result: &Value,
        _key: &str,
    ) -> Result<Value, AdapterError> {
        Err(AdapterError::Unsupported(LIMIT.into()))
    }
}
