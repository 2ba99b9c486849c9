//! The `Guardrails` aggregate: one stream, `guardrails`, holding which action types are
//! switched off and why. An action type is disabled by a person or automatically when its
//! approval precision falls too low, and only a person enables it again.

use std::collections::BTreeMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

/// The id of the one guardrails stream.
pub const GUARDRAILS_ID: &str = "guardrails";

#[derive(Debug, Clone, PartialEq)]
pub enum GuardrailsCommand {
    DisableActionType {
        action_type: String,
        /// A person's email, or `precision` when the rule did it.
        actor: String,
        reason: String,
    },
    EnableActionType {
        action_type: String,
        actor: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GuardrailsEvent {
    ActionTypeDisabled {
        action_type: String,
        actor: String,
        reason: String,
    },
    ActionTypeEnabled {
        action_type: String,
        actor: String,
    },
}

impl DomainEvent for GuardrailsEvent {
    fn event_type(&self) -> String {
        match self {
            GuardrailsEvent::ActionTypeDisabled { .. } => "ActionTypeDisabled",
            GuardrailsEvent::ActionTypeEnabled { .. } => "ActionTypeEnabled",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardrailsError {
    #[error("{0} is already disabled")]
    AlreadyDisabled(String),
    #[error("{0} is not disabled")]
    NotDisabled(String),
    #[error("the action type is empty")]
    EmptyActionType,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Guardrails {
    /// Disabled action types and the reason.
    disabled: BTreeMap<String, String>,
}

impl Guardrails {
    pub fn is_disabled(&self, action_type: &str) -> bool {
        self.disabled.contains_key(action_type)
    }
}

impl Aggregate for Guardrails {
    const TYPE: &'static str = "Guardrails";
    type Command = GuardrailsCommand;
    type Event = GuardrailsEvent;
    type Error = GuardrailsError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            GuardrailsCommand::DisableActionType {
                action_type,
                actor,
                reason,
            } => {
                if action_type.trim().is_empty() {
                    return Err(GuardrailsError::EmptyActionType);
                }
                if self.is_disabled(&action_type) {
                    return Err(GuardrailsError::AlreadyDisabled(action_type));
                }
                GuardrailsEvent::ActionTypeDisabled {
                    action_type,
                    actor,
                    reason,
                }
            }
            GuardrailsCommand::EnableActionType { action_type, actor } => {
                if !self.is_disabled(&action_type) {
                    return Err(GuardrailsError::NotDisabled(action_type));
                }
                GuardrailsEvent::ActionTypeEnabled { action_type, actor }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            GuardrailsEvent::ActionTypeDisabled {
                action_type,
                reason,
                ..
            } => {
                self.disabled.insert(action_type, reason);
            }
            GuardrailsEvent::ActionTypeEnabled { action_type, .. } => {
                self.disabled.remove(&action_type);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn disabled() -> GuardrailsEvent {
        GuardrailsEvent::ActionTypeDisabled {
            action_type: "email.send".into(),
            actor: "precision".into(),
            reason: "approved 1 of 10".into(),
        }
    }

    #[test]
    fn an_action_type_can_be_disabled_once() {
        TestFramework::<Guardrails>::with(())
            .given_no_previous_events()
            .when(GuardrailsCommand::DisableActionType {
                action_type: "email.send".into(),
                actor: "precision".into(),
                reason: "approved 1 of 10".into(),
            })
            .then_expect_events(vec![disabled()]);
        TestFramework::<Guardrails>::with(())
            .given(vec![disabled()])
            .when(GuardrailsCommand::DisableActionType {
                action_type: "email.send".into(),
                actor: "a@example.com".into(),
                reason: "again".into(),
            })
            .then_expect_error(GuardrailsError::AlreadyDisabled("email.send".into()));
    }

    #[test]
    fn a_person_enables_it_again() {
        TestFramework::<Guardrails>::with(())
            .given(vec![disabled()])
            .when(GuardrailsCommand::EnableActionType {
                action_type: "email.send".into(),
                actor: "founder@example.com".into(),
            })
            .then_expect_events(vec![GuardrailsEvent::ActionTypeEnabled {
                action_type: "email.send".into(),
                actor: "founder@example.com".into(),
            }]);
    }

    #[test]
    fn enabling_what_is_not_disabled_is_refused() {
        TestFramework::<Guardrails>::with(())
            .given_no_previous_events()
            .when(GuardrailsCommand::EnableActionType {
                action_type: "email.send".into(),
                actor: "founder@example.com".into(),
            })
            .then_expect_error(GuardrailsError::NotDisabled("email.send".into()));
    }
}
