//! Fuzzing on the stable toolchain: every parser and verifier a client can reach is fed
//! arbitrary bytes and arbitrary headers, unsigned and correctly signed, and must answer with
//! an error or a value, never a panic; nothing unsigned is ever accepted.
//!
//! Each target runs `FUZZ_CASES` cases (default 2,000), or for `FUZZ_SECONDS` when that is
//! set (`just fuzz` gives each ten minutes' share), from the seed `FUZZ_SEED` (default 0),
//! and prints how many cases it ran.

use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use chrono::{DateTime, Utc};
use execops::ingest::{github, hubspot, intercom, slack, standard, stripe, IngestError, Ingested};
use execops::notify::links::LinkKey;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Runs `case` as many times as the budget allows and returns how many it ran.
fn fuzz(name: &str, mut case: impl FnMut(&mut StdRng)) -> u64 {
    let env = |key: &str| std::env::var(key).ok().and_then(|v| v.parse::<u64>().ok());
    let seed = env("FUZZ_SEED").unwrap_or(0);
    let deadline = env("FUZZ_SECONDS").map(|s| Instant::now() + Duration::from_secs(s));
    let cases = env("FUZZ_CASES").unwrap_or(2_000);
    let mut rng = StdRng::seed_from_u64(
        seed ^ name
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64)),
    );
    let mut ran = 0u64;
    loop {
        match deadline {
            Some(deadline) if Instant::now() >= deadline => break,
            None if ran >= cases => break,
            _ => {}
        }
        case(&mut rng);
        ran += 1;
    }
    println!("fuzz {name}: {ran} cases (seed {seed})");
    ran
}

const PIECES: [&str; 24] = [
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    ",",
    "=",
    "&",
    "%",
    "+",
    "payload=",
    "type",
    "data",
    "object",
    "block_actions",
    "actions",
    "value",
    "text",
    "/execops approve ",
    "null",
    "1e999",
    "-0",
    "\u{0}",
];

/// Arbitrary bytes, some of them made of pieces of the formats the parsers read.
fn bytes(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    match rng.gen_range(0..4) {
        0 => (0..rng.gen_range(0..512)).map(|_| rng.gen()).collect(),
        1 => (0..rng.gen_range(0..64))
            .flat_map(|_| PIECES[rng.gen_range(0..PIECES.len())].bytes())
            .collect(),
        _ if !seeds.is_empty() => {
            // A real body with a few bytes changed, cut or repeated.
            let mut body = seeds[rng.gen_range(0..seeds.len())].clone();
            for _ in 0..rng.gen_range(1..8) {
                if body.is_empty() {
                    break;
                }
                let at = rng.gen_range(0..body.len());
                match rng.gen_range(0..3) {
                    0 => body[at] = rng.gen(),
                    1 => body.truncate(at),
                    _ => {
                        let piece = body[at..].iter().take(16).copied().collect::<Vec<_>>();
                        body.splice(at..at, piece);
                    }
                }
            }
            body
        }
        _ => Vec::new(),
    }
}

const HEADER_NAMES: [&str; 12] = [
    "stripe-signature",
    "x-hub-signature-256",
    "x-github-event",
    "x-github-delivery",
    "x-slack-signature",
    "x-slack-request-timestamp",
    "x-hubspot-signature-v3",
    "x-hubspot-request-timestamp",
    "x-hub-signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

fn header_value(rng: &mut StdRng, now: DateTime<Utc>) -> Option<HeaderValue> {
    let text = match rng.gen_range(0..5) {
        0 => now.timestamp().to_string(),
        1 => format!("t={},v1={:x}", now.timestamp(), rng.gen::<u128>()),
        2 => format!("sha256={:x}", rng.gen::<u128>()),
        3 => format!("v0={:x}", rng.gen::<u128>()),
        _ => {
            let raw: Vec<u8> = (0..rng.gen_range(0..80)).map(|_| rng.gen()).collect();
            return HeaderValue::from_bytes(&raw).ok();
        }
    };
    HeaderValue::from_str(&text).ok()
}

fn headers(rng: &mut StdRng, now: DateTime<Utc>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for _ in 0..rng.gen_range(0..8) {
        let name = HeaderName::from_static(HEADER_NAMES[rng.gen_range(0..HEADER_NAMES.len())]);
        if let Some(value) = header_value(rng, now) {
            headers.append(name, value);
        }
    }
    headers
}

fn fixtures() -> Vec<Vec<u8>> {
    crate::webhooks::fixtures()
        .into_iter()
        .filter_map(|path| std::fs::read(path).ok())
        .collect()
}

const SECRET: &str = "whsec_fuzzing_secret";
const STANDARD_KEY: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

type Verifier = fn(&str, &HeaderMap, &[u8], DateTime<Utc>) -> Result<Ingested, IngestError>;
type Signer = fn(&[u8], DateTime<Utc>) -> HeaderMap;

/// The built-in senders that sign with a secret and the body alone (and a timestamp), and how
/// each signs a body at a time.
fn senders() -> Vec<(&'static str, Verifier, Signer)> {
    fn one(name: &'static str, value: String) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_str(&value).expect("a header"));
        headers
    }
    fn slack_headers(body: &[u8], now: DateTime<Utc>) -> HeaderMap {
        let mut headers = one(
            "x-slack-signature",
            slack::sign(SECRET, now.timestamp(), body),
        );
        headers.insert(
            "x-slack-request-timestamp",
            HeaderValue::from(now.timestamp()),
        );
        headers
    }
    vec![
        ("stripe", stripe::verify, |body, now| {
            one(
                "stripe-signature",
                stripe::sign(SECRET, now.timestamp(), body),
            )
        }),
        ("github", github::verify, |body, _| {
            let mut headers = one("x-hub-signature-256", github::sign(SECRET, body));
            headers.insert("x-github-event", HeaderValue::from_static("workflow_run"));
            headers.insert("x-github-delivery", HeaderValue::from_static("d-1"));
            headers
        }),
        ("intercom", intercom::verify, |body, _| {
            one("x-hub-signature", intercom::sign(SECRET, body))
        }),
        ("slack events", slack::verify_event, slack_headers),
        ("slack commands", slack::verify_command, slack_headers),
        (
            "slack interactions",
            slack::verify_interaction,
            slack_headers,
        ),
    ]
}

#[test]
fn unsigned_deliveries_are_refused_by_every_verifier_and_nothing_panics() {
    let seeds = fixtures();
    let now = Utc::now();
    let key = standard::decode_secret(STANDARD_KEY).expect("a key");
    let mut total = 0;
    for (name, verify, _) in senders() {
        total += fuzz(&format!("{name}, unsigned"), |rng| {
            let body = bytes(rng, &seeds);
            let headers = headers(rng, now);
            assert!(
                verify(SECRET, &headers, &body, now).is_err(),
                "{name} accepted an unsigned delivery"
            );
        });
    }
    total += fuzz("hubspot, unsigned", |rng| {
        let body = bytes(rng, &seeds);
        let headers = headers(rng, now);
        let verified = hubspot::verify(
            SECRET,
            "POST",
            "https://x.example/webhooks/hubspot",
            &headers,
            &body,
            now,
        );
        assert!(verified.is_err(), "hubspot accepted an unsigned delivery");
    });
    total += fuzz("standard webhooks, unsigned", |rng| {
        let body = bytes(rng, &seeds);
        let headers = headers(rng, now);
        assert!(
            standard::verify("bank", &key, &headers, &body, now).is_err(),
            "accepted an unsigned delivery"
        );
    });
    assert!(total > 0);
}

#[test]
fn signed_arbitrary_bodies_are_parsed_or_refused_without_a_panic() {
    let seeds = fixtures();
    let now = Utc::now();
    let key = standard::decode_secret(STANDARD_KEY).expect("a key");
    let mut accepted = 0u64;
    for (name, verify, sign) in senders() {
        fuzz(&format!("{name}, signed"), |rng| {
            let body = bytes(rng, &seeds);
            let headers = sign(&body, now);
            if verify(SECRET, &headers, &body, now).is_ok() {
                accepted += 1;
            }
            // One byte changed after signing is refused.
            if !body.is_empty() {
                let mut tampered = body.clone();
                let at = rng.gen_range(0..tampered.len());
                tampered[at] ^= 1 + rng.gen_range(0..255u8);
                assert!(
                    verify(SECRET, &headers, &tampered, now).is_err(),
                    "{name} accepted a tampered body"
                );
            }
        });
    }
    fuzz("hubspot, signed", |rng| {
        let body = bytes(rng, &seeds);
        let uri = "https://x.example/webhooks/hubspot";
        let ms = now.timestamp_millis();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-hubspot-signature-v3",
            HeaderValue::from_str(&hubspot::sign(SECRET, "POST", uri, &body, ms))
                .expect("a header"),
        );
        headers.insert("x-hubspot-request-timestamp", HeaderValue::from(ms));
        if hubspot::verify(SECRET, "POST", uri, &headers, &body, now).is_ok() {
            accepted += 1;
        }
    });
    fuzz("standard webhooks, signed", |rng| {
        let body = bytes(rng, &seeds);
        let id = format!("msg_{}", rng.gen::<u32>());
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", HeaderValue::from_str(&id).expect("a header"));
        headers.insert("webhook-timestamp", HeaderValue::from(now.timestamp()));
        headers.insert(
            "webhook-signature",
            HeaderValue::from_str(&standard::sign(&key, &id, now.timestamp(), &body))
                .expect("a header"),
        );
        if standard::verify("bank", &key, &headers, &body, now).is_ok() {
            accepted += 1;
        }
    });
    // The mutated fixtures still parse now and then: the parsers were reached.
    assert!(accepted > 0);
}

#[test]
fn slack_commands_clicks_and_questions_take_any_text_without_a_panic() {
    let seeds = fixtures();
    let today = Utc::now().date_naive();
    fuzz("slack command text", |rng| {
        let text = String::from_utf8_lossy(&bytes(rng, &seeds)).to_string();
        let _ = slack::command(&serde_json::json!({ "text": text }));
    });
    fuzz("slack click payload", |rng| {
        let raw = bytes(rng, &seeds);
        if let Ok(payload) = serde_json::from_slice::<serde_json::Value>(&raw) {
            let _ = slack::click(&payload);
        }
        let value = String::from_utf8_lossy(&raw).to_string();
        let _ = slack::click(&serde_json::json!({
            "type": "block_actions",
            "user": {"id": "U1"},
            "actions": [{"action_id": "approve", "value": value}],
        }));
    });
    fuzz("canvas question", |rng| {
        let question = String::from_utf8_lossy(&bytes(rng, &seeds)).to_string();
        let _ = execops::canvas::question::understand(&question, today);
    });
}

#[test]
fn link_tokens_and_cursors_decode_any_text_to_an_error_or_what_was_signed() {
    let key = LinkKey::from_bytes(b"a fuzzing key of thirty-two bytes!");
    let now = Utc::now();
    fuzz("email link token", |rng| {
        let raw = bytes(rng, &[]);
        let token = String::from_utf8_lossy(&raw).to_string();
        assert!(
            key.verify(&token, now).is_err(),
            "an unsigned link was accepted"
        );
        let dotted = format!("{}.{}", token, String::from_utf8_lossy(&bytes(rng, &[])));
        assert!(
            key.verify(&dotted, now).is_err(),
            "an unsigned link was accepted"
        );
    });
    fuzz("api cursor", |rng| {
        let raw = bytes(rng, &[]);
        let cursor = String::from_utf8_lossy(&raw).to_string();
        let _ = execops::web::api::decode_cursor(&cursor);
        let encoded =
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &raw);
        let _ = execops::web::api::decode_cursor(&encoded);
    });
}
