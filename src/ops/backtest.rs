//! `execops backtest`: runs the signals recorded since a date through the policies with a
//! configuration to try, and sets what they would propose beside what was proposed, for
//! tuning thresholds. Nothing persists: the facts the policies need are rebuilt, as they
//! stood at each signal, in temporary tables of a read-only session of its own.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Connection, PgConnection, PgPool};

use crate::config::{Config, ConfigError};
use crate::domain::policies::{Outcome, PolicyConfig};
use crate::domain::{InboundEvent, ProposalId};
use crate::router::{facts, outcomes_for, priority_of};
use crate::store::log::{read_in_snapshot_after, read_last_in_snapshot, LogPosition, StoredEvent};
use crate::store::Database;

/// The router's facts tables; the backtest shadows each with an empty temporary copy.
const FACTS_TABLES: [&str; 4] = [
    "facts_vendor_spend",
    "facts_monthly",
    "facts_cash",
    "facts_deals",
];

/// Events read at a time. Each batch is one short transaction: a long one would hold back
/// every subscriber of the live system until it ended.
const BATCH: i64 = 200;

/// `execops backtest`: `file`'s settings (or, without one, `current`) against the log.
pub async fn run(
    current: Config,
    since: DateTime<Utc>,
    file: Option<&Path>,
    json: bool,
) -> anyhow::Result<()> {
    let (config, source) = match file {
        Some(file) => {
            let (config, unknown) = config_from_file(file)?;
            if !unknown.is_empty() {
                eprintln!(
                    "warning: {} sets {}, which ExecOps does not read (a typo?); ignored",
                    file.display(),
                    unknown.join(", ")
                );
            }
            (config, file.display().to_string())
        }
        None => (current, "the current configuration".to_string()),
    };
    let db = Database::open(&config.database()).await?;
    let result = async {
        let replay = Replay::prepare(&db.pool, since).await?;
        eprintln!(
            "execops backtest: replaying {} signals recorded since {} through the policies of {}, \
             after rebuilding their facts from {} earlier signals. Nothing is written: the facts \
             are rebuilt in temporary tables of a read-only session that drops them when it ends.",
            replay.signals,
            since.to_rfc3339(),
            source,
            replay.earlier
        );
        replay.run(&config.policies, source).await
    }
    .await;
    db.close().await?;
    let report = result?;
    let text = if json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        render(&report)
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        // Nobody reads any more (`| head`): not a failure of the backtest.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// The configuration to try: the settings in `file` (`KEY=VALUE` lines as in `.env.example`,
/// with `#` comments and optional quotes) over the process environment, checked as at
/// start-up. Also returns the file's keys that ExecOps does not read, so that a misspelt
/// threshold is not silently left at its old value.
pub fn config_from_file(file: &Path) -> anyhow::Result<(Config, Vec<String>)> {
    let reading = || format!("reading {}", file.display());
    let mut settings = BTreeMap::new();
    for item in dotenvy::from_path_iter(file).with_context(reading)? {
        let (key, value) = item.with_context(reading)?;
        settings.insert(key, value);
    }
    let config = settings_over(&settings, |key| std::env::var(key).ok())
        .with_context(|| format!("in {}", file.display()))?;
    let known = known_keys();
    let unknown = settings
        .keys()
        .filter(|key| !known.contains(*key))
        .cloned()
        .collect();
    Ok((config, unknown))
}

/// The configuration with `settings` winning over `environment`.
pub fn settings_over(
    settings: &BTreeMap<String, String>,
    environment: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    Config::from_lookup(|key| settings.get(key).cloned().or_else(|| environment(key)))
}

/// Every key ExecOps reads: those [`Config`] asks for (with the language model switched on,
/// so that its keys are asked for too), and those `.env.example` documents (`RUST_LOG`).
/// Asking `Config` itself keeps the list from going stale as settings are added.
pub fn known_keys() -> BTreeSet<String> {
    let asked = RefCell::new(BTreeSet::new());
    let _ = Config::from_lookup(|key| {
        asked.borrow_mut().insert(key.to_string());
        (key == "EXECOPS_LLM_URL").then(|| "http://127.0.0.1:1/".to_string())
    });
    let mut known = asked.into_inner();
    known.extend(documented_keys(include_str!("../../.env.example")));
    known
}

/// The keys of `KEY=VALUE` lines, commented out or not.
fn documented_keys(example: &str) -> impl Iterator<Item = String> + '_ {
    example.lines().filter_map(|line| {
        let (key, _) = line.trim_start_matches(['#', ' ']).split_once('=')?;
        let is_key = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        is_key.then(|| key.to_string())
    })
}

/// How a proposal the policies would make compares with what was proposed for the signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Proposed then, and would be now.
    Same,
    /// Would be proposed now; was not.
    New,
    /// Was proposed; would not be now.
    Gone,
}

/// What the policies call for now.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Would {
    pub title: String,
    pub score: u8,
}

/// The proposal that took the signal then: drafted from it, or revised with it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Was {
    pub proposal_id: String,
    /// As it stands now (`pending`, `approved`, `suppressed`…).
    pub status: String,
    /// The score it was given for this signal.
    pub score: u8,
}

/// One proposal of one signal, now against then.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    /// The inbound id, e.g. `stripe:evt_…`.
    pub signal: String,
    pub signal_kind: String,
    pub recorded_at: DateTime<Utc>,
    pub class: Class,
    /// The rule that would propose it; unknown for what is gone, since proposals do not
    /// record their rule.
    pub rule: Option<String>,
    pub action_type: String,
    pub subject_key: String,
    pub would: Option<Would>,
    pub was: Option<Was>,
}

impl Comparison {
    pub fn score_changed(&self) -> bool {
        matches!((&self.would, &self.was), (Some(w), Some(p)) if w.score != p.score)
    }
}

/// A signal that calls for pending proposals on a subject to be superseded.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Supersede {
    pub signal: String,
    pub subject_key: String,
    pub reason: String,
    /// The proposals it did supersede then. Whether one would be pending now depends on
    /// people's decisions, which the backtest does not replay.
    pub superseded_then: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    pub since: DateTime<Utc>,
    /// The configuration file tried, or the current configuration.
    pub configuration: String,
    /// Signals recorded since `since`, run through the policies.
    pub signals_replayed: u64,
    /// Signals recorded before, which only rebuilt the facts.
    pub earlier_signals: u64,
    pub would_propose: u64,
    pub was_proposed: u64,
    pub same: u64,
    /// Of the same, how many would get another score.
    pub score_changed: u64,
    pub new: u64,
    pub gone: u64,
    /// Every proposal of every replayed signal, in log order.
    pub proposals: Vec<Comparison>,
    pub supersedes: Vec<Supersede>,
}

/// A replay on a session of its own, ready to run.
pub struct Replay {
    conn: PgConnection,
    since: DateTime<Utc>,
    /// The last event readable when it was prepared: what arrives later is left out.
    end: Option<LogPosition>,
    /// Signals to run through the policies.
    pub signals: i64,
    /// Signals before them, whose facts are rebuilt first.
    pub earlier: i64,
}

impl Replay {
    /// Takes a connection out of `pool` for good (it is closed at the end, and its temporary
    /// tables with it), shadows the facts tables with empty temporary ones, makes every later
    /// transaction of the session read only, and counts the signals.
    pub async fn prepare(pool: &PgPool, since: DateTime<Utc>) -> anyhow::Result<Self> {
        let mut conn = pool.acquire().await?.detach();
        if let Err(e) = Self::shadow_facts(&mut conn).await {
            let _ = conn.close().await;
            return Err(e);
        }
        let end = read_last_in_snapshot(&mut conn, 1)
            .await?
            .pop()
            .map(|e| e.log);
        let (earlier, signals) = match end {
            None => (0, 0),
            Some(end) => {
                sqlx::query_as(
                    "SELECT count(*) FILTER (WHERE recorded_at < $1), \
                            count(*) FILTER (WHERE recorded_at >= $1) \
                     FROM events WHERE aggregate_type = 'Inbound' AND event_type = 'Received' \
                       AND (transaction_id, position) <= ($2::bigint::text::xid8, $3)",
                )
                .bind(since)
                .bind(end.transaction_id)
                .bind(end.position)
                .fetch_one(&mut conn)
                .await?
            }
        };
        Ok(Self {
            conn,
            since,
            end,
            signals,
            earlier,
        })
    }

    async fn shadow_facts(conn: &mut PgConnection) -> anyhow::Result<()> {
        for table in FACTS_TABLES {
            sqlx::query(&format!(
                "CREATE TEMP TABLE {table} (LIKE public.{table} INCLUDING ALL)"
            ))
            .execute(&mut *conn)
            .await?;
            // The temporary schema comes first in the search path unless someone put it
            // elsewhere; the facts code must find the copy, never the live table.
            let shadowed: Option<bool> = sqlx::query_scalar(
                "SELECT relpersistence = 't' FROM pg_class WHERE oid = to_regclass($1)",
            )
            .bind(table)
            .fetch_optional(&mut *conn)
            .await?;
            anyhow::ensure!(
                shadowed == Some(true),
                "{table} does not name the temporary copy in this session's search path"
            );
        }
        // Temporary tables may be written in a read-only transaction; nothing else may.
        sqlx::query("SET default_transaction_read_only = on")
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Replays the log up to where it stood when prepared, then closes the session.
    pub async fn run(mut self, policies: &PolicyConfig, source: String) -> anyhow::Result<Report> {
        let mut report = Report {
            since: self.since,
            configuration: source,
            ..Report::default()
        };
        let result = self.replay(policies, &mut report).await;
        let _ = self.conn.close().await;
        result?;
        for p in &report.proposals {
            match p.class {
                Class::Same => {
                    report.same += 1;
                    report.score_changed += u64::from(p.score_changed());
                }
                Class::New => report.new += 1,
                Class::Gone => report.gone += 1,
            }
        }
        Ok(report)
    }

    async fn replay(&mut self, policies: &PolicyConfig, report: &mut Report) -> anyhow::Result<()> {
        let Some(end) = self.end else { return Ok(()) };
        let then = Then::load(&mut self.conn, self.since).await?;
        let mut last = LogPosition::START;
        while last < end {
            let batch =
                read_in_snapshot_after(&mut self.conn, last, BATCH, Some(&["Inbound"])).await?;
            if batch.is_empty() {
                break;
            }
            let mut tx = self.conn.begin().await?;
            for event in batch.iter().take_while(|e| e.log <= end) {
                last = event.log;
                if (event.aggregate_type.as_str(), event.event_type.as_str())
                    != ("Inbound", "Received")
                {
                    continue;
                }
                let InboundEvent::Received(signal) = event
                    .decode()
                    .with_context(|| format!("reading {}", event.aggregate_id))?;
                if event.recorded_at < self.since {
                    report.earlier_signals += 1;
                    facts::record(&mut tx, &signal).await?;
                    continue;
                }
                report.signals_replayed += 1;
                let outcomes =
                    outcomes_for(&mut tx, &signal, event.recorded_at, policies, None).await?;
                compare(&mut tx, event, &signal.kind, outcomes, &then, report).await?;
            }
            tx.commit().await?;
            if batch.last().is_some_and(|e| e.log > end) {
                break;
            }
        }
        Ok(())
    }
}

/// A proposal that took a signal: drafted from it or revised with it.
#[derive(sqlx::FromRow)]
struct Taken {
    proposal_id: String,
    inbound_id: Option<String>,
    action_type: String,
    subject_key: String,
    /// `unknown` when the projection has not caught up with it yet.
    status: String,
    /// The score it was given for this signal.
    score: i32,
}

/// What the router did with the signals recorded since the backtest's date.
struct Then {
    /// By inbound id, in log order.
    taken: HashMap<String, Vec<Taken>>,
    /// By inbound id: the proposals it superseded, with their subjects.
    superseded: HashMap<String, Vec<(String, String)>>,
}

impl Then {
    /// The proposals' own events say which signal each draft and revision took, and with
    /// which score; their summaries say where they stand now. Anything about a signal is
    /// recorded after it, so only events since `since` are read.
    async fn load(conn: &mut PgConnection, since: DateTime<Utc>) -> Result<Self, sqlx::Error> {
        let rows: Vec<Taken> = sqlx::query_as(
            "SELECT e.aggregate_id AS proposal_id, \
               coalesce(e.payload::jsonb -> e.event_type -> 'inbound_ids' ->> 0, \
                        e.payload::jsonb -> e.event_type ->> 'inbound_id') AS inbound_id, \
               coalesce(f.payload::jsonb -> f.event_type ->> 'action_type', '') AS action_type, \
               coalesce(f.payload::jsonb -> f.event_type ->> 'subject_key', '') AS subject_key, \
               coalesce(s.status, 'unknown') AS status, \
               coalesce((e.payload::jsonb -> e.event_type ->> 'score')::int, 0) AS score \
             FROM events e \
             JOIN events f ON f.aggregate_type = 'Proposal' AND f.aggregate_id = e.aggregate_id \
               AND f.sequence = 1 \
             LEFT JOIN proposal_summaries s ON s.id = e.aggregate_id \
             WHERE e.aggregate_type = 'Proposal' \
               AND e.event_type IN ('Drafted', 'DraftSuppressed', 'Revised') \
               AND e.recorded_at >= $1 \
             ORDER BY e.transaction_id, e.position",
        )
        .bind(since)
        .fetch_all(&mut *conn)
        .await?;
        let mut taken: HashMap<String, Vec<Taken>> = HashMap::new();
        for row in rows {
            if let Some(inbound_id) = row.inbound_id.clone() {
                taken.entry(inbound_id).or_default().push(row);
            }
        }
        let rows: Vec<(String, Option<String>, String)> = sqlx::query_as(
            "SELECT e.aggregate_id, e.metadata::jsonb ->> 'caused_by', \
               coalesce(f.payload::jsonb -> f.event_type ->> 'subject_key', '') \
             FROM events e \
             JOIN events f ON f.aggregate_type = 'Proposal' AND f.aggregate_id = e.aggregate_id \
               AND f.sequence = 1 \
             WHERE e.aggregate_type = 'Proposal' AND e.event_type = 'Superseded' \
               AND e.recorded_at >= $1 \
             ORDER BY e.transaction_id, e.position",
        )
        .bind(since)
        .fetch_all(&mut *conn)
        .await?;
        let mut superseded: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for (proposal_id, caused_by, subject_key) in rows {
            // The router's commands name their cause as `{inbound id}/{sequence}`.
            let Some((inbound_id, _)) = caused_by.as_deref().and_then(|c| c.rsplit_once('/'))
            else {
                continue;
            };
            superseded
                .entry(inbound_id.to_string())
                .or_default()
                .push((proposal_id, subject_key));
        }
        Ok(Self { taken, superseded })
    }
}

/// Sets the outcomes of one signal beside what the router did with it. A proposal then and
/// one now are the same when they share the subject: a signal on a subject that already had
/// a pending proposal revised that one rather than drafting its own.
async fn compare(
    conn: &mut PgConnection,
    event: &StoredEvent,
    kind: &str,
    outcomes: Vec<Outcome>,
    then: &Then,
    report: &mut Report,
) -> Result<(), sqlx::Error> {
    let signal = event.aggregate_id.as_str();
    let taken = then
        .taken
        .get(signal)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut matched = vec![false; taken.len()];
    let entry = |class, rule: Option<&str>, action_type: &str, subject_key: &str| Comparison {
        signal: signal.to_string(),
        signal_kind: kind.to_string(),
        recorded_at: event.recorded_at,
        class,
        rule: rule.map(str::to_string),
        action_type: action_type.to_string(),
        subject_key: subject_key.to_string(),
        would: None,
        was: None,
    };
    for outcome in outcomes {
        match outcome {
            Outcome::Propose(plan) => {
                report.would_propose += 1;
                let score = priority_of(conn, &plan).await?.score();
                let id = ProposalId::derive(signal, plan.rule).to_string();
                let found = (0..taken.len()).find(|&i| {
                    !matched[i]
                        && (taken[i].proposal_id == id || taken[i].subject_key == plan.subject_key)
                });
                let class = if found.is_some() {
                    Class::Same
                } else {
                    Class::New
                };
                let mut comparison =
                    entry(class, Some(plan.rule), plan.action_type, &plan.subject_key);
                comparison.would = Some(Would {
                    title: plan.title.clone(),
                    score,
                });
                if let Some(i) = found {
                    matched[i] = true;
                    comparison.was = Some(was(&taken[i]));
                }
                report.proposals.push(comparison);
            }
            Outcome::Supersede {
                subject_key,
                reason,
            } => {
                let superseded_then = then
                    .superseded
                    .get(signal)
                    .into_iter()
                    .flatten()
                    .filter(|(_, subject)| *subject == subject_key)
                    .map(|(id, _)| id.clone())
                    .collect();
                report.supersedes.push(Supersede {
                    signal: signal.to_string(),
                    subject_key,
                    reason,
                    superseded_then,
                });
            }
        }
    }
    for (taken, _) in taken.iter().zip(&matched).filter(|(_, matched)| !**matched) {
        let mut comparison = entry(Class::Gone, None, &taken.action_type, &taken.subject_key);
        comparison.was = Some(was(taken));
        report.proposals.push(comparison);
    }
    report.was_proposed += taken.len() as u64;
    Ok(())
}

fn was(taken: &Taken) -> Was {
    Was {
        proposal_id: taken.proposal_id.clone(),
        status: taken.status.clone(),
        score: taken.score.clamp(0, 100) as u8,
    }
}

/// The report for people: a line per difference, then the counts.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    for p in &report.proposals {
        let what = match &p.rule {
            Some(rule) => format!("{rule} ({})", p.action_type),
            None => format!("{} on {}", p.action_type, p.subject_key),
        };
        let line = match (p.class, &p.would, &p.was) {
            (Class::New, Some(would), _) => format!(
                "new   {} {}: {what} would propose \"{}\", score {}; was not proposed",
                p.signal, p.signal_kind, would.title, would.score
            ),
            (Class::Gone, _, Some(was)) => format!(
                "gone  {} {}: {what} was proposed ({}, {}), score {}; would not be now",
                p.signal, p.signal_kind, was.proposal_id, was.status, was.score
            ),
            (Class::Same, Some(would), Some(was)) if would.score != was.score => format!(
                "score {} {}: {what} score {} -> {} ({}, {})",
                p.signal, p.signal_kind, was.score, would.score, was.proposal_id, was.status
            ),
            _ => continue,
        };
        out.push_str(&line);
        out.push('\n');
    }
    if out.is_empty() {
        out.push_str("no differences\n");
    }
    let took_effect = report
        .supersedes
        .iter()
        .filter(|s| !s.superseded_then.is_empty())
        .count();
    out.push_str(&format!(
        "\n{} signals replayed, recorded since {} ({} earlier ones rebuilt the facts); \
         configuration: {}\n\
         proposals: {} would be made, {} were\n\
         same {} ({} with another score), new {}, gone {}\n\
         supersedes: {} called for, {} superseded a pending proposal then (whether one would be \
         pending now depends on decisions, which are not replayed)\n",
        report.signals_replayed,
        report.since.to_rfc3339(),
        report.earlier_signals,
        report.configuration,
        report.would_propose,
        report.was_proposed,
        report.same,
        report.score_changed,
        report.new,
        report.gone,
        report.supersedes.len(),
        took_effect,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_keys_are_what_the_configuration_reads_and_documents() {
        let known = known_keys();
        for key in [
            "DATABASE_URL",
            "EXECOPS_POLICY_OWNER_DM_CENTS",
            "EXECOPS_POLICY_CHURN_KEYWORDS",
            "EXECOPS_LLM_MODEL",
            "EXECOPS_SESSION_IDLE_MINUTES",
            "RUST_LOG",
        ] {
            assert!(known.contains(key), "{key} is not known");
        }
        for typo in [
            "EXECOPS_POLICY_OWNER_DM_CENT",
            "Log filter, e.g. info or execops",
        ] {
            assert!(!known.contains(typo), "{typo} is known");
        }
    }

    #[test]
    fn settings_win_over_the_environment_and_are_checked_like_it() {
        let settings = BTreeMap::from([(
            "EXECOPS_POLICY_SPEND_JUMP_PERCENT".to_string(),
            "25".to_string(),
        )]);
        let environment = |key: &str| match key {
            "EXECOPS_POLICY_SPEND_JUMP_PERCENT" => Some("10".to_string()),
            "EXECOPS_POLICY_RUNWAY_MONTHS" => Some("9".to_string()),
            _ => None,
        };
        let config = settings_over(&settings, environment).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.policies.spend_jump_percent, 25);
        assert_eq!(config.policies.runway_floor_months, 9);
        let bad = BTreeMap::from([(
            "EXECOPS_POLICY_OWNER_DM_CENTS".to_string(),
            "lots".to_string(),
        )]);
        let error = settings_over(&bad, environment)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.starts_with("EXECOPS_POLICY_OWNER_DM_CENTS:"),
            "{error}"
        );
    }
}
