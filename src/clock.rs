//! The wall clock, passed in where a decision genuinely depends on when it is made: approval
//! deadlines, sessions, link expiry, rate limits, a delivery's timestamp tolerance. Policies
//! and projections never read it; they decide from an event's own time. Tests set it.

use chrono::{DateTime, Duration, Utc};

/// What time it is. [`Clock::system`] reads the machine's clock; a test can fix it or move
/// it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Clock {
    fixed: Option<DateTime<Utc>>,
    offset: Duration,
}

impl Clock {
    /// The machine's clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that always says `at`.
    pub fn fixed(at: DateTime<Utc>) -> Self {
        Self {
            fixed: Some(at),
            offset: Duration::zero(),
        }
    }

    /// The machine's clock moved by `by`: it runs, but in another season.
    pub fn shifted(by: Duration) -> Self {
        Self {
            fixed: None,
            offset: by,
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.fixed.unwrap_or_else(Utc::now) + self.offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_clock_says_its_time_and_a_shifted_one_runs_ahead() {
        let at = DateTime::parse_from_rfc3339("2026-12-03T12:00:00Z")
            .expect("a time")
            .with_timezone(&Utc);
        assert_eq!(Clock::fixed(at).now(), at);
        let year = Duration::days(365);
        let shifted = Clock::shifted(year).now() - Utc::now();
        assert!(shifted > year - Duration::seconds(5) && shifted <= year);
        let system = Utc::now() - Clock::system().now();
        assert!(system.num_seconds().abs() < 5);
    }
}
