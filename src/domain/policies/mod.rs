//! Policies: pure functions from one verified signal, plus facts looked up before, to the
//! proposals it calls for. Deterministic rules only; thresholds come from [`PolicyConfig`].
//! Each vertical has its own module; `docs/policies.md` describes every rule.

mod customer;
mod engineering;
mod growth;
mod money;

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;

use super::inbound::Signal;
use super::priority::Priority;
use super::values::{Urgency, Vertical};

/// Thresholds and targets the rules use.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyConfig {
    /// A failed payment at least this large (minor units) also DMs the owner.
    pub owner_dm_threshold_cents: i64,
    /// Where owner alerts go: a Slack channel or user id.
    pub owner_slack: String,
    /// Month-to-date spend with a vendor this many percent over its trailing
    /// three-month average asks for a review.
    pub spend_jump_percent: i64,
    /// Runway under this many months is flagged.
    pub runway_floor_months: i64,
    /// Repository (`owner/name`) → Slack channel for CI failures.
    pub repo_channels: BTreeMap<String, String>,
    /// Channel for CI failures of repositories not in the map.
    pub default_engineering_channel: String,
    /// Words in a customer's message that mean churn, refund or anger.
    pub churn_keywords: Vec<String>,
    /// HubSpot deal stages that call for a follow-up.
    pub deal_stages: Vec<String>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            owner_dm_threshold_cents: 50_000,
            owner_slack: "#founders".into(),
            spend_jump_percent: 10,
            runway_floor_months: 6,
            repo_channels: BTreeMap::new(),
            default_engineering_channel: "#engineering".into(),
            churn_keywords: [
                "cancel",
                "refund",
                "churn",
                "angry",
                "unacceptable",
                "terrible",
                "frustrated",
                "third time",
                "chargeback",
                "lawyer",
                "switching to",
            ]
            .map(String::from)
            .to_vec(),
            deal_stages: vec!["contractsent".into(), "decisionmakerboughtin".into()],
        }
    }
}

/// A vendor's spend, as it stands with the signal's expense included.
#[derive(Clone, Debug, PartialEq)]
pub struct VendorSpend {
    pub month_to_date_cents: i64,
    /// Average of the three full months before this one.
    pub trailing_average_cents: i64,
    /// How many of those three months had any spend.
    pub months_with_history: u32,
    pub currency: String,
    /// The month the expense falls in (its first day): the month the figures are for.
    pub month: NaiveDate,
}

/// Cash and burn, as they stand with the signal included.
#[derive(Clone, Debug, PartialEq)]
pub struct Runway {
    pub cash_cents: i64,
    /// Average monthly spend less revenue over the three full months before this one.
    pub monthly_net_burn_cents: i64,
    pub currency: String,
}

/// What the router looked up for this signal.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Facts {
    /// When ExecOps recorded the signal: due dates are counted from it. Never the wall
    /// clock, so the same signals give the same proposals whenever they are processed.
    pub recorded_at: DateTime<Utc>,
    pub vendor_spend: Option<VendorSpend>,
    pub runway: Option<Runway>,
    /// A HubSpot deal's last known amount.
    pub deal_amount_cents: Option<i64>,
}

/// Text for a Slack message with words from outside in it (a customer's message, a vendor's
/// or a branch's name): `&`, `<` and `>` escaped as Slack asks, so those words cannot
/// mention `<!channel>` or disguise a link.
pub fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One proposal a rule calls for, before it gets its id.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Stable name of the rule; with the inbound id it derives the proposal id.
    pub rule: &'static str,
    pub title: String,
    pub vertical: Vertical,
    pub action_type: &'static str,
    pub action: Value,
    pub reasoning: String,
    pub priority: Priority,
    pub urgency: Urgency,
    pub due_by: Option<DateTime<Utc>>,
    pub owner: Option<String>,
    /// At most one pending proposal per subject: a newer signal revises it.
    pub subject_key: String,
    /// The later signal that shows the action worked; see [`outcome_of`].
    pub outcome_key: Option<String>,
}

/// What a signal asks of the proposals.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Propose(Box<Plan>),
    /// A pending proposal on this subject is moot (e.g. CI went green again).
    Supersede {
        subject_key: String,
        reason: String,
    },
}

/// A later signal that shows executed proposals worked.
#[derive(Clone, Debug, PartialEq)]
pub struct OutcomeSignal {
    /// Matches [`Plan::outcome_key`] of the proposals it vindicates.
    pub key: String,
    /// `recovered`, `fixed`…: one outcome of each kind per proposal.
    pub kind: &'static str,
    pub value_cents: Option<i64>,
    pub currency: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

/// What outcome, if any, a signal is evidence of.
pub fn outcome_of(signal: &Signal) -> Option<OutcomeSignal> {
    let payload = &signal.payload;
    match (signal.source.as_str(), signal.kind.as_str()) {
        ("stripe", "invoice.paid") => {
            let invoice = payload.pointer("/data/object")?;
            Some(OutcomeSignal {
                key: money::paid_key(str_at(invoice, "/id")?),
                kind: "recovered",
                value_cents: i64_at(invoice, "/amount_paid"),
                currency: str_at(invoice, "/currency").map(str::to_string),
                occurred_at: signal.occurred_at,
            })
        }
        ("github", "workflow_run.completed") => {
            let run = payload.get("workflow_run")?;
            if str_at(run, "/conclusion") != Some("success") {
                return None;
            }
            Some(OutcomeSignal {
                key: engineering::green_key(
                    str_at(payload, "/repository/full_name")?,
                    i64_at(run, "/workflow_id").unwrap_or(0),
                    str_at(run, "/head_branch")?,
                ),
                kind: "fixed",
                value_cents: None,
                currency: None,
                occurred_at: signal.occurred_at,
            })
        }
        _ => None,
    }
}

/// Runs the rules of the signal's vertical.
pub fn evaluate(signal: &Signal, facts: &Facts, config: &PolicyConfig) -> Vec<Outcome> {
    match signal.source.as_str() {
        "stripe" => money::stripe(signal, facts, config),
        "github" => engineering::github(signal, facts, config),
        "intercom" => customer::intercom(signal, facts, config),
        "hubspot" => growth::hubspot(signal, facts, config),
        "slack" => Vec::new(),
        // Standard Webhooks feeds: spend and cash.
        _ => money::feed(signal, facts, config),
    }
}

pub(crate) fn str_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

pub(crate) fn i64_at(value: &Value, pointer: &str) -> Option<i64> {
    value.pointer(pointer).and_then(Value::as_i64)
}

/// When an action type's proposals are mostly rejected, it is switched off.
#[derive(Clone, Debug, PartialEq)]
pub struct PrecisionConfig {
    /// Approved ÷ decided under this percentage disables the action type…
    pub floor_percent: i64,
    /// …once at least this many decisions were made…
    pub min_decisions: i64,
    /// …counting the most recent this many decisions since it was last enabled.
    pub window: i64,
}

impl Default for PrecisionConfig {
    fn default() -> Self {
        Self {
            floor_percent: 30,
            min_decisions: 10,
            window: 20,
        }
    }
}

impl PrecisionConfig {
    /// The reason to disable an action type with `approved` of `decided` recent decisions
    /// approved, or `None` if it stays on.
    pub fn verdict(&self, action_type: &str, approved: i64, decided: i64) -> Option<String> {
        if decided < self.min_decisions || approved * 100 >= self.floor_percent * decided {
            return None;
        }
        Some(format!(
            "people approved {approved} of the last {decided} {action_type} proposals ({}%), \
             under the {}% floor",
            approved * 100 / decided,
            self.floor_percent
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_text_with_a_customers_words_cannot_mention_everyone_or_disguise_a_link() {
        let mut payload: Value = serde_json::from_str(include_str!(
            "../../../fixtures/intercom/conversation.user.replied.json"
        ))
        .expect("the fixture");
        payload["data"]["item"]["user"]["name"] =
            Value::String("<!channel> Bill & <https://evil.example|your bank>".into());
        let signal = Signal {
            source: "intercom".into(),
            kind: "conversation.user.replied".into(),
            external_id: "notif_1".into(),
            occurred_at: DateTime::default(),
            payload,
        };
        let outcomes = evaluate(&signal, &Facts::default(), &PolicyConfig::default());
        let texts: Vec<&str> = outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Propose(plan) if plan.action_type == "slack.post_message" => {
                    plan.action["text"].as_str()
                }
                _ => None,
            })
            .collect();
        assert_eq!(texts.len(), 1, "{outcomes:?}");
        assert!(
            !texts[0].contains('<') && !texts[0].contains('>'),
            "{}",
            texts[0]
        );
        assert!(
            texts[0].contains("&lt;!channel&gt; Bill &amp; &lt;https://evil.example|your bank&gt;"),
            "{}",
            texts[0]
        );
    }

    #[test]
    fn precision_disables_only_past_the_minimum_and_under_the_floor() {
        let config = PrecisionConfig::default();
        assert_eq!(
            config.verdict("email.send", 0, 9),
            None,
            "too few decisions"
        );
        assert_eq!(
            config.verdict("email.send", 3, 10),
            None,
            "exactly at the floor"
        );
        let reason = config.verdict("email.send", 2, 10).unwrap_or_default();
        assert!(
            reason.contains("2 of the last 10") && reason.contains("20%"),
            "{reason}"
        );
    }
}
