//! Optional wording by a language model (any OpenAI-compatible chat completions endpoint).
//! It may only rewrite a message's text: the action type, the recipient and every amount,
//! number, date and link stay as the rule wrote them. A rewrite that drops any of them, a
//! slow answer or any failure leaves the rule's own text.

use secrecy::ExposeSecret;
use serde_json::{json, Value};

use crate::config::LlmConfig;

const INSTRUCTIONS: &str = "You improve the wording of short business messages. Rewrite the \
    user's message to be clear, warm and concise. Keep every amount, number, date, name, id, \
    link and email address exactly as written. Do not add facts. Answer with the message only.";

#[derive(Clone)]
pub struct Wording {
    client: reqwest::Client,
    config: LlmConfig,
}

impl Wording {
    pub fn new(config: LlmConfig) -> Self {
        Self {
            client: reqwest::Client::new(),
            config,
        }
    }

    /// The improved text, or `None` to keep the original.
    pub async fn improve(&self, text: &str) -> Option<String> {
        let mut request = self
            .client
            .post(&self.config.url)
            .timeout(self.config.timeout)
            .json(&json!({
                "model": self.config.model,
                "temperature": 0,
                "messages": [
                    { "role": "system", "content": INSTRUCTIONS },
                    { "role": "user", "content": text },
                ],
            }));
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key.expose_secret());
        }
        let answer = async {
            let response = request.send().await.ok()?.error_for_status().ok()?;
            let body: Value = response.json().await.ok()?;
            body.pointer("/choices/0/message/content")?
                .as_str()
                .map(|s| s.trim().to_string())
        }
        .await;
        match answer {
            Some(rewrite) if !rewrite.is_empty() && faithful(text, &rewrite) => Some(rewrite),
            Some(_) => {
                tracing::warn!(
                    "the language model's rewrite changed facts; keeping the rule's text"
                );
                None
            }
            None => {
                tracing::warn!(
                    "the language model did not answer in time; keeping the rule's text"
                );
                None
            }
        }
    }

    /// Improves the `text` (Slack) and `body` (email) of an action; nothing else in it.
    pub async fn improve_action(&self, action: &Value) -> Value {
        let mut action = action.clone();
        for field in ["text", "body"] {
            let Some(original) = action
                .get(field)
                .and_then(Value::as_str)
                .map(str::to_string)
            else {
                continue;
            };
            if let Some(better) = self.improve(&original).await {
                action[field] = Value::String(better);
            }
        }
        action
    }
}

/// `rewrite` keeps every fact of `original` and adds no link, address or mention of its own:
/// a model must not send anyone anywhere the rule did not.
pub fn faithful(original: &str, rewrite: &str) -> bool {
    keeps_facts(original, rewrite) && adds_nothing(original, rewrite)
}

/// Every link, address and mention in `rewrite` is in `original` too, and so is every Slack
/// control sequence (`<!channel>`, `<@U…>`, `<#C…>`, `<http…|…>`).
fn adds_nothing(original: &str, rewrite: &str) -> bool {
    let known = facts(original);
    let pointers = facts(rewrite)
        .into_iter()
        .filter(|f| f.contains("://") || f.contains('@') || f.starts_with("www."));
    let controls = ["<!", "<@", "<#", "<http", "<mailto"];
    pointers.into_iter().all(|p| known.contains(&p))
        && controls
            .iter()
            .all(|c| !rewrite.contains(c) || original.contains(c))
        && rewrite
            .split_whitespace()
            .filter(|w| w.starts_with("www."))
            .all(|w| original.contains(w.trim_end_matches(['.', ',', ';', ':', ')'])))
}

/// Every number, amount, link and address of `original` is still in `rewrite`.
pub fn keeps_facts(original: &str, rewrite: &str) -> bool {
    facts(original)
        .iter()
        .all(|fact| rewrite.contains(fact.as_str()))
}

fn facts(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for token in text.split_whitespace() {
        let token = token.trim_matches(|c: char| {
            matches!(
                c,
                '.' | ',' | ';' | ':' | '!' | '?' | '(' | ')' | '"' | '\''
            )
        });
        if token.contains("://") || token.contains('@') {
            out.push(token.to_string());
            continue;
        }
        // Runs of digits, with the separators that belong to a number or a date.
        let mut current = String::new();
        for c in token.chars() {
            if c.is_ascii_digit()
                || (!current.is_empty() && matches!(c, '.' | ',' | '-' | '/' | ':'))
            {
                current.push(c);
            } else if !current.is_empty() {
                out.push(
                    current
                        .trim_end_matches(['.', ',', '-', '/', ':'])
                        .to_string(),
                );
                current.clear();
            }
        }
        if !current.is_empty() {
            out.push(
                current
                    .trim_end_matches(['.', ',', '-', '/', ':'])
                    .to_string(),
            );
        }
    }
    out.retain(|f| !f.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewrite_that_adds_a_link_an_address_or_a_mention_is_not_faithful() {
        let original =
            "Invoice in_123 for $10.00 failed: https://pay.example/x (jenny@example.com)";
        assert!(faithful(
            original,
            "Heads up: invoice in_123 for $10.00 failed. https://pay.example/x, jenny@example.com"
        ));
        for added in [
            " Pay at https://evil.example/pay",
            " or write to help@evil.example",
            " <!channel>",
            " cc <@U0123>",
            " see <https://evil.example|the invoice>",
            " www.evil.example",
        ] {
            let rewrite = format!(
                "Invoice in_123 for $10.00 failed: https://pay.example/x (jenny@example.com).{added}"
            );
            assert!(!faithful(original, &rewrite), "{added:?} was let through");
        }
    }

    #[test]
    fn a_rewrite_must_keep_amounts_dates_links_and_addresses() {
        let original = "We couldn't collect $1,000.00 for invoice in_123 due 2024-07-29: https://pay.example/x (jenny@example.com)";
        assert!(keeps_facts(
            original,
            "Hello! Your payment of $1,000.00 for invoice in_123 (due 2024-07-29) did not go through. Update it at https://pay.example/x, jenny@example.com."
        ));
        assert!(!keeps_facts(original, "We couldn't collect $100.00 for invoice in_123 due 2024-07-29: https://pay.example/x (jenny@example.com)"));
        assert!(!keeps_facts(
            original,
            "We couldn't collect $1,000.00 for invoice in_123 due 2024-07-29 (jenny@example.com)"
        ));
    }
}
