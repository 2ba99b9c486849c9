//! Intercom: `X-Hub-Signature: sha1=<hex HMAC-SHA1(client secret, body)>`. The body is a
//! `notification_event`; deduplicated on its `id`, kind from its `topic`.

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha1::Sha1;

use super::{
    any_matches, id_field, json, required, signature_header, unhex, unix_seconds, IngestError,
    Ingested,
};
use crate::domain::Signal;

pub const SIGNATURE: &str = "x-hub-signature";

fn mac(secret: &str, body: &[u8]) -> Vec<u8> {
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

pub fn verify(
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Ingested, IngestError> {
    let signature = signature_header(headers, SIGNATURE)?;
    let hex_mac = signature
        .strip_prefix("sha1=")
        .ok_or(IngestError::MalformedHeader(
            SIGNATURE,
            "no sha1= prefix".into(),
        ))?;
    if !any_matches(&mac(secret, body), unhex(hex_mac).as_deref()) {
        return Err(IngestError::BadSignature);
    }
    let payload = json(body)?;
    let external_id = id_field(&payload, "id")?;
    let kind = required(&payload, "topic")?.to_string();
    let occurred_at = unix_seconds(payload.get("created_at")).unwrap_or(now);
    Ok(Ingested::Signals(vec![Signal {
        source: "intercom".into(),
        kind,
        external_id,
        occurred_at,
        payload,
    }]))
}

/// The `X-Hub-Signature` header Intercom would send for `body`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    format!("sha1={}", hex::encode(mac(secret, body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_an_independently_computed_signature() {
        // python3: hmac.new(b"secret", b'{"id":"notif_1"}', hashlib.sha1).hexdigest()
        assert_eq!(
            sign("secret", br#"{"id":"notif_1"}"#),
            "sha1=23ab17fd7e0bd35f306fd0c278ddad5f04860abf"
        );
    }
}
