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
    let mut payload = json(body)?;
    without_token(&mut payload);
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

/// Drops Slack's legacy verification `token`, which every request carries: a credential
/// that is never stored (the signing secret is what ExecOps checks).
fn without_token(payload: &mut Value) {
    if let Some(object) = payload.as_object_mut() {
        object.remove("token");
    }
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
    let mut fields = form(body)?;
    fields.remove("token");
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
    let mut payload: Value =
        serde_json::from_str(raw).map_err(|e| IngestError::MalformedJson(e.to_string()))?;
    without_token(&mut payload);
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

/// `action_id` of the Approve button ExecOps puts on its approval messages.
pub const APPROVE_ACTION: &str = "execops_approve";
/// `action_id` of the Reject button.
pub const REJECT_ACTION: &str = "execops_reject";

/// A click on one of ExecOps's decision buttons, as a verified interaction carried it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Click {
    pub approve: bool,
    pub proposal_id: String,
    /// The hash of the payload the message showed, from the button's value.
    pub payload_hash: String,
    /// The Slack member who clicked.
    pub user_id: String,
    /// The workspace they clicked in.
    pub team_id: Option<String>,
    /// Where Slack takes the answer: the message update or an ephemeral refusal.
    pub response_url: String,
}

/// The value an ExecOps button carries: the proposal and the hash of what it showed.
pub fn button_value(proposal_id: &str, payload_hash: &str) -> String {
    format!("{proposal_id}:{payload_hash}")
}

fn parse_button_value(value: &str) -> Result<(String, String), IngestError> {
    let invalid = |why: &str| IngestError::InvalidField("actions[].value", why.to_string());
    let (id, hash) = value
        .split_once(':')
        .ok_or_else(|| invalid("it is not PROPOSAL_ID:PAYLOAD_HASH"))?;
    let id: uuid::Uuid = id
        .parse()
        .map_err(|_| invalid(&format!("{id:?} is not a proposal id")))?;
    let is_hash = hash.len() == 64
        && hash
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
    if !is_hash {
        return Err(invalid(&format!("{hash:?} is not a payload hash")));
    }
    Ok((id.to_string(), hash.to_string()))
}

fn response_url(raw: Option<&Value>) -> Result<String, IngestError> {
    let raw = raw
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(IngestError::MissingField("response_url"))?;
    let url = url::Url::parse(raw)
        .map_err(|e| IngestError::InvalidField("response_url", e.to_string()))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(IngestError::InvalidField(
            "response_url",
            format!("{raw:?} is not an http(s) URL"),
        ));
    }
    Ok(raw.to_string())
}

/// The click on an ExecOps button an interaction carries, if it carries one; other
/// interactions (other apps' buttons, shortcuts) are `None`. A payload that clicks an
/// ExecOps button but lacks what acting on it needs is refused.
pub fn click(payload: &Value) -> Result<Option<Click>, IngestError> {
    if payload.get("type").and_then(Value::as_str) != Some("block_actions") {
        return Ok(None);
    }
    let actions = payload
        .get("actions")
        .and_then(Value::as_array)
        .ok_or(IngestError::MissingField("actions"))?;
    let Some((approve, action)) =
        actions.iter().find_map(
            |action| match action.get("action_id").and_then(Value::as_str) {
                Some(APPROVE_ACTION) => Some((true, action)),
                Some(REJECT_ACTION) => Some((false, action)),
                _ => None,
            },
        )
    else {
        return Ok(None);
    };
    let value = action
        .get("value")
        .and_then(Value::as_str)
        .ok_or(IngestError::MissingField("actions[].value"))?;
    let (proposal_id, payload_hash) = parse_button_value(value)?;
    let user_id = payload
        .pointer("/user/id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(IngestError::MissingField("user.id"))?
        .to_string();
    Ok(Some(Click {
        approve,
        proposal_id,
        payload_hash,
        user_id,
        team_id: field(payload, "/team/id"),
        response_url: response_url(payload.get("response_url"))?,
    }))
}

/// What `/execops …` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `/execops` alone: the top of Today's Moves.
    TodaysMoves,
    /// `/execops approve ID` or `/execops reject ID reason…`, by the Slack member `user_id`.
    Decide {
        approve: bool,
        proposal_id: String,
        reason: Option<String>,
        user_id: String,
        /// The workspace the command was typed in.
        team_id: Option<String>,
        /// Where a result that takes longer than the answer may wait goes.
        response_url: Option<String>,
    },
    /// Anything else: how to use it, with what was wrong when something was.
    Help(Option<String>),
}

/// Reads the text of an `/execops` command. Mistakes in it are for the person who typed it
/// (an answer shown to them), not errors of the delivery.
pub fn command(fields: &Value) -> Result<Command, IngestError> {
    let text = fields.get("text").and_then(Value::as_str).unwrap_or("");
    let mut words = text.split_whitespace();
    let verb = match words.next() {
        None => return Ok(Command::TodaysMoves),
        Some(verb) => verb.to_lowercase(),
    };
    let approve = match verb.as_str() {
        "approve" => true,
        "reject" => false,
        "help" => return Ok(Command::Help(None)),
        other => return Ok(Command::Help(Some(format!("unknown command {other:?}")))),
    };
    let Some(id) = words.next() else {
        return Ok(Command::Help(Some(format!("{verb} needs a proposal id"))));
    };
    let Ok(id) = id.parse::<uuid::Uuid>() else {
        return Ok(Command::Help(Some(format!("{id:?} is not a proposal id"))));
    };
    let rest: Vec<&str> = words.collect();
    let reason = (!rest.is_empty()).then(|| rest.join(" "));
    if !approve && reason.is_none() {
        return Ok(Command::Help(Some("a rejection needs a reason".into())));
    }
    if approve && reason.is_some() {
        return Ok(Command::Help(Some(
            "approve takes only a proposal id".into(),
        )));
    }
    let user_id = fields
        .get("user_id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(IngestError::MissingField("user_id"))?
        .to_string();
    Ok(Command::Decide {
        approve,
        proposal_id: id.to_string(),
        reason,
        user_id,
        team_id: field(fields, "/team_id"),
        response_url: response_url(fields.get("response_url")).ok(),
    })
}

/// The non-empty string at `pointer` in `value`.
fn field(value: &Value, pointer: &str) -> Option<String> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
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
    fn slacks_verification_token_is_never_kept_from_any_request() {
        let now = Utc::now();
        let interaction = serde_json::json!({
            "type": "block_actions", "token": "legacy-verification-token", "trigger_id": "t1",
        });
        let bodies: [(Verify, String); 3] = [
            (
                verify_event,
                r#"{"type":"event_callback","token":"legacy-verification-token","event_id":"Ev1","event":{"type":"app_mention"}}"#.into(),
            ),
            (
                verify_command,
                "token=legacy-verification-token&command=%2Fexecops&text=&trigger_id=t1".into(),
            ),
            (
                verify_interaction,
                serde_urlencoded::to_string([("payload", interaction.to_string())])
                    .expect("a form"),
            ),
        ];
        for (verify, body) in bodies {
            let mut headers = HeaderMap::new();
            headers.insert(
                SIGNATURE,
                sign("secret", now.timestamp(), body.as_bytes())
                    .parse()
                    .expect("a header"),
            );
            headers.insert(TIMESTAMP, now.timestamp().into());
            let Ok(Ingested::Signals(signals)) = verify("secret", &headers, body.as_bytes(), now)
            else {
                panic!("{body} was not taken");
            };
            let stored = signals[0].payload.to_string();
            assert!(!stored.contains("legacy-verification-token"), "{stored}");
        }
    }

    type Verify = fn(&str, &HeaderMap, &[u8], DateTime<Utc>) -> Result<Ingested, IngestError>;

    const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const ID: &str = "6f1c2d4e-9a3b-4c5d-8e7f-0a1b2c3d4e5f";

    fn clicked(action_id: &str, value: &str) -> Value {
        serde_json::json!({
            "type": "block_actions",
            "user": {"id": "U0ADA"},
            "team": {"id": "T0ACME"},
            "response_url": "https://hooks.slack.com/actions/T1/1/abc",
            "actions": [{"action_id": action_id, "value": value, "type": "button"}],
        })
    }

    #[test]
    fn a_click_on_an_execops_button_is_read_with_its_proposal_and_hash() {
        let value = button_value(ID, HASH);
        let click = click(&clicked(REJECT_ACTION, &value)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            click,
            Some(Click {
                approve: false,
                proposal_id: ID.into(),
                payload_hash: HASH.into(),
                user_id: "U0ADA".into(),
                team_id: Some("T0ACME".into()),
                response_url: "https://hooks.slack.com/actions/T1/1/abc".into(),
            })
        );
        assert_eq!(super::click(&clicked("another_apps_button", "x")), Ok(None));
        assert_eq!(
            super::click(&serde_json::json!({"type": "shortcut"})),
            Ok(None)
        );
    }

    #[test]
    fn a_click_without_what_acting_on_it_needs_is_refused() {
        let good = button_value(ID, HASH);
        let without = |pointer: &str| {
            let mut payload = clicked(APPROVE_ACTION, &good);
            let (parent, key) = pointer.rsplit_once('/').unwrap_or_default();
            if let Some(Value::Object(map)) = payload.pointer_mut(parent) {
                map.remove(key);
            }
            payload
        };
        let with_url = |url: &str| {
            let mut payload = clicked(APPROVE_ACTION, &good);
            payload["response_url"] = Value::String(url.into());
            payload
        };
        let cases = [
            (without("/actions"), "missing_field", "actions"),
            (without("/user/id"), "missing_field", "user.id"),
            (without("/response_url"), "missing_field", "response_url"),
            (
                without("/actions/0/value"),
                "missing_field",
                "actions[].value",
            ),
            (
                clicked(APPROVE_ACTION, "no-colon"),
                "invalid_field",
                "PROPOSAL_ID:PAYLOAD_HASH",
            ),
            (
                clicked(APPROVE_ACTION, &format!("nope:{HASH}")),
                "invalid_field",
                "not a proposal id",
            ),
            (
                clicked(APPROVE_ACTION, &format!("{ID}:short")),
                "invalid_field",
                "not a payload hash",
            ),
            (with_url("not a url"), "invalid_field", "response_url"),
            (
                with_url("ftp://example.com/x"),
                "invalid_field",
                "not an http(s) URL",
            ),
        ];
        for (payload, code, words) in cases {
            let error = super::click(&payload)
                .err()
                .unwrap_or_else(|| panic!("{payload} was taken"));
            assert_eq!(error.code(), code, "{payload}");
            assert!(error.to_string().contains(words), "{error}");
        }
    }

    #[test]
    fn slash_command_text_is_read_into_a_command_or_help() {
        let fields =
            |text: &str| serde_json::json!({"text": text, "user_id": "U0ADA", "team_id": "T0ACME"});
        let decide = |approve: bool, reason: Option<&str>| Command::Decide {
            approve,
            proposal_id: ID.into(),
            reason: reason.map(str::to_string),
            user_id: "U0ADA".into(),
            team_id: Some("T0ACME".into()),
            response_url: None,
        };
        let help = |why: &str| Command::Help(Some(why.to_string()));
        for (text, expected) in [
            ("", Command::TodaysMoves),
            ("  ", Command::TodaysMoves),
            ("help", Command::Help(None)),
            (&format!("approve {ID}"), decide(true, None)),
            (&format!("APPROVE {ID}"), decide(true, None)),
            (
                &format!("reject {ID} not this quarter"),
                decide(false, Some("not this quarter")),
            ),
            ("approve", help("approve needs a proposal id")),
            ("approve 42", help("\"42\" is not a proposal id")),
            (&format!("reject {ID}"), help("a rejection needs a reason")),
            (
                &format!("approve {ID} now"),
                help("approve takes only a proposal id"),
            ),
            ("deploy", help("unknown command \"deploy\"")),
        ] {
            assert_eq!(command(&fields(text)), Ok(expected), "{text:?}");
        }
        assert_eq!(
            command(&serde_json::json!({"text": format!("approve {ID}")})),
            Err(IngestError::MissingField("user_id"))
        );
    }

    #[test]
    fn slacks_documented_example_signs_as_documented() {
        let body = include_bytes!("../../fixtures/slack/commands/weather.txt");
        assert_eq!(
            sign("8f742231b10e8888abcd99yyyzzz85a5", 1_531_420_618, body),
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
        );
    }
}
