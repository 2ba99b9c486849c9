//! What an action does, at a glance: who or what it reaches, its subject, its first lines
//! and its amount. Every surface that asks for a decision (an inbox card, a Slack message,
//! an email) shows this without a click, and the decision it carries binds the payload hash
//! of the very action this was read from.

use serde_json::Value;

use crate::domain::priority::money;

/// Lines of a body or message shown.
const LINES: usize = 3;
/// Characters of one line, or of a subject, shown.
const WIDTH: usize = 200;

/// One action, summed up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Glance {
    /// Who or what the action reaches: "email to ada@example.com", "Slack channel C123",
    /// "GitHub repository acme/app", "Stripe invoice in_1", "webhook target crm".
    pub to: String,
    /// An email's subject or an issue's title.
    pub subject: Option<String>,
    /// The first lines of the body or text, blank lines left out, each clipped.
    pub lines: Vec<String>,
    /// The amount the action moves, with its currency.
    pub amount: Option<String>,
    /// Whether the body or text has lines past those shown (a clipped line ends in "…").
    pub more: bool,
}

impl Glance {
    /// The first lines, one per line.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

fn text<'a>(action: &'a Value, name: &str) -> Option<&'a str> {
    action.get(name).and_then(Value::as_str)
}

/// Clips `text` at `max` characters, marking the cut.
pub fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// An amount with its currency's code: `$12.00 USD`, `1,234.56 SEK`.
pub fn amount(cents: i64, currency: &str) -> String {
    let shown = money(cents, currency);
    let code = currency.to_ascii_uppercase();
    if shown.ends_with(&code) {
        shown
    } else {
        format!("{shown} {code}")
    }
}

/// Who an email action writes to, in words.
fn email_recipient(action: &Value) -> String {
    let to = action.get("to");
    let field = |name: &str| to.and_then(|to| text(to, name));
    if let Some(address) = to.and_then(Value::as_str).or_else(|| field("email")) {
        return format!("email to {address}");
    }
    for (key, words) in [
        ("stripe_customer", "Stripe customer"),
        ("intercom_user", "Intercom user"),
        ("hubspot_contact", "HubSpot contact"),
        ("hubspot_deal_contacts", "the contacts of HubSpot deal"),
    ] {
        if let Some(id) = field(key) {
            return format!("email to {words} {id}");
        }
    }
    "email to no recipient".to_string()
}

/// The action `action_type` with `action` as its payload, summed up. An action of a type
/// no adapter knows shows its type and no lines.
pub fn glance(action_type: &str, action: &Value) -> Glance {
    let (to, subject, body) = match action_type {
        "email.send" => (
            email_recipient(action),
            text(action, "subject"),
            text(action, "body"),
        ),
        "slack.post_message" => (
            format!(
                "Slack {}",
                text(action, "channel").unwrap_or("(no channel)")
            ),
            None,
            text(action, "text"),
        ),
        "github.create_issue" => (
            format!(
                "GitHub repository {}",
                text(action, "repo").unwrap_or("(none)")
            ),
            text(action, "title"),
            text(action, "body"),
        ),
        "stripe.retry_invoice" => (
            format!(
                "Stripe invoice {}",
                text(action, "invoice").unwrap_or("(none)")
            ),
            None,
            None,
        ),
        "webhook.post" => (
            format!(
                "webhook target {}",
                text(action, "target").unwrap_or("(none)")
            ),
            text(action, "type"),
            None,
        ),
        other => (other.to_string(), None, None),
    };
    let mut lines = body
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty());
    let shown: Vec<String> = lines
        .by_ref()
        .take(LINES)
        .map(|line| clip(line, WIDTH))
        .collect();
    let more = lines.next().is_some();
    let amount = match (
        action.get("amount_cents").and_then(Value::as_i64),
        text(action, "currency"),
    ) {
        (Some(cents), Some(currency)) => Some(amount(cents, currency)),
        _ => None,
    };
    Glance {
        to,
        subject: subject.map(|s| clip(s, WIDTH)),
        lines: shown,
        amount,
        more,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_action_type_shows_whom_it_reaches_its_subject_lines_and_amount() {
        let long = "x".repeat(300);
        for (action_type, action, to, subject, lines, amount, more) in [
            (
                "email.send",
                json!({"to": "ada@example.com", "subject": "Your payment", "body": "Hi,\n\nWe couldn't collect $12.00.\nPlease update your card.\nThank you!"}),
                "email to ada@example.com",
                Some("Your payment"),
                vec![
                    "Hi,",
                    "We couldn't collect $12.00.",
                    "Please update your card.",
                ],
                None,
                true,
            ),
            (
                "email.send",
                json!({"to": {"stripe_customer": "cus_1"}, "subject": "S", "body": "B"}),
                "email to Stripe customer cus_1",
                Some("S"),
                vec!["B"],
                None,
                false,
            ),
            (
                "slack.post_message",
                json!({"channel": "#founders", "text": long}),
                "Slack #founders",
                None,
                vec![&*format!("{}…", "x".repeat(200))],
                None,
                false,
            ),
            (
                "github.create_issue",
                json!({"repo": "acme/app", "title": "main is red", "body": "CI failed on abc123"}),
                "GitHub repository acme/app",
                Some("main is red"),
                vec!["CI failed on abc123"],
                None,
                false,
            ),
            (
                "stripe.retry_invoice",
                json!({"invoice": "in_1", "amount_cents": 1200, "currency": "usd"}),
                "Stripe invoice in_1",
                None,
                vec![],
                Some("$12.00 USD"),
                false,
            ),
            (
                "webhook.post",
                json!({"target": "crm", "type": "lead.hot", "data": {}}),
                "webhook target crm",
                Some("lead.hot"),
                vec![],
                None,
                false,
            ),
        ] {
            let seen = glance(action_type, &action);
            assert_eq!(seen.to, to, "{action_type}");
            assert_eq!(seen.subject.as_deref(), subject, "{action_type}");
            assert_eq!(seen.lines, lines, "{action_type}");
            assert_eq!(seen.amount.as_deref(), amount, "{action_type}");
            assert_eq!(seen.more, more, "{action_type}");
        }
    }
}
