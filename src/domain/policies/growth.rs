//! Growth: a new contact from a form, or a deal moved to a stage that matters, calls for a
//! follow-up email.

use chrono::Duration;
use serde_json::json;

use super::{str_at, Facts, Outcome, Plan, PolicyConfig};
use crate::domain::inbound::Signal;
use crate::domain::priority::{revenue_factor, urgency_factor, Factor, Priority};
use crate::domain::values::{Urgency, Vertical};

pub(super) fn hubspot(signal: &Signal, facts: &Facts, config: &PolicyConfig) -> Vec<Outcome> {
    let event = &signal.payload;
    let Some(object) = event.get("objectId").map(|v| v.to_string()) else {
        return Vec::new();
    };
    match signal.kind.as_str() {
        "contact.creation" => {
            let from_form =
                str_at(event, "/changeSource").is_some_and(|s| s.eq_ignore_ascii_case("form"));
            if !from_form {
                return Vec::new();
            }
            vec![Outcome::Propose(Box::new(Plan {
                rule: "growth.lead_follow_up",
                title: format!("Send a follow-up email to new lead {object}"),
                vertical: Vertical::Growth,
                action_type: "email.send",
                action: json!({
                    "to": { "hubspot_contact": object },
                    "template": "lead_follow_up",
                    "subject": "Thanks for reaching out",
                    "body": "Hi,\n\nThanks for getting in touch. Would a 20-minute call this \
                             week help? Reply with a time that suits you.\n",
                }),
                reasoning: format!(
                    "Contact {object} filled in a form. Leads answered within a day convert \
                     several times better than leads answered later."
                ),
                priority: Priority {
                    revenue: Factor::new(30, "a new lead may become a customer"),
                    urgency: urgency_factor(Urgency::Medium, "leads go cold within a day"),
                    effort: Factor::new(85, "it is one email"),
                    strategic: Factor::new(60, "growth comes from answered leads"),
                },
                urgency: Urgency::Medium,
                due_by: Some(facts.recorded_at + Duration::days(1)),
                owner: None,
                subject_key: format!("hubspot:contact:{object}:follow_up"),
                outcome_key: None,
            }))]
        }
        "deal.propertyChange" => {
            let stage = str_at(event, "/propertyValue").unwrap_or_default();
            if str_at(event, "/propertyName") != Some("dealstage")
                || !config.deal_stages.iter().any(|s| s == stage)
            {
                return Vec::new();
            }
            let urgency = if stage == "contractsent" {
                Urgency::High
            } else {
                Urgency::Medium
            };
            let revenue = match facts.deal_amount_cents {
                Some(cents) => revenue_factor(cents, "usd", "is in this deal"),
                None => Factor::new(40, "a deal is moving forward"),
            };
            vec![Outcome::Propose(Box::new(Plan {
                rule: "growth.deal_follow_up",
                title: format!("Send a follow-up email on deal {object} ({stage})"),
                vertical: Vertical::Growth,
                action_type: "email.send",
                action: json!({
                    "to": { "hubspot_deal_contacts": object },
                    "template": "deal_follow_up",
                    "subject": "Next steps",
                    "body": "Hi,\n\nThanks for the time so far. Is there anything I can answer \
                             to help you decide? Happy to get on a call.\n",
                }),
                reasoning: format!(
                    "Deal {object} moved to {stage}. A prompt follow-up keeps it moving."
                ),
                priority: Priority {
                    revenue,
                    urgency: urgency_factor(urgency, format!("the deal just reached {stage}")),
                    effort: Factor::new(85, "it is one email"),
                    strategic: Factor::new(60, "closing deals is growth"),
                },
                urgency,
                due_by: Some(facts.recorded_at + Duration::days(2)),
                owner: None,
                subject_key: format!("hubspot:deal:{object}:follow_up"),
                outcome_key: None,
            }))]
        }
        _ => Vec::new(),
    }
}
