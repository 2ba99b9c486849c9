//! Slack: `X-Slack-Signature: v0=<hex HMAC-SHA256(signing secret, "v0:{ts}:{body}")>` with
//! `X-Slack-Request-Timestamp` within 5 minutes. Three entry points: the Events API (JSON;
//! `url_verification` is answered with its challenge; deduplicated on `event_id`, so
//! Slack's retries are duplicates), slash commands (a form; keyed by `trigger_id`) and
//! interactivity (a form with one `payload` field of JSON; keyed by `trigger_id`).

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::{
    any_matches, body_id, check_timestamp, hmac_sha256, json, parse_timestamp, required,
    required_str, signature_header, unhex, unix_seconds, utf8, IngestError, Ingested,
};
use crate::domain::Signal;

pub const SIGNATURE: &str = "x-slack-signature";
pub const TIMESTAMP: &str = "x-slack-request-timestamp";
pub const TOLERANCE_SECS: i64 = 300;

fn verify_signature(
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), IngestError> {
    let ts = signature_header(headers, TIMESTAMP)?.trim();
    let signature = signature_header(headers, SIGNATURE)?;
    let signed_at = parse_timestamp(TIMESTAMP, ts)?;
    let hex_mac = signature
        .strip_prefix("v0=")
        .ok_or(IngestError::MalformedHeader(
            SIGNATURE,
            "no v0= prefix".into(),
        ))?;
    let expected = hmac_sha256(secret.as_bytes(), &[b"v0:", ts.as_bytes(), b":", body]);
    if !any_matches(&expected, unhex(hex_mac).as_deref()) {
        return Err(IngestError::BadSignature);
    }
    check_timestamp(signed_at, now, TOLERANCE_SECS)
}

/// `POST /webhooks/slack/events`.
pub fn verify_event(
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Ingested, IngestError> {
    verify_signature(secret, headers, body, now)?;
    let payload = json(body)?;
    let kind = required(&payload, "type")?;
    if kind == "url_verification" {
        let challenge = required(&payload, "challenge")?;
        return Ok(Ingested::Reply(
            serde_json::json!({ "challenge": challenge }),
        ));
    }
    let kind = match payload.pointer("/event/type").and_then(|t| t.as_str()) {
        Some(event_type) => format!("event.{event_type}"),
        None => kind.to_string(),
    };
    let external_id = payload
        .get("event_id")
        .and_then(|id| id.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| body_id(body));
    let occurred_at = unix_seconds(payload.get("event_time")).unwrap_or(now);
    Ok(Ingested::Signals(vec![Signal {
        source: "slack".into(),
        kind,
        external_id,
        occurred_at,
        payload,
    }]))
}

fn form(body: &[u8]) -> Result<Map<String, Value>, IngestError> {
    utf8(body)?;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|e| IngestError::MalformedForm(e.to_string()))?;
    Ok(pairs
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect())
}

/// `POST /webhooks/slack/commands`.
pub fn verify_command(
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Ingested, IngestError> {
    verify_signature(secret, headers, body, now)?;
    let fields = form(body)?;
    let external_id = required_str(&fields, "trigger_id")?.to_string();
    if !fields.contains_key("command") {
        return Err(IngestError::MissingField("command"));
    }
    Ok(Ingested::Signals(vec![Signal {
        source: "slack".into(),
        kind: "slash_command".into(),
        external_id,
        occurred_at: now,
        payload: Value::Object(fields),
    }]))
}

/// `POST /webhooks/slack/interactions`.
pub fn verify_interaction(
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Ingested, IngestError> {
    verify_signature(secret, headers, body, now)?;
    let fields = form(body)?;
    let raw = required_str(&fields, "payload")?;
    let payload: Value =
        serde_json::from_str(raw).map_err(|e| IngestError::MalformedJson(e.to_string()))?;
    let kind = required(&payload, "type")?;
    let external_id = payload
        .get("trigger_id")
        .and_then(|t| t.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| body_id(body));
    let occurred_at = unix_seconds(payload.pointer("/actions/0/action_ts")).unwrap_or(now);
    Ok(Ingested::Signals(vec![Signal {
        source: "slack".into(),
        kind: format!("interaction.{kind}"),
        external_id,
        occurred_at,
        payload,
    }]))
}

/// The `X-Slack-Signature` header Slack would send for `body` at `timestamp`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let mac = hmac_sha256(secret.as_bytes(), &[b"v0:", ts.as_bytes(), b":", body]);
    format!("v0={}", hex::encode(mac))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slacks_documented_example_signs_as_documented() {
        let body = include_bytes!("../../fixtures/slack/commands/weather.txt");
        assert_eq!(
            sign("8f742231b10e8888abcd99yyyzzz85a5", 1_531_420_618, body),
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
        );
    }
}
