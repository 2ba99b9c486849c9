//! The `Guardrails` aggregate: one stream, `guardrails`, holding what may execute. Kill
//! switches (everything, one action type, one adapter) are engaged and released by admins;
//! action types are disabled by a person or automatically when approval precision falls too
//! low, and only a person enables them again; rate limits are set per action type; an
//! adapter's circuit opens after consecutive failures and closes after a good probe.
//! [`Guardrails::hold`] is the one place that decides whether an execution may start.
//!
//! Writes are opt-in: an action type that costs money or cannot be taken back once sent
//! (`stripe.*`, `email.send`, `webhook.post`, see [`needs_opt_in`]) is disabled until a
//! person enables it. A fresh install proposes such actions, and may approve them, but runs
//! none until an admin says so.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Duration, Utc};

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

/// The id of the one guardrails stream.
pub const GUARDRAILS_ID: &str = "guardrails";

/// Why an action type that writes to the outside world waits for a person to enable it.
pub const NOT_ENABLED_YET: &str = "not enabled yet: it costs money or cannot be taken back \
     once sent, so an admin enables it first";

/// Whether `action_type` writes to the outside world in a way that costs money or cannot be
/// undone, and so is disabled until a person enables it.
pub fn needs_opt_in(action_type: &str) -> bool {
    action_type.starts_with("stripe.") || matches!(action_type, "email.send" | "webhook.post")
}

/// What a kill switch covers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Scope {
    Global,
    ActionType(String),
    Adapter(String),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Global => f.write_str("everything"),
            Scope::ActionType(name) => write!(f, "action type {name}"),
            Scope::Adapter(name) => write!(f, "adapter {name}"),
        }
    }
}

/// Why an execution may not start now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hold {
    /// Until a person releases it.
    KillSwitch(Scope),
    /// Until a person enables the action type again.
    Disabled(String),
    /// Until a slot frees in the hour's budget.
    RateLimited { per_hour: u32, until: DateTime<Utc> },
    /// Until the circuit's cool-down ends and a probe may pass.
    CircuitOpen {
        adapter: String,
        until: DateTime<Utc>,
    },
}

impl Hold {
    /// When to look again by itself; `None` waits for a person's change to the guardrails.
    pub fn until(&self) -> Option<DateTime<Utc>> {
        match self {
            Hold::KillSwitch(_) | Hold::Disabled(_) => None,
            Hold::RateLimited { until, .. } | Hold::CircuitOpen { until, .. } => Some(*until),
        }
    }
}

impl fmt::Display for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hold::KillSwitch(scope) => write!(f, "the kill switch for {scope} is engaged"),
            Hold::Disabled(action_type) => write!(
                f,
                "{action_type} is disabled; an admin enables it on /settings"
            ),
            Hold::RateLimited { per_hour, until } => write!(
                f,
                "over the rate limit of {per_hour} an hour; runs at {}",
                until.format("%H:%M:%S UTC")
            ),
            Hold::CircuitOpen { adapter, until } => write!(
                f,
                "the {adapter} circuit is open after repeated failures; probes again at {}",
                until.format("%H:%M:%S UTC")
            ),
        }
    }
}

/// What the executor looked up before asking [`Guardrails::hold`].
#[derive(Clone, Debug, PartialEq)]
pub struct Load {
    pub now: DateTime<Utc>,
    /// Executions of the action type started in the last hour, and the oldest of them.
    pub started_last_hour: u32,
    pub oldest_in_hour: Option<DateTime<Utc>>,
    /// The limit when no person has set one.
    pub default_per_hour: u32,
    /// Whether a probe of this adapter's half-open circuit is already running.
    pub probe_running: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum GuardrailsCommand {
    Engage {
        scope: Scope,
        actor: String,
        reason: String,
    },
    Release {
        scope: Scope,
        actor: String,
    },
    /// `None` goes back to the configured default.
    SetRateLimit {
        action_type: String,
        per_hour: Option<u32>,
        actor: String,
    },
    OpenCircuit {
        adapter: String,
        failures: u32,
        until: DateTime<Utc>,
    },
    CloseCircuit {
        adapter: String,
    },
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
    KillSwitchEngaged {
        scope: Scope,
        actor: String,
        reason: String,
    },
    KillSwitchReleased {
        scope: Scope,
        actor: String,
    },
    RateLimitSet {
        action_type: String,
        per_hour: Option<u32>,
        actor: String,
    },
    CircuitOpened {
        adapter: String,
        failures: u32,
        until: DateTime<Utc>,
    },
    CircuitClosed {
        adapter: String,
    },
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
            GuardrailsEvent::KillSwitchEngaged { .. } => "KillSwitchEngaged",
            GuardrailsEvent::KillSwitchReleased { .. } => "KillSwitchReleased",
            GuardrailsEvent::RateLimitSet { .. } => "RateLimitSet",
            GuardrailsEvent::CircuitOpened { .. } => "CircuitOpened",
            GuardrailsEvent::CircuitClosed { .. } => "CircuitClosed",
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
    #[error("the kill switch for {0} is already engaged")]
    AlreadyEngaged(Scope),
    #[error("the kill switch for {0} is not engaged")]
    NotEngaged(Scope),
    #[error("a reason is required")]
    EmptyReason,
    #[error("a rate limit must be at least 1 an hour")]
    ZeroRateLimit,
    #[error("the {0} circuit is not open")]
    CircuitNotOpen(String),
}

/// An engaged kill switch: who and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Engaged {
    pub actor: String,
    pub reason: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Guardrails {
    /// Disabled action types and the reason.
    disabled: BTreeMap<String, String>,
    engaged: BTreeMap<Scope, Engaged>,
    rate_limits: BTreeMap<String, u32>,
    /// Open circuits and when a probe may pass.
    circuits: BTreeMap<String, DateTime<Utc>>,
    /// Action types that needed a person to enable them, and were.
    #[serde(default)]
    opted_in: BTreeSet<String>,
}

impl Guardrails {
    pub fn is_disabled(&self, action_type: &str) -> bool {
        self.disabled_reason(action_type).is_some()
    }

    /// Why `action_type` may not run: disabled by a person or the precision rule, or a
    /// write nobody has enabled yet.
    pub fn disabled_reason(&self, action_type: &str) -> Option<String> {
        if let Some(reason) = self.disabled.get(action_type) {
            return Some(reason.clone());
        }
        (needs_opt_in(action_type) && !self.opted_in.contains(action_type))
            .then(|| NOT_ENABLED_YET.to_string())
    }

    /// The action types disabled by a person or the precision rule, with the reason; writes
    /// not enabled yet are told by [`Guardrails::disabled_reason`].
    pub fn disabled(&self) -> &BTreeMap<String, String> {
        &self.disabled
    }

    pub fn engaged(&self) -> &BTreeMap<Scope, Engaged> {
        &self.engaged
    }

    /// Limits people set, by action type.
    pub fn rate_limits(&self) -> &BTreeMap<String, u32> {
        &self.rate_limits
    }

    /// Open circuits, by adapter, with the time a probe may pass.
    pub fn circuits(&self) -> &BTreeMap<String, DateTime<Utc>> {
        &self.circuits
    }

    pub fn rate_limit(&self, action_type: &str, default_per_hour: u32) -> u32 {
        self.rate_limits
            .get(action_type)
            .copied()
            .unwrap_or(default_per_hour)
    }

    /// Whether an execution of `action_type` through `adapter` must wait, and why. Kill
    /// switches first (broadest first), then the action type, the circuit, the rate limit.
    pub fn hold(&self, action_type: &str, adapter: &str, load: &Load) -> Option<Hold> {
        let scopes = [
            Scope::Global,
            Scope::Adapter(adapter.to_string()),
            Scope::ActionType(action_type.to_string()),
        ];
        if let Some(scope) = scopes.into_iter().find(|s| self.engaged.contains_key(s)) {
            return Some(Hold::KillSwitch(scope));
        }
        if self.is_disabled(action_type) {
            return Some(Hold::Disabled(action_type.to_string()));
        }
        if let Some(until) = self.circuits.get(adapter) {
            // Half open after the cool-down: one probe at a time.
            if load.now < *until || load.probe_running {
                let until = (*until).max(load.now + Duration::seconds(1));
                return Some(Hold::CircuitOpen {
                    adapter: adapter.to_string(),
                    until,
                });
            }
        }
        let per_hour = self.rate_limit(action_type, load.default_per_hour);
        if load.started_last_hour >= per_hour {
            let until = load
                .oldest_in_hour
                .map(|t| t + Duration::hours(1))
                .filter(|t| *t > load.now)
                .unwrap_or(load.now + Duration::seconds(1));
            return Some(Hold::RateLimited { per_hour, until });
        }
        None
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
                if self.disabled.contains_key(&action_type) {
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
            GuardrailsCommand::Engage {
                scope,
                actor,
                reason,
            } => {
                if reason.trim().is_empty() {
                    return Err(GuardrailsError::EmptyReason);
                }
                if self.engaged.contains_key(&scope) {
                    return Err(GuardrailsError::AlreadyEngaged(scope));
                }
                GuardrailsEvent::KillSwitchEngaged {
                    scope,
                    actor,
                    reason,
                }
            }
            GuardrailsCommand::Release { scope, actor } => {
                if !self.engaged.contains_key(&scope) {
                    return Err(GuardrailsError::NotEngaged(scope));
                }
                GuardrailsEvent::KillSwitchReleased { scope, actor }
            }
            GuardrailsCommand::SetRateLimit {
                action_type,
                per_hour,
                actor,
            } => {
                if action_type.trim().is_empty() {
                    return Err(GuardrailsError::EmptyActionType);
                }
                if per_hour == Some(0) {
                    return Err(GuardrailsError::ZeroRateLimit);
                }
                GuardrailsEvent::RateLimitSet {
                    action_type,
                    per_hour,
                    actor,
                }
            }
            GuardrailsCommand::OpenCircuit {
                adapter,
                failures,
                until,
            } => GuardrailsEvent::CircuitOpened {
                adapter,
                failures,
                until,
            },
            GuardrailsCommand::CloseCircuit { adapter } => {
                if !self.circuits.contains_key(&adapter) {
                    return Err(GuardrailsError::CircuitNotOpen(adapter));
                }
                GuardrailsEvent::CircuitClosed { adapter }
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
                if needs_opt_in(&action_type) {
                    self.opted_in.insert(action_type);
                }
            }
            GuardrailsEvent::KillSwitchEngaged {
                scope,
                actor,
                reason,
            } => {
                self.engaged.insert(scope, Engaged { actor, reason });
            }
            GuardrailsEvent::KillSwitchReleased { scope, .. } => {
                self.engaged.remove(&scope);
            }
            GuardrailsEvent::RateLimitSet {
                action_type,
                per_hour,
                ..
            } => match per_hour {
                Some(limit) => {
                    self.rate_limits.insert(action_type, limit);
                }
                None => {
                    self.rate_limits.remove(&action_type);
                }
            },
            GuardrailsEvent::CircuitOpened { adapter, until, .. } => {
                self.circuits.insert(adapter, until);
            }
            GuardrailsEvent::CircuitClosed { adapter } => {
                self.circuits.remove(&adapter);
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
    fn writes_wait_for_a_person_to_enable_them_and_messages_do_not() {
        let now = Utc::now();
        let fresh = Guardrails::default();
        for (action_type, adapter) in [
            ("stripe.retry_invoice", "stripe"),
            ("email.send", "email"),
            ("webhook.post", "webhook"),
        ] {
            assert_eq!(
                fresh.hold(action_type, adapter, &load(now, 0)),
                Some(Hold::Disabled(action_type.into())),
                "{action_type}"
            );
            assert_eq!(
                fresh.disabled_reason(action_type).as_deref(),
                Some(NOT_ENABLED_YET)
            );
            let mut g = Guardrails::default();
            g.apply(enabled(action_type));
            assert_eq!(g.hold(action_type, adapter, &load(now, 0)), None);
        }
        for (action_type, adapter) in [
            ("slack.post_message", "slack"),
            ("github.create_issue", "github"),
        ] {
            assert_eq!(fresh.hold(action_type, adapter, &load(now, 0)), None);
        }
        // Enabling is the command that opts in; a write enabled and disabled again by a
        // person is enabled again the same way.
        TestFramework::<Guardrails>::with(())
            .given_no_previous_events()
            .when(GuardrailsCommand::EnableActionType {
                action_type: "stripe.retry_invoice".into(),
                actor: "admin@example.com".into(),
            })
            .then_expect_events(vec![enabled("stripe.retry_invoice")]);
        TestFramework::<Guardrails>::with(())
            .given(vec![enabled("stripe.retry_invoice")])
            .when(GuardrailsCommand::EnableActionType {
                action_type: "stripe.retry_invoice".into(),
                actor: "admin@example.com".into(),
            })
            .then_expect_error(GuardrailsError::NotDisabled("stripe.retry_invoice".into()));
        TestFramework::<Guardrails>::with(())
            .given_no_previous_events()
            .when(GuardrailsCommand::EnableActionType {
                action_type: "slack.post_message".into(),
                actor: "admin@example.com".into(),
            })
            .then_expect_error(GuardrailsError::NotDisabled("slack.post_message".into()));
    }

    fn load(now: DateTime<Utc>, started: u32) -> Load {
        Load {
            now,
            started_last_hour: started,
            oldest_in_hour: Some(now - Duration::minutes(50)),
            default_per_hour: 10,
            probe_running: false,
        }
    }

    fn enabled(action_type: &str) -> GuardrailsEvent {
        GuardrailsEvent::ActionTypeEnabled {
            action_type: action_type.into(),
            actor: "admin@example.com".into(),
        }
    }

    /// The guardrails after `events`, with email enabled as a team that sends it would have.
    fn guardrails(events: Vec<GuardrailsEvent>) -> Guardrails {
        let mut g = Guardrails::default();
        g.apply(enabled("email.send"));
        for e in events {
            g.apply(e);
        }
        g
    }

    fn engaged(scope: Scope) -> GuardrailsEvent {
        GuardrailsEvent::KillSwitchEngaged {
            scope,
            actor: "admin@example.com".into(),
            reason: "incident".into(),
        }
    }

    #[test]
    fn a_kill_switch_holds_what_it_covers_and_nothing_else() {
        let now = Utc::now();
        for (scope, held, free) in [
            (
                Scope::Global,
                ("slack.post_message", "slack"),
                None::<(&str, &str)>,
            ),
            (
                Scope::ActionType("email.send".into()),
                ("email.send", "email"),
                Some(("slack.post_message", "slack")),
            ),
            (
                Scope::Adapter("slack".into()),
                ("slack.post_message", "slack"),
                Some(("email.send", "email")),
            ),
        ] {
            let g = guardrails(vec![engaged(scope.clone())]);
            assert_eq!(
                g.hold(held.0, held.1, &load(now, 0)),
                Some(Hold::KillSwitch(scope.clone()))
            );
            if let Some((t, a)) = free {
                assert_eq!(g.hold(t, a, &load(now, 0)), None, "{scope}");
            }
            let released = guardrails(vec![
                engaged(scope.clone()),
                GuardrailsEvent::KillSwitchReleased {
                    scope: scope.clone(),
                    actor: "admin@example.com".into(),
                },
            ]);
            assert_eq!(released.hold(held.0, held.1, &load(now, 0)), None);
        }
    }

    #[test]
    fn a_kill_switch_engages_once_with_a_reason_and_releases_once() {
        TestFramework::<Guardrails>::with(())
            .given(vec![engaged(Scope::Global)])
            .when(GuardrailsCommand::Engage {
                scope: Scope::Global,
                actor: "a@example.com".into(),
                reason: "again".into(),
            })
            .then_expect_error(GuardrailsError::AlreadyEngaged(Scope::Global));
        TestFramework::<Guardrails>::with(())
            .given_no_previous_events()
            .when(GuardrailsCommand::Engage {
                scope: Scope::Global,
                actor: "a@example.com".into(),
                reason: " ".into(),
            })
            .then_expect_error(GuardrailsError::EmptyReason);
        TestFramework::<Guardrails>::with(())
            .given_no_previous_events()
            .when(GuardrailsCommand::Release {
                scope: Scope::Global,
                actor: "a@example.com".into(),
            })
            .then_expect_error(GuardrailsError::NotEngaged(Scope::Global));
    }

    #[test]
    fn over_the_rate_limit_an_execution_waits_until_the_oldest_leaves_the_hour() {
        let now = Utc::now();
        let g = guardrails(vec![]);
        assert_eq!(g.hold("email.send", "email", &load(now, 9)), None);
        assert_eq!(
            g.hold("email.send", "email", &load(now, 10)),
            Some(Hold::RateLimited {
                per_hour: 10,
                until: now + Duration::minutes(10)
            })
        );
        let set = guardrails(vec![GuardrailsEvent::RateLimitSet {
            action_type: "email.send".into(),
            per_hour: Some(20),
            actor: "admin@example.com".into(),
        }]);
        assert_eq!(set.hold("email.send", "email", &load(now, 10)), None);
    }

    #[test]
    fn an_open_circuit_holds_until_its_cool_down_then_lets_one_probe_through() {
        let now = Utc::now();
        let g = guardrails(vec![GuardrailsEvent::CircuitOpened {
            adapter: "slack".into(),
            failures: 5,
            until: now + Duration::seconds(30),
        }]);
        assert!(matches!(
            g.hold("slack.post_message", "slack", &load(now, 0)),
            Some(Hold::CircuitOpen { .. })
        ));
        let later = now + Duration::seconds(31);
        assert_eq!(g.hold("slack.post_message", "slack", &load(later, 0)), None);
        let probing = Load {
            probe_running: true,
            ..load(later, 0)
        };
        assert!(matches!(
            g.hold("slack.post_message", "slack", &probing),
            Some(Hold::CircuitOpen { .. })
        ));
        assert_eq!(g.hold("email.send", "email", &load(now, 0)), None);
    }

    #[test]
    fn scopes_keep_their_json_shape() {
        assert_eq!(
            serde_json::to_value(Scope::ActionType("email.send".into())).ok(),
            Some(serde_json::json!({"kind": "action_type", "name": "email.send"}))
        );
        assert_eq!(
            serde_json::to_value(Scope::Global).ok(),
            Some(serde_json::json!({"kind": "global"}))
        );
    }

    #[test]
    fn enabling_what_is_not_disabled_is_refused() {
        TestFramework::<Guardrails>::with(())
            .given(vec![enabled("email.send")])
            .when(GuardrailsCommand::EnableActionType {
                action_type: "email.send".into(),
                actor: "founder@example.com".into(),
            })
            .then_expect_error(GuardrailsError::NotDisabled("email.send".into()));
    }
}
