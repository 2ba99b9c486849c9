//! Outbound Standard Webhooks to named targets, signed the way ExecOps verifies inbound ones.
//! The `webhook-id` is the proposal's idempotency key, so a receiver that dedupes on it (as
//! the spec asks) sees a retried delivery once; an undo is a compensating `….reverted` event.

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Method;
use serde_json::{json, Value};

use super::{field, status_error, Adapter, AdapterError, HttpRequest, RequestPreview};
use crate::config::AdapterConfig;
use crate::ingest::standard;

#[derive(Clone)]
pub struct Webhook {
    http: reqwest::Client,
    targets: std::collections::BTreeMap<String, String>,
    /// The decoded signing key, or why there is none.
    key: Result<Vec<u8>, AdapterError>,
}

impl Webhook {
    pub fn new(config: &AdapterConfig, http: reqwest::Client) -> Self {
        use secrecy::ExposeSecret;

        let key = match &config.outbound_secret {
            None => Err(super::not_set(
                "EXECOPS_OUTBOUND_SECRET",
                "ExecOps has no whsec_… secret to sign outbound webhooks with",
            )),
            Some(secret) => standard::decode_secret(secret.expose_secret()).map_err(|e| {
                AdapterError::Permanent(format!("EXECOPS_OUTBOUND_SECRET is not usable: {e}"))
            }),
        };
        Self {
            http,
            targets: config.outbound_webhooks.clone(),
            key,
        }
    }

    /// The signed delivery of event `kind` with `data` to `target`, as of `now`.
    fn delivery(
        &self,
        target: &str,
        id: &str,
        kind: &str,
        data: &Value,
        now: DateTime<Utc>,
    ) -> Result<HttpRequest, AdapterError> {
        let url = self.targets.get(target).ok_or_else(|| {
            let known: Vec<&str> = self.targets.keys().map(String::as_str).collect();
            AdapterError::Permanent(format!(
                "no outbound webhook target is named {target:?}; EXECOPS_OUTBOUND_WEBHOOKS \
                 names {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })?;
        let key = self.key.as_ref().map_err(Clone::clone)?;
        let body = json!({
            "type": kind,
            "timestamp": now.to_rfc3339_opts(SecondsFormat::Secs, true),
            "data": data,
        });
        let mut request =
            HttpRequest::json(Method::POST, url.clone(), None, "application/json", &body);
        // The signature covers the exact bytes sent, so it is computed from the request's body.
        let signature = standard::sign(key, id, now.timestamp(), &request.body);
        request = request
            .header("webhook-id", id)
            .header("webhook-timestamp", now.timestamp().to_string())
            .header("webhook-signature", signature);
        Ok(request)
    }

    fn event(
        &self,
        action: &Value,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<HttpRequest, AdapterError> {
        let target = field(action, "target")?;
        let kind = field(action, "type")?;
        self.delivery(target, key, kind, &data_of(action), now)
    }

    async fn deliver(
        &self,
        target: &str,
        id: &str,
        request: HttpRequest,
    ) -> Result<Value, AdapterError> {
        let provider = format!("webhook target {target}");
        let answer = request.send(&self.http, &provider).await?;
        if !answer.status.is_success() {
            return Err(status_error(
                &provider,
                answer.status,
                &answer.headers,
                &answer.text,
            ));
        }
        Ok(json!({ "target": target, "webhook_id": id, "status": answer.status.as_u16() }))
    }
}

/// The action's `data`, an empty object when it has none.
fn data_of(action: &Value) -> Value {
    action.get("data").cloned().unwrap_or_else(|| json!({}))
}

impl Adapter for Webhook {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn dedupes(&self) -> bool {
        true
    }

    fn rollback_limit(&self) -> Option<&'static str> {
        None
    }

    fn preview(&self, action: &Value, key: &str) -> Result<Vec<RequestPreview>, AdapterError> {
        Ok(vec![self.event(action, key, Utc::now())?.preview()])
    }

    async fn execute(&self, action: &Value, key: &str) -> Result<Value, AdapterError> {
        let request = self.event(action, key, Utc::now())?;
        self.deliver(field(action, "target")?, key, request).await
    }

    async fn rollback(
        &self,
        action: &Value,
        _result: &Value,
        key: &str,
    ) -> Result<Value, AdapterError> {
        let target = field(action, "target")?;
        let kind = format!("{}.reverted", field(action, "type")?);
        let data = json!({ "reverts": key, "data": data_of(action) });
        // Its own id: under the original one a deduping receiver would drop the reversal.
        let id = format!("{key}-rollback");
        let request = self.delivery(target, &id, &kind, &data, Utc::now())?;
        self.deliver(target, &id, request).await
    }
}
