//! Standard Webhooks 1.0, for any other sender (a bank or spend feed, Make.com, …) at
//! `/webhooks/std/{source}`: `webhook-id`, `webhook-timestamp` (unix seconds, ±5 minutes)
//! and `webhook-signature`, a space-separated list of `v1,<base64 HMAC-SHA256>` over
//! `"{id}.{timestamp}.{body}"`. The key is the base64 after the `whsec_` prefix.
//! Deduplicated on `webhook-id`; kind from the payload's `type`.

use axum::http::HeaderMap;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::{DateTime, Utc};

use super::{
    any_matches, check_timestamp, header, hmac_sha256, json, parse_timestamp, required,
    signature_header, IngestError, Ingested,
};
use crate::domain::Signal;

pub const ID: &str = "webhook-id";
pub const TIMESTAMP: &str = "webhook-timestamp";
pub const SIGNATURE: &str = "webhook-signature";
pub const TOLERANCE_SECS: i64 = 300;

/// The key bytes of a `whsec_…` secret; the prefix may be left out.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret.trim();
    let encoded = encoded.strip_prefix("whsec_").unwrap_or(encoded);
    BASE64
        .decode(encoded)
        .map_err(|e| format!("the secret is not base64 after its whsec_ prefix: {e}"))
        .and_then(|key| {
            if key.is_empty() {
                Err("the secret is empty".to_string())
            } else {
                Ok(key)
            }
        })
}

pub fn verify(
    source: &str,
    key: &[u8],
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Ingested, IngestError> {
    let id = header(headers, ID)?.trim();
    let ts = signature_header(headers, TIMESTAMP)?.trim();
    let signatures = signature_header(headers, SIGNATURE)?;
    if id.is_empty() {
        return Err(IngestError::MalformedHeader(ID, "empty".into()));
    }
    let signed_at = parse_timestamp(TIMESTAMP, ts)?;
    let expected = hmac_sha256(key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
    let candidates: Vec<Vec<u8>> = signatures
        .split_whitespace()
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|b64| BASE64.decode(b64).ok())
        .collect();
    if !any_matches(&expected, candidates.iter().map(Vec::as_slice)) {
        return Err(IngestError::BadSignature);
    }
    check_timestamp(signed_at, now, TOLERANCE_SECS)?;

    let payload = json(body)?;
    let kind = required(&payload, "type")?.to_string();
    let occurred_at = payload
        .get("timestamp")
        .and_then(|t| t.as_str())
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .or_else(|| DateTime::from_timestamp(signed_at, 0))
        .unwrap_or(now);
    Ok(Ingested::Signals(vec![Signal {
        source: source.to_string(),
        kind,
        external_id: id.to_string(),
        occurred_at,
        payload,
    }]))
}

/// The `webhook-signature` header a Standard Webhooks sender would send.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let mac = hmac_sha256(key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
    format!("v1,{}", BASE64.encode(mac))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specs_example_signs_as_documented() {
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_or_default();
        assert_eq!(
            sign(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_secret_works_with_or_without_its_prefix() {
        assert_eq!(
            decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            decode_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        );
        assert!(decode_secret("whsec_not base64!").is_err());
    }
}
