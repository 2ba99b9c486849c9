//! GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`; the event in
//! `X-GitHub-Event`. No timestamp is signed, and `X-GitHub-Delivery` is not signed either:
//! a captured delivery sent again under a new delivery id would pass the signature check.
//! So a delivery is deduplicated on a digest of its signed body (a name-based UUID of it),
//! which GitHub's own redeliveries keep as they keep the body; `X-GitHub-Delivery` is still
//! required. `ping` is recorded like any other event.

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};

use super::{
    any_matches, header, hmac_sha256, json, signature_header, unhex, IngestError, Ingested,
};
use crate::domain::Signal;

pub const SIGNATURE: &str = "x-hub-signature-256";
pub const EVENT: &str = "x-github-event";
pub const DELIVERY: &str = "x-github-delivery";

pub fn verify(
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Ingested, IngestError> {
    let signature = signature_header(headers, SIGNATURE)?;
    let hex_mac = signature
        .strip_prefix("sha256=")
        .ok_or(IngestError::MalformedHeader(
            SIGNATURE,
            "no sha256= prefix".into(),
        ))?;
    let expected = hmac_sha256(secret.as_bytes(), &[body]);
    if !any_matches(&expected, unhex(hex_mac).as_deref()) {
        return Err(IngestError::BadSignature);
    }
    let event = header(headers, EVENT)?.trim().to_string();
    let delivery = header(headers, DELIVERY)?.trim().to_string();
    if event.is_empty() || delivery.is_empty() {
        return Err(IngestError::MalformedHeader(EVENT, "empty".into()));
    }
    let payload = json(body)?;
    let kind = match payload.get("action").and_then(|a| a.as_str()) {
        Some(action) => format!("{event}.{action}"),
        None => event,
    };
    Ok(Ingested::Signals(vec![Signal {
        source: "github".into(),
        kind,
        external_id: body_digest(body),
        occurred_at: now,
        payload,
    }]))
}

/// The name a delivery is deduplicated on: a UUID (version 5) of its signed body.
pub fn body_digest(body: &[u8]) -> String {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, body).to_string()
}

/// The `X-Hub-Signature-256` header GitHub would send for `body`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(hmac_sha256(secret.as_bytes(), &[body]))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn githubs_documented_example_signs_as_documented() {
        assert_eq!(
            sign("It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }
}
