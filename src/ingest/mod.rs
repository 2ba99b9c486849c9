//! Webhook ingestion: one module per sender. Each verifies a delivery over its raw bytes the
//! way its sender documents (constant-time), then parses and normalises it into `Signal`s
//! for the `Inbound` aggregate. Each also signs, as its sender would, for `execops send`,
//! the tests and the benchmarks.

pub mod github;
pub mod hubspot;
pub mod intercom;
pub mod slack;
pub mod standard;
pub mod stripe;

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::domain::Signal;

/// The senders ExecOps has a module for; Standard Webhooks sources are named by configuration.
pub const BUILT_IN_SOURCES: [&str; 5] = ["stripe", "github", "slack", "hubspot", "intercom"];

/// What a verified delivery asks of ExecOps.
#[derive(Debug)]
pub enum Ingested {
    /// Record these (one delivery may carry several events, as HubSpot's batches do).
    Signals(Vec<Signal>),
    /// Answer with this JSON and record nothing (Slack's `url_verification`, GitHub's `ping`
    /// is recorded like any event).
    Reply(Value),
}

/// Why a delivery was refused. Nothing is stored for any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("missing header {0}, which authenticates the delivery")]
    MissingSignature(&'static str),
    #[error("header {0} is malformed: {1}")]
    MalformedHeader(&'static str, String),
    #[error("the signature does not match")]
    BadSignature,
    #[error("the timestamp is {0} s away from now, outside the {1} s tolerance")]
    StaleTimestamp(i64, i64),
    #[error("the body is not UTF-8")]
    NotUtf8,
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the body is not a valid form: {0}")]
    MalformedForm(String),
    #[error("the body has no {0}")]
    MissingField(&'static str),
    #[error("the body's {0} is not valid: {1}")]
    InvalidField(&'static str, String),
}

impl IngestError {
    /// Signature problems are 401; a malformed delivery is 400.
    pub fn is_unauthenticated(&self) -> bool {
        matches!(
            self,
            IngestError::BadSignature
                | IngestError::StaleTimestamp(..)
                | IngestError::MissingSignature(_)
        )
    }

    /// A short machine-readable code for the JSON error.
    pub fn code(&self) -> &'static str {
        match self {
            IngestError::MissingHeader(_) => "missing_header",
            IngestError::MissingSignature(_) => "missing_signature",
            IngestError::MalformedHeader(..) => "malformed_header",
            IngestError::BadSignature => "bad_signature",
            IngestError::StaleTimestamp(..) => "stale_timestamp",
            IngestError::NotUtf8 => "not_utf8",
            IngestError::MalformedJson(_) => "malformed_json",
            IngestError::MalformedForm(_) => "malformed_form",
            IngestError::MissingField(_) => "missing_field",
            IngestError::InvalidField(..) => "invalid_field",
        }
    }
}

/// A header that authenticates the delivery: missing, it is a 401 rather than a 400.
pub(crate) fn signature_header<'a>(
    headers: &'a HeaderMap,
    name: &'static str,
) -> Result<&'a str, IngestError> {
    header(headers, name).map_err(|e| match e {
        IngestError::MissingHeader(name) => IngestError::MissingSignature(name),
        other => other,
    })
}

/// Lower-case hex, or `None` (a candidate that can never match).
pub(crate) fn unhex(raw: &str) -> Option<Vec<u8>> {
    hex::decode(raw.trim()).ok()
}

/// A fallback id for deliveries that carry none: the same bytes give the same id.
pub(crate) fn body_id(body: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", &hex::encode(Sha256::digest(body))[..32])
}

pub(crate) fn header<'a>(
    headers: &'a HeaderMap,
    name: &'static str,
) -> Result<&'a str, IngestError> {
    let value = headers.get(name).ok_or(IngestError::MissingHeader(name))?;
    value
        .to_str()
        .map_err(|_| IngestError::MalformedHeader(name, "not visible ASCII".into()))
}

pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Constant-time: true if any candidate equals `expected`.
pub(crate) fn any_matches<'a>(
    expected: &[u8],
    candidates: impl IntoIterator<Item = &'a [u8]>,
) -> bool {
    let mut matched = subtle::Choice::from(0u8);
    for candidate in candidates {
        matched |= expected.ct_eq(candidate);
    }
    bool::from(matched)
}

/// Refuses a signed timestamp more than `tolerance` seconds from `now`, either way.
pub(crate) fn check_timestamp(
    signed_at: i64,
    now: DateTime<Utc>,
    tolerance: i64,
) -> Result<(), IngestError> {
    let skew = now.timestamp() - signed_at;
    if skew.abs() > tolerance {
        return Err(IngestError::StaleTimestamp(skew, tolerance));
    }
    Ok(())
}

pub(crate) fn parse_timestamp(name: &'static str, raw: &str) -> Result<i64, IngestError> {
    raw.trim()
        .parse()
        .map_err(|_| IngestError::MalformedHeader(name, format!("{raw:?} is not a number")))
}

pub(crate) fn utf8(body: &[u8]) -> Result<&str, IngestError> {
    std::str::from_utf8(body).map_err(|_| IngestError::NotUtf8)
}

pub(crate) fn json(body: &[u8]) -> Result<Value, IngestError> {
    let text = utf8(body)?;
    serde_json::from_str(text).map_err(|e| IngestError::MalformedJson(e.to_string()))
}

/// A string field a delivery must have; empty counts as missing.
pub(crate) fn required_str<'a>(
    value: &'a serde_json::Map<String, Value>,
    field: &'static str,
) -> Result<&'a str, IngestError> {
    value
        .get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(IngestError::MissingField(field))
}

/// [`required_str`] on any JSON value (non-objects have no fields).
pub(crate) fn required<'a>(value: &'a Value, field: &'static str) -> Result<&'a str, IngestError> {
    match value {
        Value::Object(map) => required_str(map, field),
        _ => Err(IngestError::MissingField(field)),
    }
}

/// A string or number field, as a string: senders disagree on which ids are numbers.
pub(crate) fn id_field(value: &Value, field: &'static str) -> Result<String, IngestError> {
    match value.get(field) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(IngestError::MissingField(field)),
    }
}

pub(crate) fn unix_seconds(value: Option<&Value>) -> Option<DateTime<Utc>> {
    let seconds = match value? {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.parse().ok()?,
        _ => return None,
    };
    DateTime::from_timestamp(seconds.trunc() as i64, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_matches_finds_one_valid_among_several() {
        let expected = [1u8, 2, 3];
        assert!(any_matches(&expected, [&[9u8, 9, 9][..], &[1, 2, 3][..]]));
        assert!(!any_matches(&expected, [&[9u8, 9, 9][..], &[1, 2][..]]));
        assert!(!any_matches(&expected, std::iter::empty()));
    }

    #[test]
    fn timestamps_are_refused_one_second_past_the_tolerance_either_way() {
        let now = DateTime::from_timestamp(1_000_000, 0).unwrap_or_default();
        assert!(check_timestamp(1_000_000 - 300, now, 300).is_ok());
        assert!(check_timestamp(1_000_000 + 300, now, 300).is_ok());
        assert_eq!(
            check_timestamp(1_000_000 - 301, now, 300),
            Err(IngestError::StaleTimestamp(301, 300))
        );
        assert_eq!(
            check_timestamp(1_000_000 + 301, now, 300),
            Err(IngestError::StaleTimestamp(-301, 300))
        );
    }
}
