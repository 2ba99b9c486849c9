//! The action priority score (APS): revenue impact 40%, urgency 25%, effort 15%, strategic
//! value 20%, each factor 0–100, giving 0–100. Each factor carries the sentence that
//! explains it; the drivers are the sentences of the factors that weigh most.

use serde::{Deserialize, Serialize};

use super::values::Urgency;

/// One factor: how strongly it counts (0–100) and why, as "because …" finishes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Factor {
    pub value: u8,
    pub reason: String,
}

impl Factor {
    pub fn new(value: u8, reason: impl Into<String>) -> Self {
        Self {
            value: value.min(100),
            reason: reason.into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Priority {
    /// Money at stake.
    pub revenue: Factor,
    /// How soon it matters.
    pub urgency: Factor,
    /// How quick it is to do: 100 is one click.
    pub effort: Factor,
    /// How much it matters to where the company is going.
    pub strategic: Factor,
}

pub const WEIGHTS: [(&str, u32); 4] = [
    ("revenue", 40),
    ("urgency", 25),
    ("effort", 15),
    ("strategic", 20),
];

impl Priority {
    fn weighted(&self) -> [(u32, &Factor); 4] {
        [
            (WEIGHTS[0].1 * self.revenue.value as u32, &self.revenue),
            (WEIGHTS[1].1 * self.urgency.value as u32, &self.urgency),
            (WEIGHTS[2].1 * self.effort.value as u32, &self.effort),
            (WEIGHTS[3].1 * self.strategic.value as u32, &self.strategic),
        ]
    }

    /// 0–100, rounded half up.
    pub fn score(&self) -> u8 {
        let total: u32 = self.weighted().iter().map(|(w, _)| w).sum();
        ((total + 50) / 100) as u8
    }

    /// The reasons of the factors that weigh most, heaviest first, as sentences; a factor
    /// that adds fewer than 5 points is not worth saying.
    pub fn drivers(&self) -> Vec<String> {
        let mut weighted = self.weighted();
        weighted.sort_by_key(|(w, _)| std::cmp::Reverse(*w));
        weighted
            .iter()
            .filter(|(w, _)| *w >= 500)
            .take(3)
            .map(|(_, f)| format!("because {}", f.reason))
            .collect()
    }
}

/// Executions of an action type before its track record counts.
pub const TRACK_RECORD_MIN: i64 = 5;

impl Priority {
    /// Blends what the action type achieved into the strategic factor: with at least
    /// [`TRACK_RECORD_MIN`] executions that could show an outcome, strategic becomes
    /// `round(strategic / 2 + 50 × outcomes / executions)`, so an action that always worked
    /// gains up to 50 points of strategic value (10 of the score) and one that never did
    /// loses half of it.
    pub fn with_track_record(
        mut self,
        action_type: &str,
        executed: i64,
        with_outcome: i64,
    ) -> Self {
        if executed < TRACK_RECORD_MIN {
            return self;
        }
        let with_outcome = with_outcome.clamp(0, executed);
        let value = (f64::from(self.strategic.value) / 2.0
            + 50.0 * with_outcome as f64 / executed as f64)
            .round()
            .clamp(0.0, 100.0) as u8;
        let percent = (100 * with_outcome + executed / 2) / executed;
        self.strategic = Factor::new(
            value,
            format!(
                "{percent}% of the last {executed} executed {action_type} proposals like it had \
                 a recorded outcome ({})",
                self.strategic.reason
            ),
        );
        self
    }
}

/// Revenue impact of an amount in minor units: 0 at nothing, about 40 at $100, 60 at
/// $1,000, 80 at $10,000, 100 from $100,000.
pub fn revenue_factor(cents: i64, currency: &str, what: &str) -> Factor {
    let units = (cents.max(0) as f64) / 100.0;
    let value = (20.0 * (1.0 + units).log10()).round().clamp(0.0, 100.0) as u8;
    Factor::new(value, format!("{} {what}", money(cents, currency)))
}

/// Urgency as a factor.
pub fn urgency_factor(urgency: Urgency, reason: impl Into<String>) -> Factor {
    let value = match urgency {
        Urgency::Low => 20,
        Urgency::Medium => 50,
        Urgency::High => 80,
        Urgency::Critical => 100,
    };
    Factor::new(value, reason)
}

/// `$1,234.56`, `€12.00`, or `1,234.56 SEK` for currencies without a symbol here.
pub fn money(cents: i64, currency: &str) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let cents = cents.unsigned_abs();
    let whole = (cents / 100).to_string();
    let mut grouped = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let amount = format!("{grouped}.{:02}", cents % 100);
    match currency.to_ascii_lowercase().as_str() {
        "usd" => format!("{sign}${amount}"),
        "eur" => format!("{sign}€{amount}"),
        "gbp" => format!("{sign}£{amount}"),
        other => format!("{sign}{amount} {}", other.to_ascii_uppercase()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_value_urgent_and_quick_scores_over_80() {
        let p = Priority {
            revenue: revenue_factor(2_500_000, "usd", "of revenue is at risk"),
            urgency: urgency_factor(Urgency::Critical, "it is due today"),
            effort: Factor::new(95, "it takes one click"),
            strategic: Factor::new(80, "losing a customer hurts growth"),
        };
        assert!(p.score() > 80, "{}", p.score());
        let drivers = p.drivers();
        assert_eq!(drivers[0], "because $25,000.00 of revenue is at risk");
        assert_eq!(drivers[1], "because it is due today");
    }

    #[test]
    fn low_value_far_off_and_slow_scores_under_40() {
        let p = Priority {
            revenue: revenue_factor(500, "usd", "is involved"),
            urgency: urgency_factor(Urgency::Low, "nothing is due for weeks"),
            effort: Factor::new(10, "it takes hours of work"),
            strategic: Factor::new(20, "it is routine"),
        };
        assert!(p.score() < 40, "{}", p.score());
        // Effort adds under 5 points: it is not named as a reason.
        assert!(!p.drivers().iter().any(|d| d.contains("hours")));
    }

    #[test]
    fn the_score_is_the_weighted_sum() {
        let p = Priority {
            revenue: Factor::new(100, "a"),
            urgency: Factor::new(0, "b"),
            effort: Factor::new(0, "c"),
            strategic: Factor::new(0, "d"),
        };
        assert_eq!(p.score(), 40);
        let all = Priority {
            revenue: Factor::new(100, "a"),
            urgency: Factor::new(100, "b"),
            effort: Factor::new(100, "c"),
            strategic: Factor::new(100, "d"),
        };
        assert_eq!(all.score(), 100);
    }

    #[test]
    fn money_is_grouped_and_labelled() {
        assert_eq!(money(123_456_789, "usd"), "$1,234,567.89");
        assert_eq!(money(1000, "eur"), "€10.00");
        assert_eq!(money(5, "sek"), "0.05 SEK");
        assert_eq!(money(-250, "usd"), "-$2.50");
    }

    #[test]
    fn a_track_record_moves_the_strategic_factor_only_past_the_minimum() {
        let base = || Priority {
            revenue: Factor::new(50, "money"),
            urgency: Factor::new(50, "soon"),
            effort: Factor::new(50, "easy"),
            strategic: Factor::new(60, "it matters"),
        };
        assert_eq!(base().with_track_record("email.send", 4, 4), base());
        let good = base().with_track_record("email.send", 10, 10);
        assert_eq!(good.strategic.value, 80);
        assert!(good
            .strategic
            .reason
            .starts_with("100% of the last 10 executed email.send"));
        let bad = base().with_track_record("email.send", 10, 0);
        assert_eq!(bad.strategic.value, 30);
        assert!(good.score() > base().score() && bad.score() < base().score());
    }
}
