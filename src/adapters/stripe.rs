//! Retries collecting an invoice with Stripe's `POST /v1/invoices/{id}/pay`, through
//! async-stripe. Every call carries the proposal's key as `Idempotency-Key`, so a retry after
//! a lost answer gets Stripe's first answer back instead of charging twice.
//!
//! What runs is what was approved: the action carries the amount and currency the approver
//! saw, and the invoice is read first (`GET /v1/invoices/{id}`). Unless Stripe's
//! `amount_remaining` and currency are exactly those, nothing is paid and the attempt fails
//! for good with both figures. An invoice already paid goes on to the call, whose key gets
//! back Stripe's first answer if that payment was this proposal's, and a refusal if not.

use std::collections::BTreeMap;

use secrecy::ExposeSecret;
use serde_json::{json, Value};
use stripe::{IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_billing::invoice::{PayInvoice, RetrieveInvoice};

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

    /// The URL async-stripe sends `request` to, as a preview shows it.
    fn url_of(&self, path: &str, query: Option<&str>) -> String {
        let url = format!("{}v1{path}", self.base);
        match query {
            Some(query) => format!("{url}?{query}"),
            None => url,
        }
    }

    fn client(&self) -> Result<&stripe::Client, AdapterError> {
        self.client.as_ref().map_err(Clone::clone)
    }
}

/// The request for the action's invoice; its id is checked because it becomes part of the
/// path.
fn pay(action: &Value) -> Result<PayInvoice, AdapterError> {
    Ok(PayInvoice::new(invoice_id(action)?))
}

/// The action's invoice id, checked because it becomes part of a path.
fn invoice_id(action: &Value) -> Result<&str, AdapterError> {
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
    Ok(invoice)
}

/// The amount (in the currency's smallest unit) and currency the approver saw.
fn approved_amount(action: &Value) -> Result<(i64, String), AdapterError> {
    match (
        action.get("amount_cents").and_then(Value::as_i64),
        action.get("currency").and_then(Value::as_str),
    ) {
        (Some(amount), Some(currency)) => Ok((amount, currency.to_ascii_lowercase())),
        _ => Err(AdapterError::Permanent(
            "the action names no amount_cents and currency, so what Stripe would collect \
             cannot be checked against what was approved; nothing was paid"
                .into(),
        )),
    }
}

/// Refuses unless the invoice still owes exactly what was approved, or is paid already.
fn check_owed(
    invoice: &stripe_billing::Invoice,
    id: &str,
    (amount, currency): &(i64, String),
) -> Result<(), AdapterError> {
    let paid = matches!(invoice.status, Some(stripe_billing::InvoiceStatus::Paid));
    let owed = invoice.amount_remaining;
    let owed_currency = invoice.currency.to_string().to_ascii_lowercase();
    if paid || (owed == *amount && owed_currency == *currency) {
        return Ok(());
    }
    Err(AdapterError::Permanent(format!(
        "Stripe's invoice {id} has {} remaining, but {} was approved; nothing was paid",
        super::glance::amount(owed, &owed_currency),
        super::glance::amount(*amount, currency)
    )))
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
                super::without_secrets(api.message.as_deref().unwrap_or("no message"))
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
        approved_amount(action)?;
        let read = RetrieveInvoice::new(invoice_id(action)?).build();
        let read = RequestPreview {
            method: "GET".into(),
            url: self.url_of(&read.path, read.query.as_deref()),
            headers: BTreeMap::from([("Authorization".to_string(), format!("Bearer {REDACTED}"))]),
            body: Value::Null,
        };
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
        Ok(vec![
            read,
            RequestPreview {
                method: format!("{:?}", request.method).to_uppercase(),
                url: self.url_of(&request.path, request.query.as_deref()),
                headers,
                body: Value::String(request.body.unwrap_or_default()),
            },
        ])
    }

    async fn execute(&self, action: &Value, key: &str) -> Result<Value, AdapterError> {
        let client = self.client()?;
        let id = invoice_id(action)?;
        let approved = approved_amount(action)?;
        let current = RetrieveInvoice::new(id).send(client).await.map_err(sort)?;
        check_owed(&current, id, &approved)?;
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
