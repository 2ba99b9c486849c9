//! The canvas: read-only answers to a fixed set of questions about money, spend and
//! decisions. Each question is a typed query ([`QueryName`]) with validated parameters
//! ([`Params`]); nothing a person types becomes SQL. [`question`] maps plain words to a query,
//! [`queries`] runs it against the canvas projections, [`chart`] draws the answer as SVG.

pub mod chart;
pub mod question;

use chrono::{Datelike, Months, NaiveDate};
use serde::{Deserialize, Serialize};

pub mod queries;

/// Every question the canvas can answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryName {
    Runway,
    Burn,
    Mrr,
    FailedPayments,
    SpendByVendor,
    ApprovalLatency,
    Precision,
    Outcomes,
    ExecutionSuccess,
}

impl QueryName {
    pub const ALL: [QueryName; 9] = [
        QueryName::Runway,
        QueryName::Burn,
        QueryName::Mrr,
        QueryName::FailedPayments,
        QueryName::SpendByVendor,
        QueryName::ApprovalLatency,
        QueryName::Precision,
        QueryName::Outcomes,
        QueryName::ExecutionSuccess,
    ];

    /// The name in URLs, the CLI and JSON: `spend_by_vendor`.
    pub fn as_str(self) -> &'static str {
        match self {
            QueryName::Runway => "runway",
            QueryName::Burn => "burn",
            QueryName::Mrr => "mrr",
            QueryName::FailedPayments => "failed_payments",
            QueryName::SpendByVendor => "spend_by_vendor",
            QueryName::ApprovalLatency => "approval_latency",
            QueryName::Precision => "precision",
            QueryName::Outcomes => "outcomes",
            QueryName::ExecutionSuccess => "execution_success",
        }
    }

    pub fn parse(name: &str) -> Option<QueryName> {
        QueryName::ALL.into_iter().find(|q| q.as_str() == name)
    }

    /// What it answers, and a question that asks for it.
    pub fn describe(self) -> (&'static str, &'static str) {
        match self {
            QueryName::Runway => (
                "months of cash left at the recent net burn, and the figures it used",
                "what's our runway?",
            ),
            QueryName::Burn => (
                "net outflow per month: spend and payouts out, revenue in",
                "what is our monthly burn?",
            ),
            QueryName::Mrr => (
                "monthly recurring revenue and its movements: new, expansion, contraction, churn",
                "how did MRR move this quarter?",
            ),
            QueryName::FailedPayments => (
                "failed payments: how many, how much, and the share recovered since",
                "how much did dunning recover?",
            ),
            QueryName::SpendByVendor => (
                "spend per vendor in the period, top N, against each vendor's trailing average",
                "who are we spending more on?",
            ),
            QueryName::ApprovalLatency => (
                "time from a proposal to its decision, p50 and p90, per action type",
                "how fast do we decide?",
            ),
            QueryName::Precision => (
                "share of decided proposals approved, per action type",
                "which proposals do we reject?",
            ),
            QueryName::Outcomes => (
                "outcomes attributed to executed proposals (recovered revenue, fixed builds), per action type",
                "what did the approved actions achieve?",
            ),
            QueryName::ExecutionSuccess => (
                "executions that succeeded, failed or were left uncertain, per adapter",
                "do our integrations work?",
            ),
        }
    }
}

impl std::fmt::Display for QueryName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How finely a series is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    Day,
    Week,
    Month,
}

impl Granularity {
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Day => "day",
            Granularity::Week => "week",
            Granularity::Month => "month",
        }
    }
}

/// Parameters as they arrive (query string, CLI flags, a language model's reply): text to
/// be validated by [`Params::parse`].
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct RawParams {
    pub from: Option<String>,
    pub to: Option<String>,
    pub granularity: Option<String>,
    pub vendor: Option<String>,
    pub currency: Option<String>,
    pub top: Option<String>,
}

/// Validated parameters. Dates are whole days, `from` inclusive and `to` inclusive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Params {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub granularity: Granularity,
    /// One vendor, matched case-insensitively (spend_by_vendor).
    pub vendor: Option<String>,
    /// Three lower-case letters (`usd`); `None` keeps every currency, each apart.
    pub currency: Option<String>,
    /// How many rows a ranking keeps, 1 to 50.
    pub top: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("{0}: {1:?} is not a date (YYYY-MM-DD)")]
    Date(&'static str, String),
    #[error("{0}: {1} is outside 2000-01-01 to 2099-12-31")]
    OutOfRange(&'static str, NaiveDate),
    #[error("from ({0}) is after to ({1})")]
    Reversed(NaiveDate, NaiveDate),
    #[error("the period is longer than ten years")]
    TooLong,
    #[error("granularity: {0:?} is not day, week or month")]
    Granularity(String),
    #[error("currency: {0:?} is not a three-letter ISO code such as usd")]
    Currency(String),
    #[error("vendor: {0}")]
    Vendor(&'static str),
    #[error("top: {0:?} is not a whole number from 1 to 50")]
    Top(String),
}

const LONGEST_DAYS: i64 = 3_660;

fn date(field: &'static str, raw: &str) -> Result<NaiveDate, ParamError> {
    let day = NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d")
        .map_err(|_| ParamError::Date(field, raw.chars().take(40).collect()))?;
    let (first, last) = (
        NaiveDate::from_ymd_opt(2000, 1, 1),
        NaiveDate::from_ymd_opt(2099, 12, 31),
    );
    if first.is_some_and(|f| day < f) || last.is_some_and(|l| day > l) {
        return Err(ParamError::OutOfRange(field, day));
    }
    Ok(day)
}

impl Params {
    /// The defaults: the last three whole months and this one, by month, every currency,
    /// top 10.
    pub fn defaults(today: NaiveDate) -> Params {
        let this_month = today.with_day(1).unwrap_or(today);
        Params {
            from: this_month
                .checked_sub_months(Months::new(3))
                .unwrap_or(this_month),
            to: today,
            granularity: Granularity::Month,
            vendor: None,
            currency: None,
            top: 10,
        }
    }

    /// Validates `raw`; what it leaves out takes the [`Params::defaults`] of `today`.
    pub fn parse(raw: &RawParams, today: NaiveDate) -> Result<Params, ParamError> {
        fn given(v: &Option<String>) -> Option<&str> {
            v.as_deref().map(str::trim).filter(|v| !v.is_empty())
        }
        let mut params = Params::defaults(today);
        if let Some(to) = given(&raw.to) {
            params.to = date("to", to)?;
        }
        if let Some(from) = given(&raw.from) {
            params.from = date("from", from)?;
        } else if params.from > params.to {
            params.from = params.to.with_day(1).unwrap_or(params.to);
        }
        if params.from > params.to {
            return Err(ParamError::Reversed(params.from, params.to));
        }
        if (params.to - params.from).num_days() > LONGEST_DAYS {
            return Err(ParamError::TooLong);
        }
        if let Some(granularity) = given(&raw.granularity) {
            params.granularity = match granularity.to_ascii_lowercase().as_str() {
                "day" | "daily" => Granularity::Day,
                "week" | "weekly" => Granularity::Week,
                "month" | "monthly" => Granularity::Month,
                _ => {
                    return Err(ParamError::Granularity(
                        granularity.chars().take(40).collect(),
                    ))
                }
            };
        }
        if let Some(currency) = given(&raw.currency) {
            let lower = currency.to_ascii_lowercase();
            if lower.len() != 3 || !lower.bytes().all(|b| b.is_ascii_lowercase()) {
                return Err(ParamError::Currency(currency.chars().take(40).collect()));
            }
            params.currency = Some(lower);
        }
        if let Some(vendor) = given(&raw.vendor) {
            if vendor.chars().count() > 100 {
                return Err(ParamError::Vendor("longer than 100 characters"));
            }
            if vendor.chars().any(char::is_control) {
                return Err(ParamError::Vendor("contains control characters"));
            }
            params.vendor = Some(vendor.to_string());
        }
        if let Some(top) = given(&raw.top) {
            params.top = top
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=50).contains(n))
                .ok_or_else(|| ParamError::Top(top.chars().take(40).collect()))?;
        }
        Ok(params)
    }
}

/// One value in an answer. Money stays in integer minor units with its currency.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Cell {
    Text {
        value: String,
    },
    Count {
        value: i64,
    },
    Money {
        minor: i64,
        currency: String,
    },
    /// Basis points: 1234 is 12.34 %.
    Percent {
        basis_points: i64,
    },
    /// A duration in seconds.
    Seconds {
        value: i64,
    },
    /// Tenths: 65 is 6.5 (months of runway).
    Tenths {
        value: i64,
    },
    Date {
        value: NaiveDate,
    },
    Empty,
}

impl Cell {
    /// As people read it: `$1,234.50`, `12.3 %`, `2h 05m`.
    pub fn display(&self) -> String {
        match self {
            Cell::Text { value } => value.clone(),
            Cell::Count { value } => group(*value),
            Cell::Money { minor, currency } => money(*minor, currency),
            Cell::Percent { basis_points } => {
                format!(
                    "{}.{} %",
                    basis_points / 100,
                    (basis_points % 100).abs() / 10
                )
            }
            Cell::Seconds { value } => duration(*value),
            Cell::Tenths { value } => format!("{}.{}", value / 10, (value % 10).abs()),
            Cell::Date { value } => value.to_string(),
            Cell::Empty => String::new(),
        }
    }

    /// As a spreadsheet wants it: plain numbers, money in major units with its currency
    /// in its own column.
    pub fn csv(&self) -> String {
        match self {
            Cell::Money { minor, .. } => {
                let sign = if *minor < 0 { "-" } else { "" };
                format!("{sign}{}.{:02}", minor.abs() / 100, minor.abs() % 100)
            }
            Cell::Count { value } | Cell::Seconds { value } => value.to_string(),
            Cell::Percent { basis_points } => format!("{:.2}", *basis_points as f64 / 100.0),
            Cell::Tenths { value } => format!("{:.1}", *value as f64 / 10.0),
            other => other.display(),
        }
    }
}

fn group(value: i64) -> String {
    let digits = value.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if value < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// `$1,234.50`, `€12.00`, `1,234.50 CHF`.
pub fn money(minor: i64, currency: &str) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let amount = format!("{}.{:02}", group(minor.abs() / 100), minor.abs() % 100);
    match currency {
        "usd" => format!("{sign}${amount}"),
        "eur" => format!("{sign}€{amount}"),
        "gbp" => format!("{sign}£{amount}"),
        other => format!("{sign}{amount} {}", other.to_ascii_uppercase()),
    }
}

fn duration(seconds: i64) -> String {
    match seconds {
        ..=59 => format!("{seconds}s"),
        60..=3_599 => format!("{}m {:02}s", seconds / 60, seconds % 60),
        3_600..=86_399 => format!("{}h {:02}m", seconds / 3_600, (seconds % 3_600) / 60),
        _ => format!("{}d {}h", seconds / 86_400, (seconds % 86_400) / 3_600),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChartKind {
    Line,
    Bar,
}

/// One line or set of bars. Values are in the unit of the cells they come from (minor
/// units for money, basis points for shares, seconds for durations).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Series {
    pub label: String,
    pub values: Vec<i64>,
}

/// What to draw: one label per x position, one or more series over them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Chart {
    pub kind: ChartKind,
    /// What the values are, for the axis: `USD`, `%`, `seconds`, `count`.
    pub unit: String,
    pub x: Vec<String>,
    pub series: Vec<Series>,
}

/// A query's answer: a table, perhaps a chart, and notes on what it used or left out.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Answer {
    pub query: QueryName,
    pub params: Params,
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
    pub chart: Option<Chart>,
    /// The inputs a figure rests on ("cash: $120,000.00 on 2026-11-01"), or why a figure is
    /// missing ("no balance recorded in eur").
    pub notes: Vec<String>,
}

impl Answer {
    /// The table as CSV: a header row, then one line per row; money as major units.
    pub fn to_csv(&self) -> String {
        let quote = |v: &str| csv_cell(v, true);
        let mut out = self
            .columns
            .iter()
            .map(|c| quote(c))
            .collect::<Vec<_>>()
            .join(",");
        out.push('\n');
        for row in &self.rows {
            out.push_str(
                &row.iter()
                    .map(|c| quote(&c.csv()))
                    .collect::<Vec<_>>()
                    .join(","),
            );
            out.push('\n');
        }
        out
    }
}

/// One CSV cell: quoted, inner quotes doubled, and defused where a spreadsheet would run it
/// as a formula (a leading `=`, `+`, `-`, `@`, tab or carriage return gets a `'` before it).
/// With `numbers`, a cell that is a number (`-12.50`) is left as one.
pub fn csv_cell(value: &str, numbers: bool) -> String {
    let formula = value.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let number = numbers && value.parse::<f64>().is_ok();
    let value = if formula && !number {
        format!("'{value}")
    } else {
        value.to_string()
    };
    format!("\"{}\"", value.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_that_a_spreadsheet_would_run_are_defused() {
        for (value, numbers, expected) in [
            ("=HYPERLINK(\"x\")", false, "\"'=HYPERLINK(\"\"x\"\")\""),
            ("+1+1", false, "\"'+1+1\""),
            ("-2+3", false, "\"'-2+3\""),
            ("@SUM(A1)", false, "\"'@SUM(A1)\""),
            ("\t=1", false, "\"'\t=1\""),
            ("\r=1", false, "\"'\r=1\""),
            ("-12.50", true, "\"-12.50\""),
            ("-12.50", false, "\"'-12.50\""),
            ("plain", false, "\"plain\""),
        ] {
            assert_eq!(csv_cell(value, numbers), expected, "{value:?}");
        }
    }

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_default()
    }

    #[test]
    fn every_query_name_round_trips() {
        for query in QueryName::ALL {
            assert_eq!(QueryName::parse(query.as_str()), Some(query));
        }
        assert_eq!(QueryName::parse("drop_table"), None);
    }

    #[test]
    fn parameters_default_to_the_last_three_months_and_this_one() {
        let params = Params::parse(&RawParams::default(), day("2026-11-22")).ok();
        assert_eq!(
            params,
            Some(Params {
                from: day("2026-08-01"),
                to: day("2026-11-22"),
                granularity: Granularity::Month,
                vendor: None,
                currency: None,
                top: 10,
            })
        );
    }

    #[test]
    fn bad_parameters_are_refused_with_the_field_named() {
        let today = day("2026-11-22");
        let raw = |f: &dyn Fn(&mut RawParams)| {
            let mut raw = RawParams::default();
            f(&mut raw);
            Params::parse(&raw, today).err().map(|e| e.to_string())
        };
        type Change = Box<dyn Fn(&mut RawParams)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|r| r.from = Some("2026-13-01".into())),
                "from: \"2026-13-01\" is not a date (YYYY-MM-DD)",
            ),
            (
                Box::new(|r| r.from = Some("'; DROP TABLE events; --".into())),
                "from: \"'; DROP TABLE events; --\" is not a date (YYYY-MM-DD)",
            ),
            (
                Box::new(|r| r.to = Some("1999-12-31".into())),
                "to: 1999-12-31 is outside 2000-01-01 to 2099-12-31",
            ),
            (
                Box::new(|r| {
                    r.from = Some("2026-05-01".into());
                    r.to = Some("2026-04-01".into());
                }),
                "from (2026-05-01) is after to (2026-04-01)",
            ),
            (
                Box::new(|r| {
                    r.from = Some("2000-01-01".into());
                    r.to = Some("2026-01-01".into());
                }),
                "the period is longer than ten years",
            ),
            (
                Box::new(|r| r.granularity = Some("hourly".into())),
                "granularity: \"hourly\" is not day, week or month",
            ),
            (
                Box::new(|r| r.currency = Some("usd' OR 1=1".into())),
                "currency: \"usd' OR 1=1\" is not a three-letter ISO code such as usd",
            ),
            (
                Box::new(|r| r.currency = Some("€€€".into())),
                "currency: \"€€€\" is not a three-letter ISO code such as usd",
            ),
            (
                Box::new(|r| r.vendor = Some("x".repeat(101))),
                "vendor: longer than 100 characters",
            ),
            (
                Box::new(|r| r.vendor = Some("AWS\u{0}".into())),
                "vendor: contains control characters",
            ),
            (
                Box::new(|r| r.top = Some("0".into())),
                "top: \"0\" is not a whole number from 1 to 50",
            ),
            (
                Box::new(|r| r.top = Some("99999999999999999999".into())),
                "top: \"99999999999999999999\" is not a whole number from 1 to 50",
            ),
            (
                Box::new(|r| r.top = Some("-1".into())),
                "top: \"-1\" is not a whole number from 1 to 50",
            ),
        ];
        for (change, expected) in cases {
            assert_eq!(raw(&*change).as_deref(), Some(expected));
        }
    }

    #[test]
    fn money_reads_naturally_and_currencies_stay_apart() {
        assert_eq!(money(123_450, "usd"), "$1,234.50");
        assert_eq!(money(-5, "eur"), "-€0.05");
        assert_eq!(money(100_000_000, "chf"), "1,000,000.00 CHF");
        assert_eq!(Cell::Percent { basis_points: 1234 }.display(), "12.3 %");
        assert_eq!(Cell::Tenths { value: 65 }.display(), "6.5");
        assert_eq!(Cell::Seconds { value: 7_500 }.display(), "2h 05m");
    }
}
