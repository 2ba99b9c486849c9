//! What a proposal's approval takes, decided once when it is drafted: how many distinct
//! approvers (N of M), how many rejections end it, when it expires undecided, and whom to
//! tell, level by level, while it waits. The router stamps these terms into the draft, so a
//! replay decides exactly what was decided the first time.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The approval terms a draft carries. Serialized flat into the draft and left out when they
/// are the defaults, so drafts recorded before quorums existed read back unchanged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApprovalTerms {
    /// Distinct approvals it takes; the last of them records `Approved`.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub approvals_needed: u32,
    /// Distinct rejections that end it; 1 means any one approver's rejection ends it.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub rejections_needed: u32,
    /// Undecided past this time, it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Whom to tell, and when, while it waits: level 1 first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalations: Vec<EscalationStep>,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

impl Default for ApprovalTerms {
    fn default() -> Self {
        Self {
            approvals_needed: 1,
            rejections_needed: 1,
            expires_at: None,
            escalations: Vec::new(),
        }
    }
}

/// One level of the escalation ladder, as scheduled for one proposal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationStep {
    pub at: DateTime<Utc>,
    /// The approvers' emails to notify at this level.
    pub to: Vec<String>,
}

/// Which proposals need more than one approver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuorumSelector {
    /// Every proposal.
    Any,
    /// One action type, e.g. `stripe.refund`.
    ActionType(String),
    /// Action types starting with a prefix, e.g. `stripe.` for `stripe.*`.
    Prefix(String),
    /// Actions whose amount (minor units) is at least this much.
    AmountAtLeast(i64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumRule {
    pub selector: QuorumSelector,
    pub approvals: u32,
}

/// When rejections end a proposal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RejectionRule {
    /// Any one approver's rejection ends it (the default).
    #[default]
    Veto,
    /// It takes as many distinct rejections as approvals: rejections count like approvals.
    Quorum,
}

/// The whole approval configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalRules {
    pub quorum: Vec<QuorumRule>,
    pub rejection: RejectionRule,
    /// How long a proposal waits for its decision; `None`: for ever.
    pub ttl: Option<Duration>,
    /// How long each ladder level waits before the next is told; `None`: no escalation.
    pub escalate_after: Option<Duration>,
    /// Levels of approvers' emails.
    pub ladder: Vec<Vec<String>>,
}

impl Default for ApprovalRules {
    fn default() -> Self {
        Self {
            quorum: Vec::new(),
            rejection: RejectionRule::Veto,
            ttl: Some(Duration::hours(72)),
            escalate_after: Some(Duration::hours(4)),
            ladder: Vec::new(),
        }
    }
}

/// The amount an action moves, in minor units: its `amount` or `amount_cents` field.
pub fn action_amount(action: &Value) -> Option<i64> {
    ["amount", "amount_cents"]
        .iter()
        .find_map(|key| action.get(key).and_then(Value::as_i64))
}

impl ApprovalRules {
    /// The approvals a proposal of `action_type` with `action` needs: the strictest rule
    /// that matches it, else 1.
    pub fn approvals_needed(&self, action_type: &str, action: &Value) -> u32 {
        let amount = action_amount(action);
        self.quorum
            .iter()
            .filter(|rule| match &rule.selector {
                QuorumSelector::Any => true,
                QuorumSelector::ActionType(t) => t == action_type,
                QuorumSelector::Prefix(p) => action_type.starts_with(p.as_str()),
                QuorumSelector::AmountAtLeast(min) => amount.is_some_and(|a| a >= *min),
            })
            .map(|rule| rule.approvals)
            .max()
            .unwrap_or(1)
            .max(1)
    }

    /// The terms of a proposal drafted at `drafted_at`: its quorum, its expiry, and one
    /// escalation step per ladder level, `escalate_after` apart, that falls before the expiry.
    pub fn terms(
        &self,
        action_type: &str,
        action: &Value,
        drafted_at: DateTime<Utc>,
    ) -> ApprovalTerms {
        let approvals_needed = self.approvals_needed(action_type, action);
        let expires_at = self.ttl.map(|ttl| drafted_at + ttl);
        let escalations = match self.escalate_after {
            None => Vec::new(),
            Some(every) => self
                .ladder
                .iter()
                .zip(1..)
                .map(|(to, level)| EscalationStep {
                    at: drafted_at + every * level,
                    to: to.clone(),
                })
                .take_while(|step| expires_at.is_none_or(|end| step.at < end))
                .collect(),
        };
        ApprovalTerms {
            approvals_needed,
            rejections_needed: match self.rejection {
                RejectionRule::Veto => 1,
                RejectionRule::Quorum => approvals_needed,
            },
            expires_at,
            escalations,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap_or_default()
    }

    fn rules() -> ApprovalRules {
        ApprovalRules {
            quorum: vec![
                QuorumRule {
                    selector: QuorumSelector::ActionType("stripe.refund".into()),
                    approvals: 2,
                },
                QuorumRule {
                    selector: QuorumSelector::Prefix("github.".into()),
                    approvals: 2,
                },
                QuorumRule {
                    selector: QuorumSelector::AmountAtLeast(100_000),
                    approvals: 3,
                },
            ],
            ..ApprovalRules::default()
        }
    }

    #[test]
    fn the_strictest_matching_rule_sets_the_quorum() {
        let cases = [
            ("email.send", json!({}), 1),
            ("stripe.refund", json!({"amount": 500}), 2),
            ("stripe.refund", json!({"amount": 100_000}), 3),
            ("email.send", json!({"amount_cents": 250_000}), 3),
            ("email.send", json!({"amount": "250000"}), 1),
            ("github.create_issue", json!({}), 2),
            ("githubx", json!({}), 1),
        ];
        for (action_type, action, expected) in cases {
            assert_eq!(
                rules().approvals_needed(action_type, &action),
                expected,
                "{action_type} {action}"
            );
        }
    }

    #[test]
    fn escalations_follow_the_ladder_and_stop_at_the_expiry() {
        let rules = ApprovalRules {
            ttl: Some(Duration::hours(10)),
            escalate_after: Some(Duration::hours(4)),
            ladder: vec![
                vec!["lead@x.com".into()],
                vec!["cfo@x.com".into(), "ceo@x.com".into()],
                vec!["board@x.com".into()],
            ],
            ..ApprovalRules::default()
        };
        let terms = rules.terms("email.send", &json!({}), at(0));
        assert_eq!(terms.expires_at, Some(at(10 * 3600)));
        assert_eq!(
            terms.escalations,
            vec![
                EscalationStep {
                    at: at(4 * 3600),
                    to: vec!["lead@x.com".into()]
                },
                EscalationStep {
                    at: at(8 * 3600),
                    to: vec!["cfo@x.com".into(), "ceo@x.com".into()]
                },
            ]
        );
    }

    #[test]
    fn a_quorum_rejection_rule_takes_as_many_rejections_as_approvals() {
        let mut rules = rules();
        assert_eq!(
            rules
                .terms("stripe.refund", &json!({}), at(0))
                .rejections_needed,
            1
        );
        rules.rejection = RejectionRule::Quorum;
        assert_eq!(
            rules
                .terms("stripe.refund", &json!({}), at(0))
                .rejections_needed,
            2
        );
    }

    #[test]
    fn default_terms_are_left_out_of_the_json() {
        let value = serde_json::to_value(ApprovalTerms::default()).unwrap_or_default();
        assert_eq!(value, json!({}));
        let back: ApprovalTerms = serde_json::from_value(json!({})).unwrap_or_default();
        assert_eq!(back, ApprovalTerms::default());
    }
}
