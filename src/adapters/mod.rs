//! Calls to the outside world. The execution adapters (Slack, email, Stripe, GitHub,
//! outbound webhooks) carry out approved proposals; each can show the exact request it would
//! send (a dry run), send it, and undo it where the provider allows. The optional language
//! model that may improve a draft's wording lives here too.

pub mod email;
pub mod github;
pub mod glance;
pub mod llm;
pub mod slack;
pub mod stripe;
pub mod webhook;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::AdapterConfig;

/// One request an execution sends, as a person reviews it before approving: what goes
/// where, with secrets replaced by `[redacted]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestPreview {
    /// `POST` for HTTP calls, `SMTP` for an email.
    pub method: String,
    /// The full URL, or `smtp://host:port` for an email.
    pub url: String,
    pub headers: BTreeMap<String, String>,
    /// JSON bodies as JSON; form and text bodies as strings.
    pub body: Value,
}

/// Why a call failed, sorted by what the executor should do next.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AdapterError {
    /// A timeout, a refused connection, 429 or 5xx: worth trying again later, after
    /// `retry_after` when the provider said so.
    #[error("{message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The provider refused the request (its message is kept): trying again changes nothing.
    #[error("{0}")]
    Permanent(String),
    /// The action cannot be carried out or undone by this adapter as configured.
    #[error("{0}")]
    Unsupported(String),
}

impl AdapterError {
    pub fn transient(message: impl Into<String>) -> Self {
        AdapterError::Transient {
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, AdapterError::Transient { .. })
    }
}

/// What every execution adapter offers. `key` is the proposal's idempotency key, stable
/// across attempts.
pub trait Adapter {
    /// Stable: kill switches and circuit breakers are keyed by it.
    fn name(&self) -> &'static str;

    /// Whether the provider dedupes a repeated call carrying the same key, so a call whose
    /// result was lost may be sent again without a second effect.
    fn dedupes(&self) -> bool;

    /// Why this adapter cannot undo what it did, or `None` when it can.
    fn rollback_limit(&self) -> Option<&'static str>;

    /// The exact requests `execute` would send, without sending anything.
    fn preview(&self, action: &Value, key: &str) -> Result<Vec<RequestPreview>, AdapterError>;

    /// Carries out the action; the result is what `rollback` needs to undo it.
    fn execute(
        &self,
        action: &Value,
        key: &str,
    ) -> impl Future<Output = Result<Value, AdapterError>> + Send;

    /// Undoes an executed action, given the result `execute` returned.
    fn rollback(
        &self,
        action: &Value,
        result: &Value,
        key: &str,
    ) -> impl Future<Output = Result<Value, AdapterError>> + Send;
}

/// The action types ExecOps can execute and the adapter of each.
pub const ACTION_TYPES: &[(&str, &str)] = &[
    ("slack.post_message", "slack"),
    ("email.send", "email"),
    ("stripe.retry_invoice", "stripe"),
    ("github.create_issue", "github"),
    ("webhook.post", "webhook"),
];

/// What enabling an action type that writes to the outside world lets ExecOps do, for the
/// admin who enables it; `None` for the types that need no enabling.
pub fn what_enabling_means(action_type: &str) -> Option<&'static str> {
    match action_type {
        "stripe.retry_invoice" => Some(
            "approved retries charge the customer's payment method in Stripe for the approved \
             amount; a charge is refunded from Stripe's dashboard, not undone here",
        ),
        "email.send" => Some(
            "approved emails go to customers from EXECOPS_EMAIL_FROM through SMTP_URL; an email \
             sent cannot be called back",
        ),
        "webhook.post" => Some(
            "approved events are posted, signed, to the configured webhook targets, whose \
             systems act on them",
        ),
        _ => None,
    }
}

/// The adapter that carries out an action type.
pub fn adapter_of(action_type: &str) -> Option<&'static str> {
    ACTION_TYPES
        .iter()
        .find(|(t, _)| *t == action_type)
        .map(|(_, adapter)| *adapter)
}

/// A kill switch's scope as written: `global`, `action_type:NAME` or `adapter:NAME`, for
/// known names only.
pub fn parse_scope(raw: &str) -> Option<crate::domain::guardrails::Scope> {
    use crate::domain::guardrails::Scope;
    match raw.split_once(':') {
        None if raw == "global" => Some(Scope::Global),
        Some(("action_type", t)) if adapter_of(t).is_some() => Some(Scope::ActionType(t.into())),
        Some(("adapter", a)) if ACTION_TYPES.iter().any(|(_, x)| *x == a) => {
            Some(Scope::Adapter(a.into()))
        }
        _ => None,
    }
}

/// Every adapter, built from the configuration; cheap to clone.
#[derive(Clone)]
pub struct Adapters {
    pub slack: slack::Slack,
    pub email: email::Email,
    pub stripe: stripe::Stripe,
    pub github: github::GitHub,
    pub webhook: webhook::Webhook,
}

/// Runs `$body` with `$a` bound to the adapter of `$action_type`.
macro_rules! dispatch {
    ($self:ident, $action_type:expr, $a:ident => $body:expr) => {
        match adapter_of($action_type) {
            Some("slack") => {
                let $a = &$self.slack;
                $body
            }
            Some("email") => {
                let $a = &$self.email;
                $body
            }
            Some("stripe") => {
                let $a = &$self.stripe;
                $body
            }
            Some("github") => {
                let $a = &$self.github;
                $body
            }
            Some("webhook") => {
                let $a = &$self.webhook;
                $body
            }
            _ => Err(AdapterError::Unsupported(format!(
                "no adapter executes {}",
                $action_type
            ))),
        }
    };
}

impl Adapters {
    pub fn new(config: &AdapterConfig) -> Self {
        // The adapters' TLS (reqwest, async-stripe, lettre) is rustls with ring; say so once
        // for the process, in case another crate linked a second provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(concat!("execops/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Self {
            slack: slack::Slack::new(config, http.clone()),
            email: email::Email::new(config),
            stripe: stripe::Stripe::new(config),
            github: github::GitHub::new(config, http.clone()),
            webhook: webhook::Webhook::new(config, http),
        }
    }

    pub fn dedupes(&self, action_type: &str) -> bool {
        let answer: Result<bool, AdapterError> = dispatch!(self, action_type, a => Ok(a.dedupes()));
        answer.unwrap_or(false)
    }

    /// Why an executed action of this type cannot be undone, or `None` when it can.
    pub fn rollback_limit(&self, action_type: &str) -> Option<&'static str> {
        let answer: Result<Option<&'static str>, AdapterError> =
            dispatch!(self, action_type, a => Ok(a.rollback_limit()));
        answer.unwrap_or(Some("no adapter executes this action type"))
    }

    pub fn preview(
        &self,
        action_type: &str,
        action: &Value,
        key: &str,
    ) -> Result<Vec<RequestPreview>, AdapterError> {
        dispatch!(self, action_type, a => a.preview(action, key))
    }

    pub async fn execute(
        &self,
        action_type: &str,
        action: &Value,
        key: &str,
    ) -> Result<Value, AdapterError> {
        dispatch!(self, action_type, a => a.execute(action, key).await)
    }

    pub async fn rollback(
        &self,
        action_type: &str,
        action: &Value,
        result: &Value,
        key: &str,
    ) -> Result<Value, AdapterError> {
        dispatch!(self, action_type, a => a.rollback(action, result, key).await)
    }
}

/// Sorts a failed HTTP exchange: timeouts, connection failures, 429 and 5xx are transient.
pub(crate) fn http_error(provider: &str, error: reqwest::Error) -> AdapterError {
    let transient = error.is_timeout() || error.is_connect() || error.is_request();
    // reqwest names the URL it called, query and credentials included.
    let error = without_secrets(&error.to_string());
    if transient {
        AdapterError::transient(format!("{provider} did not answer: {error}"))
    } else {
        AdapterError::Permanent(format!("{provider}: {error}"))
    }
}

/// `text` with every URL in it redacted as [`redacted_url`] does: a provider's error that
/// echoes the URL it was called at (a token in its query, a password in it) keeps none.
pub(crate) fn without_secrets(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = ["https://", "http://"]
        .iter()
        .filter_map(|scheme| rest.find(scheme))
        .min()
    {
        out.push_str(&rest[..start]);
        let url = &rest[start..];
        let end = url
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | ')' | ','))
            .unwrap_or(url.len());
        out.push_str(&redacted_url(&url[..end]));
        rest = &url[end..];
    }
    out.push_str(rest);
    out
}

/// Sorts an HTTP status that is not a success, keeping the provider's message.
pub(crate) fn status_error(
    provider: &str,
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &str,
) -> AdapterError {
    let message = format!(
        "{provider} answered {status}: {}",
        truncate(&without_secrets(body), 500)
    );
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        AdapterError::Transient {
            message,
            retry_after: retry_after(headers),
        }
    } else {
        AdapterError::Permanent(message)
    }
}

/// `Retry-After` in seconds, when the provider sent one.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

pub(crate) fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// A string field of an action, or a permanent error naming it.
pub(crate) fn field<'a>(action: &'a Value, name: &str) -> Result<&'a str, AdapterError> {
    action
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| AdapterError::Permanent(format!("the action has no {name}")))
}

pub(crate) const REDACTED: &str = "[redacted]";

/// A header or query parameter that carries a credential, by its name.
fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "authorization",
        "cookie",
        "signature",
        "token",
        "secret",
        "key",
        "password",
        "sig",
    ]
    .iter()
    .any(|word| name.contains(word))
        // An idempotency key names the request; it opens nothing.
        && !name.contains("idempotency")
}

/// `url` with its password and any secret query parameter replaced by `[redacted]`.
fn redacted_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return url.to_string();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some(REDACTED));
    }
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(name, value)| {
            let value = if is_secret_name(&name) {
                REDACTED.to_string()
            } else {
                value.into_owned()
            };
            (name.into_owned(), value)
        })
        .collect();
    if !pairs.is_empty() {
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

/// The error of an adapter whose credential or target is not configured, naming the setting
/// so the person reading it knows what to set.
pub(crate) fn not_set(setting: &str, consequence: &str) -> AdapterError {
    AdapterError::Permanent(format!("{setting} is not set: {consequence}"))
}

/// One HTTP request, built once and used both to preview and to send it, so that a dry run
/// shows exactly the bytes that go out.
#[derive(Clone)]
pub(crate) struct HttpRequest {
    pub method: reqwest::Method,
    pub url: String,
    /// Headers a reviewer may see, in the order they are sent.
    pub headers: Vec<(&'static str, String)>,
    /// Sent as `Authorization: Bearer …`, shown as `Bearer [redacted]`.
    pub bearer: Option<secrecy::SecretString>,
    pub body: Vec<u8>,
}

/// What a provider answered, read in full.
pub(crate) struct HttpAnswer {
    pub status: reqwest::StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl HttpAnswer {
    /// The answer as JSON, or `Null` when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

impl HttpRequest {
    /// A JSON request; the body is serialised here, once.
    pub fn json(
        method: reqwest::Method,
        url: String,
        bearer: Option<&secrecy::SecretString>,
        content_type: &str,
        body: &Value,
    ) -> Self {
        Self {
            method,
            url,
            headers: vec![("Content-Type", content_type.to_string())],
            bearer: bearer.cloned(),
            body: body.to_string().into_bytes(),
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The request as a reviewer may see it: never a usable credential. Signatures, tokens
    /// and keys in headers, a password in the URL and secrets in its query are redacted, so
    /// a viewer cannot replay a previewed delivery at its receiver.
    pub fn preview(&self) -> RequestPreview {
        let mut headers: BTreeMap<String, String> = self
            .headers
            .iter()
            .map(|(name, value)| {
                let value = if is_secret_name(name) {
                    REDACTED.to_string()
                } else {
                    value.clone()
                };
                (name.to_string(), value)
            })
            .collect();
        if self.bearer.is_some() {
            headers.insert("Authorization".into(), format!("Bearer {REDACTED}"));
        }
        let body = if self.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&self.body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&self.body).into_owned()))
        };
        RequestPreview {
            method: self.method.to_string(),
            url: redacted_url(&self.url),
            headers,
            body,
        }
    }

    /// Sends the request and reads the whole answer; failing to get one is an error sorted
    /// by [`http_error`], any status is an answer for the adapter to judge.
    pub async fn send(
        &self,
        http: &reqwest::Client,
        provider: &str,
    ) -> Result<HttpAnswer, AdapterError> {
        use secrecy::ExposeSecret;

        let mut request = http.request(self.method.clone(), &self.url);
        for (name, value) in &self.headers {
            request = request.header(*name, value);
        }
        if let Some(token) = &self.bearer {
            request = request.bearer_auth(token.expose_secret());
        }
        if !self.body.is_empty() {
            request = request.body(self.body.clone());
        }
        let response = request.send().await.map_err(|e| http_error(provider, e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.map_err(|e| http_error(provider, e))?;
        Ok(HttpAnswer {
            status,
            headers,
            text,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_providers_error_that_echoes_a_url_keeps_no_credential() {
        let body = r#"{"error":"no route to https://user:hunter2@hooks.example/in?access_token=abc123&team=ops, try http://x.example/?key=k1"}"#;
        let error = status_error(
            "webhook target crm",
            reqwest::StatusCode::BAD_REQUEST,
            &reqwest::header::HeaderMap::new(),
            body,
        );
        let AdapterError::Permanent(message) = error else {
            panic!("a 400 is permanent: {error:?}");
        };
        for secret in ["hunter2", "abc123", "k1"] {
            assert!(!message.contains(secret), "{secret} in {message}");
        }
        for kept in ["team=ops", "hooks.example/in", "no route to", "try "] {
            assert!(message.contains(kept), "{kept} in {message}");
        }
        assert_eq!(without_secrets("nothing to hide"), "nothing to hide");
    }

    #[test]
    fn a_preview_holds_no_usable_credential() {
        let request = HttpRequest {
            method: reqwest::Method::POST,
            url: "https://user:hunter2@hooks.example/in?access_token=abc123&team=ops&sig=f00"
                .into(),
            headers: vec![
                ("webhook-id", "msg_1".into()),
                ("webhook-signature", "v1,c2lnbmF0dXJl".into()),
                ("X-Api-Key", "key-123".into()),
                ("Idempotency-Key", "prop-1".into()),
                ("Content-Type", "application/json".into()),
            ],
            bearer: Some(secrecy::SecretString::from("sk_live_1")),
            body: b"{}".to_vec(),
        };
        let preview = request.preview();
        let shown = serde_json::to_string(&preview).expect("serialises");
        for secret in [
            "hunter2",
            "abc123",
            "f00",
            "c2lnbmF0dXJl",
            "key-123",
            "sk_live_1",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert_eq!(preview.headers["webhook-id"], "msg_1");
        assert_eq!(preview.headers["Idempotency-Key"], "prop-1");
        assert_eq!(preview.headers["Content-Type"], "application/json");
        assert!(preview.url.contains("team=ops"), "{}", preview.url);
    }
}
