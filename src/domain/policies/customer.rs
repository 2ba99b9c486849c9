//! Customer: a conversation whose words mean churn, a refund or anger, or that is flagged as
//! a priority, calls for an alert to the owner and a reply from the template.

use serde_json::{json, Value};

use super::{slack_escape, str_at, Facts, Outcome, Plan, PolicyConfig};
use crate::domain::inbound::Signal;
use crate::domain::priority::{urgency_factor, Factor, Priority};
use crate::domain::values::{Urgency, Vertical};

pub(super) fn intercom(signal: &Signal, _facts: &Facts, config: &PolicyConfig) -> Vec<Outcome> {
    if !matches!(
        signal.kind.as_str(),
        "conversation.user.created" | "conversation.user.replied"
    ) {
        return Vec::new();
    }
    let item = signal
        .payload
        .pointer("/data/item")
        .cloned()
        .unwrap_or(Value::Null);
    let Some(conversation) = item.get("id").and_then(|v| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }) else {
        return Vec::new();
    };
    let text = strip_tags(&latest_message(&item));
    let lowered = text.to_lowercase();
    let words: Vec<&str> = config
        .churn_keywords
        .iter()
        .map(String::as_str)
        .filter(|k| lowered.contains(&k.to_lowercase()))
        .collect();
    let flagged = str_at(&item, "/priority") == Some("priority");
    if words.is_empty() && !flagged {
        return Vec::new();
    }
    let name = str_at(&item, "/user/name")
        .or_else(|| str_at(&item, "/source/author/name"))
        .unwrap_or("A customer");
    let (to, who) =
        match str_at(&item, "/user/email").or_else(|| str_at(&item, "/source/author/email")) {
            Some(email) => (json!({ "email": email }), email.to_string()),
            None => {
                let user = str_at(&item, "/user/id").unwrap_or("unknown");
                (
                    json!({ "intercom_user": user }),
                    format!("Intercom user {user}"),
                )
            }
        };
    let why = if words.is_empty() {
        "the conversation is flagged as a priority".to_string()
    } else {
        format!("their message says \"{}\"", words.join("\", \""))
    };
    let quote: String = text.chars().take(280).collect();
    let priority = |effort: Factor| Priority {
        revenue: Factor::new(40, "an unhappy customer may cancel"),
        urgency: urgency_factor(
            Urgency::High,
            format!("{why}, and answers within the hour save accounts"),
        ),
        effort,
        strategic: Factor::new(70, "a customer who feels heard stays"),
    };
    let reasoning = format!("{name} wrote in and {why}: \"{quote}\"");
    vec![
        Outcome::Propose(Box::new(Plan {
            rule: "customer.owner_alert",
            title: format!("Alert the owner: {name} sounds unhappy"),
            vertical: Vertical::Customer,
            action_type: "slack.post_message",
            action: json!({
                "channel": config.owner_slack,
                "text": slack_escape(&format!("{name} ({who}) in conversation {conversation}: \"{quote}\"")),
            }),
            reasoning: reasoning.clone(),
            priority: priority(Factor::new(95, "it is one Slack message")),
            urgency: Urgency::High,
            due_by: None,
            owner: Some(config.owner_slack.clone()),
            subject_key: format!("intercom:conversation:{conversation}:alert"),
            outcome_key: None,
        })),
        Outcome::Propose(Box::new(Plan {
            rule: "customer.template_reply",
            title: format!("Reply to {name} with the care template"),
            vertical: Vertical::Customer,
            action_type: "email.send",
            action: json!({
                "to": to,
                "template": "care_reply",
                "subject": "We're on it",
                "body": format!(
                    "Hi {name},\n\nThank you for telling us, and I'm sorry for the trouble. \
                     I've read your message myself and we're on it; you'll hear from me \
                     again today.\n"
                ),
                "conversation": conversation,
            }),
            reasoning,
            priority: priority(Factor::new(85, "it is one email from a template")),
            urgency: Urgency::High,
            due_by: None,
            owner: None,
            subject_key: format!("intercom:conversation:{conversation}:reply"),
            outcome_key: None,
        })),
    ]
}

/// The newest thing the customer said: the last reply part, else the opening message.
fn latest_message(item: &Value) -> String {
    let parts = item
        .pointer("/conversation_parts/conversation_parts")
        .and_then(Value::as_array);
    if let Some(body) = parts.and_then(|p| p.iter().rev().find_map(|part| str_at(part, "/body"))) {
        return body.to_string();
    }
    str_at(item, "/conversation_message/body")
        .or_else(|| str_at(item, "/source/body"))
        .unwrap_or_default()
        .to_string()
}

fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}
