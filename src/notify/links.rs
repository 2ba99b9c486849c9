//! Approval links: `{claims}.{mac}`, both base64url without padding. The claims name the
//! proposal, the approver, the decision, the payload hash the email showed, an expiry and a
//! random nonce; the MAC is HMAC-SHA256 over the encoded claims, checked in constant time.
//! A link is a credential for exactly one decision by one person: the nonce makes it
//! single-use (`used_approval_links`), the expiry bounds it, and the hash ties it to the
//! action the email showed.
//!
//! The key is `EXECOPS_LINK_SECRET` when set; otherwise one generated at first start and kept
//! in Postgres (`approval_link_keys`), so every process and every restart shares it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use secrecy::{ExposeSecret, SecretSlice};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sqlx::PgPool;

use crate::config::LinkConfig;

/// Keeps these MACs apart from anything else the same secret might ever sign.
const CONTEXT: &[u8] = b"execops approval link v1\n";

/// What a link may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkDecision {
    #[serde(rename = "a")]
    Approve,
    #[serde(rename = "r")]
    Reject,
}

impl LinkDecision {
    pub fn verb(self) -> &'static str {
        match self {
            LinkDecision::Approve => "approve",
            LinkDecision::Reject => "reject",
        }
    }
}

/// What a link carries. Short field names keep the link short.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkClaims {
    /// The proposal's id.
    #[serde(rename = "p")]
    pub proposal: String,
    /// The approver the link was sent to; the decision is theirs.
    #[serde(rename = "e")]
    pub approver: String,
    #[serde(rename = "d")]
    pub decision: LinkDecision,
    /// The hash of the action the email showed.
    #[serde(rename = "h")]
    pub payload_hash: String,
    /// Expiry, Unix seconds.
    #[serde(rename = "x")]
    pub expires: i64,
    /// Random, base64url: the link's identity for single use.
    #[serde(rename = "n")]
    pub nonce: String,
}

impl LinkClaims {
    pub fn expires_at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.expires, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
}

/// A fresh random nonce.
pub fn nonce() -> String {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Why a link was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Not a link this ExecOps made, or changed since: no part of it may be trusted.
    #[error("the link is not valid")]
    Invalid,
    /// Genuine, but past its expiry.
    #[error("the link expired at {}", .0.expires_at())]
    Expired(Box<LinkClaims>),
}

/// The key links are signed with. Debug output never shows it.
#[derive(Clone)]
pub struct LinkKey(SecretSlice<u8>);

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkKey([REDACTED])")
    }
}

impl LinkKey {
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(SecretSlice::from(bytes.to_vec()))
    }

    /// `EXECOPS_LINK_SECRET`, or the key kept in Postgres, created by whichever process asks
    /// first.
    pub async fn load(pool: &PgPool, config: &LinkConfig) -> Result<Self, sqlx::Error> {
        if let Some(secret) = &config.secret {
            return Ok(Self::from_bytes(secret.expose_secret().as_bytes()));
        }
        let stored = || {
            sqlx::query_scalar::<_, Vec<u8>>("SELECT secret FROM approval_link_keys WHERE id = 1")
                .fetch_optional(pool)
        };
        // Read first: showing a link writes nothing once the key exists.
        if let Some(secret) = stored().await? {
            return Ok(Self::from_bytes(&secret));
        }
        let mut fresh = vec![0u8; 32];
        OsRng.fill_bytes(&mut fresh);
        sqlx::query(
            "INSERT INTO approval_link_keys (id, secret) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&fresh)
        .execute(pool)
        .await?;
        // Whoever inserted first, every process now reads the same key.
        let secret = stored().await?.ok_or(sqlx::Error::RowNotFound)?;
        Ok(Self::from_bytes(&secret))
    }

    fn mac(&self) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.expose_secret())
            .expect("HMAC takes a key of any length");
        mac.update(CONTEXT);
        mac
    }

    /// The link's token for `claims`.
    pub fn sign(&self, claims: &LinkClaims) -> String {
        let json = serde_json::to_vec(claims).unwrap_or_default();
        let body = URL_SAFE_NO_PAD.encode(json);
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{body}.{tag}")
    }

    /// The claims of a token this key signed, if it has not expired at `now`. The MAC is
    /// checked before anything in the claims is read.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<LinkClaims, LinkError> {
        // Far longer than any link this key makes: refuse before any work.
        if token.len() > 2048 {
            return Err(LinkError::Invalid);
        }
        let (body, tag) = token.split_once('.').ok_or(LinkError::Invalid)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| LinkError::Invalid)?;
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        mac.verify_slice(&tag).map_err(|_| LinkError::Invalid)?;
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| LinkError::Invalid)?;
        let claims: LinkClaims = serde_json::from_slice(&json).map_err(|_| LinkError::Invalid)?;
        if claims.expires <= now.timestamp() {
            return Err(LinkError::Expired(Box::new(claims)));
        }
        Ok(claims)
    }
}

/// When a spent link was used and what it did; `None` for a link never used.
pub async fn use_of(
    pool: &PgPool,
    nonce: &str,
) -> Result<Option<(String, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as("SELECT outcome, used_at FROM used_approval_links WHERE nonce = $1")
        .bind(nonce)
        .fetch_optional(pool)
        .await
}

/// Whether the link `nonce` was used already.
pub async fn is_used(pool: &PgPool, nonce: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM used_approval_links WHERE nonce = $1)")
        .bind(nonce)
        .fetch_one(pool)
        .await
}

/// Spends the link in `tx`: true when this call spent it, false when it was spent already
/// (a second use waits on the first's row, then finds it).
pub async fn spend(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    claims: &LinkClaims,
) -> Result<bool, sqlx::Error> {
    let spent: Option<String> = sqlx::query_scalar(
        "INSERT INTO used_approval_links (nonce, proposal_id, approver, decision, outcome) \
         VALUES ($1, $2, $3, $4, 'in progress') ON CONFLICT (nonce) DO NOTHING RETURNING nonce",
    )
    .bind(&claims.nonce)
    .bind(&claims.proposal)
    .bind(&claims.approver)
    .bind(claims.decision.verb())
    .fetch_optional(&mut **tx)
    .await?;
    Ok(spent.is_some())
}

/// Records what a spent link did.
pub async fn record_outcome(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    nonce: &str,
    outcome: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE used_approval_links SET outcome = $2 WHERE nonce = $1")
        .bind(nonce)
        .bind(outcome)
        .execute(&mut **tx)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> LinkKey {
        LinkKey::from_bytes(b"0123456789abcdef0123456789abcdef")
    }

    fn claims(expires: i64) -> LinkClaims {
        LinkClaims {
            proposal: "7b0c3a52-2b4f-5a0e-9d1c-1f2e3d4c5b6a".into(),
            approver: "ann@example.com".into(),
            decision: LinkDecision::Approve,
            payload_hash: "ab".repeat(32),
            expires,
            nonce: nonce(),
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
    }

    #[test]
    fn a_signed_link_verifies_to_its_claims_and_is_url_safe() {
        let claims = claims(now().timestamp() + 60);
        let token = key().sign(&claims);
        assert!(
            token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "{token}"
        );
        assert!(token.len() < 400, "{} characters", token.len());
        assert_eq!(key().verify(&token, now()), Ok(claims));
    }

    #[test]
    fn nonces_differ_so_two_links_to_the_same_decision_differ() {
        let (a, b) = (claims(1), claims(1));
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(key().sign(&a), key().sign(&b));
    }

    #[test]
    fn an_expired_link_is_known_as_genuine_but_expired() {
        let claims = claims(now().timestamp());
        let token = key().sign(&claims);
        assert_eq!(
            key().verify(&token, now()),
            Err(LinkError::Expired(Box::new(claims)))
        );
    }

    fn encode_claims(value: serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&value).unwrap_or_default())
    }

    /// Signs an arbitrary body with the right key: it must still be refused if it is not
    /// claims this codec writes.
    fn signed_body(body: &str) -> String {
        let mut mac = key().mac();
        mac.update(body.as_bytes());
        format!(
            "{body}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    #[test]
    fn every_kind_of_tampering_is_refused_as_invalid() {
        let claims = claims(now().timestamp() + 60);
        let token = key().sign(&claims);
        let (body, tag) = token.split_once('.').unwrap_or_default();
        let mut reject = claims.clone();
        reject.decision = LinkDecision::Reject;
        let rejected_body = key().sign(&reject);
        let rejected_body = rejected_body.split_once('.').unwrap_or_default().0;
        let mut later = claims.clone();
        later.expires += 86_400;
        let later = key().sign(&later);
        let later_body = later.split_once('.').unwrap_or_default().0;
        let mut flipped_tag = URL_SAFE_NO_PAD.decode(tag).unwrap_or_default();
        flipped_tag[0] ^= 1;
        let other_key = LinkKey::from_bytes(b"another key of thirty-two bytes!").sign(&claims);
        let cases: Vec<(&str, String)> = vec![
            (
                "claims of another decision",
                format!("{rejected_body}.{tag}"),
            ),
            ("a later expiry", format!("{later_body}.{tag}")),
            (
                "a MAC bit flipped",
                format!("{body}.{}", URL_SAFE_NO_PAD.encode(&flipped_tag)),
            ),
            (
                "the MAC truncated",
                format!("{body}.{}", &tag[..tag.len() - 4]),
            ),
            ("the MAC missing", format!("{body}.")),
            ("no separator", body.to_string()),
            ("the token truncated", token[..token.len() / 2].to_string()),
            ("empty", String::new()),
            ("garbage", "not-a-link".into()),
            ("two dots", format!("{body}.{tag}.{tag}")),
            ("padding added", format!("{body}=.{tag}")),
            ("another key", other_key),
            ("far too long", format!("{}.{tag}", "A".repeat(4096))),
            ("signed, but not JSON", signed_body("bm90IGpzb24")),
            (
                "signed, but an unknown field",
                signed_body(&encode_claims(serde_json::json!({
                    "p": "x", "e": "a@b.co", "d": "a", "h": "x", "x": 9_999_999_999i64,
                    "n": "x", "role": "admin"
                }))),
            ),
            (
                "signed, but an unknown decision",
                signed_body(&encode_claims(serde_json::json!({
                    "p": "x", "e": "a@b.co", "d": "x", "h": "x", "x": 9_999_999_999i64, "n": "x"
                }))),
            ),
        ];
        for (what, tampered) in cases {
            assert_eq!(
                key().verify(&tampered, now()),
                Err(LinkError::Invalid),
                "{what}: {tampered}"
            );
        }
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        assert_eq!(format!("{:?}", key()), "LinkKey([REDACTED])");
    }
}
