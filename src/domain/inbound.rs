//! The `Inbound` aggregate: one per external event delivered to ExecOps. Its only job is to
//! record a delivery once; a second delivery of the same id is a duplicate and records nothing.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `"{source}:{external id}"`, e.g. `stripe:evt_1Pgc…` or `github:72d3162e-…`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InboundId(String);

impl InboundId {
    pub fn new(source: &str, external_id: &str) -> Self {
        Self(format!("{source}:{external_id}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for InboundId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One external event as it was delivered and verified.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    pub source: String,
    /// The sender's own name for the event type, e.g. `invoice.payment_failed`.
    pub kind: String,
    pub external_id: String,
    pub occurred_at: DateTime<Utc>,
    pub payload: Value,
}

impl Signal {
    pub fn inbound_id(&self) -> InboundId {
        InboundId::new(&self.source, &self.external_id)
    }

    /// The person whose act this signal is, where the sender names one: the Slack user who
    /// posted, ran the command or pressed the button (`slack:U…`), the GitHub account that
    /// caused the delivery (`github:login`). A proposal they trigger is theirs, and they may
    /// not approve it. Senders that report what happened to a customer or a system name
    /// nobody on the team.
    pub fn requested_by(&self) -> Option<String> {
        let text = |pointer: &str| {
            self.payload
                .pointer(pointer)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        match self.source.as_str() {
            "slack" => text("/event/user")
                .or_else(|| text("/user_id"))
                .or_else(|| text("/user/id"))
                .map(|user| format!("slack:{user}")),
            "github" => text("/sender/login").map(|login| format!("github:{login}")),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum InboundCommand {
    Receive(Signal),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InboundEvent {
    Received(Signal),
}

impl DomainEvent for InboundEvent {
    fn event_type(&self) -> String {
        match self {
            InboundEvent::Received(_) => "Received".to_string(),
        }
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboundError {
    #[error("this delivery was already received")]
    Duplicate,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Inbound {
    received: bool,
}

impl Aggregate for Inbound {
    const TYPE: &'static str = "Inbound";
    type Command = InboundCommand;
    type Event = InboundEvent;
    type Error = InboundError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            InboundCommand::Receive(signal) => {
                if self.received {
                    return Err(InboundError::Duplicate);
                }
                sink.write(InboundEvent::Received(signal), self).await;
                Ok(())
            }
        }
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            InboundEvent::Received(_) => self.received = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;
    use serde_json::json;

    fn signal() -> Signal {
        Signal {
            source: "stripe".into(),
            kind: "invoice.payment_failed".into(),
            external_id: "evt_1".into(),
            occurred_at: DateTime::from_timestamp(1_721_954_100, 0).unwrap_or_default(),
            payload: json!({"id": "evt_1"}),
        }
    }

    #[test]
    fn a_first_delivery_is_received() {
        TestFramework::<Inbound>::with(())
            .given_no_previous_events()
            .when(InboundCommand::Receive(signal()))
            .then_expect_events(vec![InboundEvent::Received(signal())]);
    }

    #[test]
    fn a_second_receive_of_the_same_id_is_a_duplicate() {
        TestFramework::<Inbound>::with(())
            .given(vec![InboundEvent::Received(signal())])
            .when(InboundCommand::Receive(signal()))
            .then_expect_error(InboundError::Duplicate);
    }

    #[test]
    fn the_person_behind_a_signal_is_named_where_the_sender_says() {
        let cases = [
            (
                "slack",
                json!({"event": {"type": "message", "user": "U1"}}),
                Some("slack:U1"),
            ),
            (
                "slack",
                json!({"command": "/execops", "user_id": "U2"}),
                Some("slack:U2"),
            ),
            (
                "slack",
                json!({"type": "block_actions", "user": {"id": "U3"}}),
                Some("slack:U3"),
            ),
            (
                "slack",
                json!({"event": {"type": "message", "user": " "}}),
                None,
            ),
            (
                "github",
                json!({"sender": {"login": "octocat"}}),
                Some("github:octocat"),
            ),
            ("github", json!({"action": "completed"}), None),
            ("stripe", json!({"sender": {"login": "x"}}), None),
        ];
        for (source, payload, expected) in cases {
            let signal = Signal {
                source: source.into(),
                payload: payload.clone(),
                ..signal()
            };
            assert_eq!(
                signal.requested_by().as_deref(),
                expected,
                "{source} {payload}"
            );
        }
    }

    #[test]
    fn inbound_id_joins_source_and_external_id() {
        assert_eq!(signal().inbound_id().as_str(), "stripe:evt_1");
    }
}
