//! Retries collecting an invoice with Stripe's `POST /v1/invoices/{id}/pay`, through
//! async-stripe. Every call carries the proposal's key as `Idempotency-Key`, so a retry after
//! a lost answer gets Stripe's first answer back instead of charging twice.

use std::collections::BTreeMap;

use secrecy::ExposeSecret;
use serde_json::{json, Value};
use stripe::{IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_billing::invoice::PayInvoice;

use super::{field, Adapter, AdapterError, RequestPreview, REDACTED};
use crate::config::AdapterConfig;

const LIMIT: &str =
    "a collected payment is refunded from Stripe's dashboard; ExecOps does not undo it";

#[derive(Clone)]
pub struct Stripe {
    /// The client, or why there is none.
    client: Result<stripe::Client, AdapterError>,
    base: String,
}

impl Stripe {
    pub fn new(config: &AdapterConfig) -> Self {
        // async-stripe's TLS connector asks rustls for the process's crypto provider, which
        // rustls cannot choose once another crate links a second one. `Adapters::new` says so
        // too; this keeps a `Stripe` built on its own from panicking.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = match &config.stripe_api_key {
            None => Err(super::not_set(
                "STRIPE_API_KEY",
                "ExecOps has no API key to call Stripe with",
            )),
            Some(key) => stripe::ClientBuilder::new(key.expose_secret())
                .url(config.stripe_api_base.clone())
                .timeout(config.timeout)
                .app_info("execops", Some(env!("CARGO_PKG_VERSION").into()), None)
                .build()
                .map_err(|e| AdapterError::Permanent(format!("the Stripe client: {e}"))),
        };
        Self {
            client,
            base: config.stripe_api_base.clone(),
        }
    }

    fn client(&self) -> Result<&stripe::Client, AdapterError> {
        self.client.as_ref().map_err(Clone::clone)
    }
}

/// The request for the action's invoice; its id is checked because it becomes part of the
/// path.
fn pay(action: &Value) -> Result<PayInvoice, AdapterError> {
    let invoice = field(action, "invoice")?;
    let valid = invoice.starts_with("in_")
        && invoice
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(AdapterError::Permanent(format!(
            "{invoice:?} is not a Stripe invoice id"
        )));
    }
    Ok(PayInvoice::new(invoice))
}

fn idempotency_key(key: &str) -> Result<IdempotencyKey, AdapterError> {
    IdempotencyKey::new(key).map_err(|e| AdapterError::Permanent(format!("idempotency key: {e}")))
}

/// Sorts a failed call: what Stripe documents as worth retrying is transient, any other
/// refusal keeps Stripe's own message.
fn sort(error: StripeError) -> AdapterError {
    match error {
        StripeError::Stripe(api, status) => {
            let message = format!(
                "Stripe answered {status} ({}{}): {}",
                api.type_.as_str(),
                api.code
                    .as_ref()
                    .map(|c| format!(", {}", c.as_str()))
                    .unwrap_or_default(),
                api.message.as_deref().unwrap_or("no message")
            );
            // 409 is a concurrent request with the same key still running.
            let in_use = status == 409
                && matches!(api.code, Some(stripe::ApiErrorsCode::IdempotencyKeyInUse));
            if status == 429 || status >= 500 || in_use {
                AdapterError::transient(message)
            } else {
                AdapterError::Permanent(message)
            }
        }
        StripeError::Timeout => AdapterError::transient("Stripe did not answer in time"),
        StripeError::ClientError(e) => {
            AdapterError::transient(format!("Stripe did not answer: {e}"))
        }
        // Stripe itself always answers errors as JSON; another body came from something in
        // between (a proxy's 502 page), and the key makes a retry safe.
        StripeError::JSONDeserialize(e) if e.contains("Stripe error") => {
            AdapterError::transient(format!("Stripe's answer was not Stripe's: {e}"))
        }
        // A success whose invoice cannot be read: it may well be paid, and a retry would
        // only replay the same answer.
        StripeError::JSONDeserialize(e) => AdapterError::Permanent(format!(
            "Stripe accepted the call but its answer could not be read ({e}); check the \
             invoice in Stripe's dashboard, it may be paid"
        )),
        StripeError::ConfigError(e) => AdapterError::Permanent(format!("the Stripe client: {e}")),
    }
}

impl Adapter for Stripe {
    fn name(&self) -> &'static str {
        "stripe"
    }

    fn dedupes(&self) -> bool {
        true
    }

    fn rollback_limit(&self) -> Option<&'static str> {
        Some(LIMIT)
    }

    fn preview(&self, action: &Value, key: &str) -> Result<Vec<RequestPreview>, AdapterError> {
        self.client()?;
        idempotency_key(key)?;
        let request = pay(action)?.build();
        let mut headers = BTreeMap::from([
            ("Authorization".to_string(), format!("Bearer {REDACTED}")),
            ("Idempotency-Key".to_string(), key.to_string()),
        ]);
        // async-stripe sets the form type whenever there is a body, even an empty one.
        if request.body.is_some() {
            headers.insert(
                "Content-Type".into(),
                "application/x-www-form-urlencoded".into(),
            );
        }
        let mut url = format!("{}v1{}", self.base, request.path);
        if let Some(query) = &request.query {
            url = format!("{url}?{query}");
        }
        Ok(vec![RequestPreview {
            method: format!("{:?}", request.method).to_uppercase(),
            url,
            headers,
            body: Value::String(request.body.unwrap_or_default()),
        }])
    }

    async fn execute(&self, action: &Value, key: &str) -> Result<Value, AdapterError> {
        let client = self.client()?;
        let invoice = pay(action)?
            .customize()
            .request_strategy(RequestStrategy::Idempotent(idempotency_key(key)?))
            .send(client)
            .await
            .map_err(sort)?;
        Ok(json!({
            "invoice": invoice.id.as_ref().map(|id| id.as_str()).unwrap_or(field(action, "invoice")?),
            "status": invoice.status.as_ref().map(|s| s.as_str()),
            "amount_paid": invoice.amount_paid,
        }))
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
