//! Plain words to one of the canvas's queries and its parameters. A deterministic matcher
//! does it by default: keywords choose the query, phrases like "last quarter", "top 5",
//! "weekly", "in eur" or "vendor AWS" fill the parameters. With `EXECOPS_LLM_URL` set, a
//! language model may choose instead, but only among the same queries, and its parameters go
//! through the same validation; whatever it answers that is not that falls back to the
//! matcher. Nothing here ever becomes SQL.

use chrono::{Datelike, Duration, Months, NaiveDate};
use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::{json, Value};

use super::{ParamError, Params, QueryName, RawParams};
use crate::config::LlmConfig;

/// The longest question read, in characters.
pub const LONGEST: usize = 300;

/// What a question was taken to mean.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Understood {
    pub query: QueryName,
    pub params: Params,
    /// Who chose: `matcher` or `language model`.
    pub by: &'static str,
}

impl Understood {
    /// "spend_by_vendor from 2026-08-01 to 2026-11-22 by month, top 5".
    pub fn explain(&self) -> String {
        let p = &self.params;
        let mut text = format!(
            "{} from {} to {} by {}",
            self.query,
            p.from,
            p.to,
            p.granularity.as_str()
        );
        if let Some(currency) = &p.currency {
            text.push_str(&format!(", in {}", currency.to_ascii_uppercase()));
        }
        if let Some(vendor) = &p.vendor {
            text.push_str(&format!(", vendor {vendor:?}"));
        }
        if self.query == QueryName::SpendByVendor {
            text.push_str(&format!(", top {}", p.top));
        }
        text
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NotUnderstood {
    #[error("ask something first")]
    Empty,
    #[error("the question is longer than {LONGEST} characters")]
    TooLong,
    #[error("none of the questions the canvas answers matches that")]
    NoQuery,
    #[error(transparent)]
    Params(#[from] ParamError),
}

/// Keywords per query, with weights; the best total wins, ties go to the earlier query.
const KEYWORDS: &[(QueryName, &[(&str, u32)])] = &[
    (
        QueryName::Runway,
        &[
            ("runway", 5),
            ("cash left", 4),
            ("run out", 4),
            ("months left", 4),
            ("how long", 2),
            ("cash", 1),
        ],
    ),
    (
        QueryName::FailedPayments,
        &[
            ("dunning", 5),
            ("failed payment", 5),
            ("failed", 2),
            ("declin", 3),
            ("unpaid", 3),
            ("recover", 2),
            ("overdue", 2),
        ],
    ),
    (
        QueryName::Mrr,
        &[
            ("mrr", 5),
            ("recurring", 4),
            ("arr", 3),
            ("subscription", 3),
            ("churn", 3),
            ("expansion", 3),
        ],
    ),
    (
        QueryName::SpendByVendor,
        &[
            ("vendor", 5),
            ("spending more", 4),
            ("spend on", 4),
            ("spending on", 4),
            ("supplier", 4),
            ("who are we", 2),
            ("spend", 2),
            ("costs", 1),
        ],
    ),
    (
        QueryName::Burn,
        &[
            ("burn", 5),
            ("outflow", 4),
            ("net", 1),
            ("spend per month", 3),
            ("losing", 2),
        ],
    ),
    (
        QueryName::ApprovalLatency,
        &[
            ("latency", 5),
            ("how fast", 4),
            ("how quickly", 4),
            ("time to decide", 5),
            ("time to decision", 5),
            ("decide", 2),
            ("slow", 2),
        ],
    ),
    (
        QueryName::Precision,
        &[
            ("precision", 5),
            ("reject", 3),
            ("approval rate", 4),
            ("approve", 2),
            ("useful", 2),
        ],
    ),
    (
        QueryName::Outcomes,
        &[
            ("outcome", 5),
            ("achieve", 4),
            ("impact", 3),
            ("worked", 2),
            ("result", 2),
        ],
    ),
    (
        QueryName::ExecutionSuccess,
        &[
            ("execution", 4),
            ("integration", 4),
            ("adapter", 5),
            ("succeed", 2),
            ("errors", 2),
            ("work?", 1),
        ],
    ),
];

const CURRENCIES: &[&str] = &[
    "usd", "eur", "gbp", "chf", "cad", "aud", "jpy", "sek", "nok", "dkk", "nzd", "sgd", "inr",
    "brl", "mxn", "pln", "czk", "hkd", "zar",
];

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

fn first_of_month(day: NaiveDate) -> NaiveDate {
    day.with_day(1).unwrap_or(day)
}

fn month_end(first: NaiveDate) -> NaiveDate {
    first
        .checked_add_months(Months::new(1))
        .map(|next| next - Duration::days(1))
        .unwrap_or(first)
}

fn quarter_start(day: NaiveDate) -> NaiveDate {
    let month = (day.month0() / 3) * 3 + 1;
    NaiveDate::from_ymd_opt(day.year(), month, 1).unwrap_or(day)
}

/// The period a phrase names, if any: (from, to).
fn period(text: &str, today: NaiveDate) -> Option<(NaiveDate, NaiveDate)> {
    let words: Vec<&str> = text
        .split(|c: char| !c.is_alphanumeric() && c != '-')
        .filter(|w| !w.is_empty())
        .collect();
    let dates: Vec<NaiveDate> = words
        .iter()
        .filter_map(|w| NaiveDate::parse_from_str(w, "%Y-%m-%d").ok())
        .collect();
    match dates.as_slice() {
        [from, to, ..] => return Some(((*from).min(*to), (*from).max(*to))),
        [since] if text.contains("since") || text.contains("from") => return Some((*since, today)),
        _ => {}
    }
    let this_month = first_of_month(today);
    if text.contains("this month") || text.contains("month to date") {
        return Some((this_month, today));
    }
    if text.contains("last month") {
        let start = this_month.checked_sub_months(Months::new(1))?;
        return Some((start, month_end(start)));
    }
    if text.contains("this quarter") {
        return Some((quarter_start(today), today));
    }
    if text.contains("last quarter") {
        let start = quarter_start(today).checked_sub_months(Months::new(3))?;
        return Some((start, quarter_start(today) - Duration::days(1)));
    }
    if text.contains("this year") || text.contains("year to date") || text.contains("ytd") {
        return Some((NaiveDate::from_ymd_opt(today.year(), 1, 1)?, today));
    }
    if text.contains("last year") {
        let year = today.year() - 1;
        return Some((
            NaiveDate::from_ymd_opt(year, 1, 1)?,
            NaiveDate::from_ymd_opt(year, 12, 31)?,
        ));
    }
    // "last 6 months", "past 2 weeks", "last 30 days"
    for (i, word) in words.iter().enumerate() {
        if !matches!(*word, "last" | "past") {
            continue;
        }
        let Some(n) = words.get(i + 1).and_then(|w| w.parse::<u32>().ok()) else {
            continue;
        };
        let n = n.min(120);
        let unit = words.get(i + 2).copied().unwrap_or_default();
        let from = if unit.starts_with("month") {
            this_month.checked_sub_months(Months::new(n.saturating_sub(1)))?
        } else if unit.starts_with("week") {
            today - Duration::weeks(i64::from(n))
        } else if unit.starts_with("day") {
            today - Duration::days(i64::from(n))
        } else {
            continue;
        };
        return Some((from, today));
    }
    // "in october", "in march 2026"
    for (i, word) in words.iter().enumerate() {
        if let Some(index) = MONTHS.iter().position(|m| m == word) {
            let year = words
                .get(i + 1)
                .and_then(|w| w.parse::<i32>().ok())
                .filter(|y| (2000..2100).contains(y))
                .unwrap_or_else(|| {
                    if index as u32 + 1 > today.month() {
                        today.year() - 1
                    } else {
                        today.year()
                    }
                });
            let start = NaiveDate::from_ymd_opt(year, index as u32 + 1, 1)?;
            return Some((start, month_end(start).min(today.max(start))));
        }
    }
    None
}

/// The deterministic reading of `question`.
pub fn understand(question: &str, today: NaiveDate) -> Result<Understood, NotUnderstood> {
    let question = question.trim();
    if question.is_empty() {
        return Err(NotUnderstood::Empty);
    }
    if question.chars().count() > LONGEST {
        return Err(NotUnderstood::TooLong);
    }
    let text = question.to_lowercase();
    let padded = format!(" {text} ");
    let mut best: Option<(QueryName, u32)> = None;
    for (query, keywords) in KEYWORDS {
        let score: u32 = keywords
            .iter()
            .filter(|(word, _)| {
                // Short words only as whole words: "arr" is not "arrears".
                if word.len() <= 3 {
                    padded
                        .split(|c: char| !c.is_alphanumeric())
                        .any(|w| w == *word)
                } else {
                    text.contains(word)
                }
            })
            .map(|(_, weight)| weight)
            .sum();
        if score > 0 && best.is_none_or(|(_, b)| score > b) {
            best = Some((*query, score));
        }
    }
    let (query, _) = best.ok_or(NotUnderstood::NoQuery)?;

    let mut raw = RawParams::default();
    if let Some((from, to)) = period(&text, today) {
        raw.from = Some(from.to_string());
        raw.to = Some(to.to_string());
    } else if query == QueryName::SpendByVendor {
        // "Who are we spending more on?" means this month against the months before.
        raw.from = Some(first_of_month(today).to_string());
    }
    if text.contains("weekly") || text.contains("by week") || text.contains("per week") {
        raw.granularity = Some("week".into());
    } else if text.contains("daily") || text.contains("by day") || text.contains("per day") {
        raw.granularity = Some("day".into());
    }
    let words: Vec<&str> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    if let Some(currency) = words.iter().find(|w| CURRENCIES.contains(w)) {
        raw.currency = Some(currency.to_string());
    }
    if let Some(i) = words.iter().position(|w| *w == "top") {
        if let Some(n) = words.get(i + 1).filter(|w| w.parse::<u32>().is_ok()) {
            raw.top = Some(n.to_string());
        }
    }
    // A vendor in quotes, or the words after "vendor".
    let original: Vec<&str> = question.split('"').collect();
    if original.len() >= 3 {
        raw.vendor = Some(original[1].to_string());
    } else if let Some(at) = text.find("vendor ") {
        let rest = &question[at + "vendor ".len()..];
        let name: String = rest
            .split(['?', ',', '.'])
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        if !name.is_empty() {
            raw.vendor = Some(name);
        }
    }
    let params = Params::parse(&raw, today)?;
    Ok(Understood {
        query,
        params,
        by: "matcher",
    })
}

/// Asks the language model to choose a query and its parameters for `question`; `None` when
/// it does not answer in time or answers anything but a whitelisted query with valid
/// parameters.
pub async fn ask_model(
    config: &LlmConfig,
    client: &reqwest::Client,
    question: &str,
    today: NaiveDate,
) -> Option<Understood> {
    if question.trim().is_empty() || question.chars().count() > LONGEST {
        return None;
    }
    let menu: Vec<String> = QueryName::ALL
        .iter()
        .map(|q| format!("{}: {}", q.as_str(), q.describe().0))
        .collect();
    let instructions = format!(
        "You route a founder's question to one analytics query. Today is {today}. The queries \
         are:\n{}\nAnswer with one JSON object and nothing else: {{\"query\": one of the names \
         above, \"from\": \"YYYY-MM-DD\" or null, \"to\": \"YYYY-MM-DD\" or null, \
         \"granularity\": \"day\"|\"week\"|\"month\" or null, \"vendor\": string or null, \
         \"currency\": three-letter code or null, \"top\": number or null}}.",
        menu.join("\n")
    );
    let mut request = client
        .post(&config.url)
        .timeout(config.timeout)
        .json(&json!({
            "model": config.model,
            "temperature": 0,
            "messages": [
                { "role": "system", "content": instructions },
                { "role": "user", "content": question },
            ],
        }));
    if let Some(key) = &config.api_key {
        request = request.bearer_auth(key.expose_secret());
    }
    let response = request.send().await.ok()?.error_for_status().ok()?;
    let body: Value = response.json().await.ok()?;
    let content = body.pointer("/choices/0/message/content")?.as_str()?;
    let start = content.find('{')?;
    let end = content.rfind('}')?;
    let choice: Value = serde_json::from_str(content.get(start..=end)?).ok()?;
    let query = QueryName::parse(choice.get("query")?.as_str()?)?;
    let text = |key: &str| match choice.get(key) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let raw = RawParams {
        from: text("from"),
        to: text("to"),
        granularity: text("granularity"),
        vendor: text("vendor"),
        currency: text("currency"),
        top: text("top"),
    };
    let params = Params::parse(&raw, today).ok()?;
    Some(Understood {
        query,
        params,
        by: "language model",
    })
}

/// The model's reading when one is configured and gives a valid one; else the matcher's.
pub async fn interpret(
    llm: Option<(&LlmConfig, &reqwest::Client)>,
    question: &str,
    today: NaiveDate,
) -> Result<Understood, NotUnderstood> {
    if let Some((config, client)) = llm {
        if let Some(understood) = ask_model(config, client, question, today).await {
            return Ok(understood);
        }
        tracing::warn!("the language model gave no usable reading; using the matcher");
    }
    understand(question, today)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canvas::Granularity;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_default()
    }

    const TODAY: &str = "2026-11-22";

    #[test]
    fn questions_founders_ask_find_their_query_and_period() {
        let cases: &[(&str, QueryName, &str, &str)] = &[
            (
                "what's our runway?",
                QueryName::Runway,
                "2026-08-01",
                "2026-11-22",
            ),
            (
                "How much cash left?",
                QueryName::Runway,
                "2026-08-01",
                "2026-11-22",
            ),
            (
                "what is our monthly burn this year",
                QueryName::Burn,
                "2026-01-01",
                "2026-11-22",
            ),
            (
                "how did MRR move last quarter",
                QueryName::Mrr,
                "2026-07-01",
                "2026-09-30",
            ),
            (
                "how much did dunning recover last month?",
                QueryName::FailedPayments,
                "2026-10-01",
                "2026-10-31",
            ),
            (
                "failed payments since 2026-06-15",
                QueryName::FailedPayments,
                "2026-06-15",
                "2026-11-22",
            ),
            (
                "who are we spending more on?",
                QueryName::SpendByVendor,
                "2026-11-01",
                "2026-11-22",
            ),
            (
                "spend by vendor in october",
                QueryName::SpendByVendor,
                "2026-10-01",
                "2026-10-31",
            ),
            (
                "how fast do we decide, last 30 days",
                QueryName::ApprovalLatency,
                "2026-10-23",
                "2026-11-22",
            ),
            (
                "which proposals do we reject most",
                QueryName::Precision,
                "2026-08-01",
                "2026-11-22",
            ),
            (
                "what did the approved actions achieve this quarter",
                QueryName::Outcomes,
                "2026-10-01",
                "2026-11-22",
            ),
            (
                "do our integrations work? last 2 weeks",
                QueryName::ExecutionSuccess,
                "2026-11-08",
                "2026-11-22",
            ),
            (
                "churn between 2026-03-01 and 2026-01-01",
                QueryName::Mrr,
                "2026-01-01",
                "2026-03-01",
            ),
            (
                "spend in december",
                QueryName::SpendByVendor,
                "2025-12-01",
                "2025-12-31",
            ),
        ];
        for (question, query, from, to) in cases {
            let understood = understand(question, day(TODAY));
            let got = understood
                .as_ref()
                .map(|u| (u.query, u.params.from.to_string(), u.params.to.to_string()))
                .map_err(|e| e.to_string());
            assert_eq!(
                got,
                Ok((*query, from.to_string(), to.to_string())),
                "{question}"
            );
        }
    }

    #[test]
    fn parameters_come_from_the_words() {
        let u = understand(
            "top 3 vendors weekly in EUR, vendor Amazon Web Services?",
            day(TODAY),
        );
        let u = u.ok();
        let params = u.as_ref().map(|u| &u.params);
        assert_eq!(params.map(|p| p.top), Some(3));
        assert_eq!(params.map(|p| p.granularity), Some(Granularity::Week));
        assert_eq!(
            params.and_then(|p| p.currency.clone()).as_deref(),
            Some("eur")
        );
        assert_eq!(
            params.and_then(|p| p.vendor.clone()).as_deref(),
            Some("Amazon Web Services")
        );
        assert_eq!(
            u.map(|u| u.explain()).as_deref(),
            Some("spend_by_vendor from 2026-11-01 to 2026-11-22 by week, in EUR, vendor \"Amazon Web Services\", top 3")
        );
        let quoted = understand("spend with \"O'Brien & Co\" last month", day(TODAY)).ok();
        assert_eq!(
            quoted.and_then(|u| u.params.vendor).as_deref(),
            Some("O'Brien & Co")
        );
    }

    #[test]
    fn what_it_cannot_read_is_refused_clearly() {
        let cases: &[(&str, &str)] = &[
            ("", "ask something first"),
            ("   ", "ask something first"),
            (
                "what is the meaning of life",
                "none of the questions the canvas answers matches that",
            ),
            (
                "'; DROP TABLE events; --",
                "none of the questions the canvas answers matches that",
            ),
            ("runway; SELECT * FROM users", ""),
            (
                "spend top 0",
                "top: \"0\" is not a whole number from 1 to 50",
            ),
            (
                "spend top 999",
                "top: \"999\" is not a whole number from 1 to 50",
            ),
            (
                "burn since 1999-01-01",
                "from: 1999-01-01 is outside 2000-01-01 to 2099-12-31",
            ),
        ];
        for (question, expected) in cases {
            let got = understand(question, day(TODAY))
                .err()
                .map(|e| e.to_string());
            if expected.is_empty() {
                // Understood, but only as the whitelisted query: the rest is ignored.
                assert_eq!(
                    understand(question, day(TODAY)).ok().map(|u| u.query),
                    Some(QueryName::Runway),
                    "{question}"
                );
            } else {
                assert_eq!(got.as_deref(), Some(*expected), "{question}");
            }
        }
        let long = "runway ".repeat(60);
        assert_eq!(understand(&long, day(TODAY)), Err(NotUnderstood::TooLong));
    }
}
