//! What the auditor asks: a proposal's whole story from the event log (`audit show`), and
//! whether the hash-chained audit log is still exactly what the events say (`audit verify`).
//! Both only read.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection, PgPool};

use crate::domain::{InboundEvent, ProposalEvent};
use crate::projections::audit_log::{AuditRow, Chain, AUDITED};
use crate::store::log::{from_row, LogPosition, Selection, StoredEvent, COLUMNS};
use crate::store::subscription::checkpoint;

const BATCH: i64 = 2_000;

/// The first place where the audit log and the events disagree.
#[derive(Clone, Debug, PartialEq)]
pub enum Break {
    /// The row at `seq` is for the right event but says something else.
    Altered {
        seq: i64,
        fields: Vec<&'static str>,
        found: Box<AuditRow>,
        expected: Box<AuditRow>,
    },
    /// No row holds the event that belongs at `seq`.
    Removed { seq: i64, expected: Box<AuditRow> },
    /// The event that belongs at `seq` is in the row at `found_at` instead.
    Moved {
        seq: i64,
        found_at: i64,
        expected: Box<AuditRow>,
    },
    /// The row at `seq` stands for no event at all.
    Forged { seq: i64, found: Box<AuditRow> },
}

/// What `audit verify` found.
#[derive(Clone, Debug, PartialEq)]
pub struct Verification {
    /// Rows that matched before the first break (all of them when there is none).
    pub rows: i64,
    /// The log position the audit log has reached.
    pub through: LogPosition,
    pub tip: String,
    pub first_break: Option<Break>,
}

fn describe(row: &AuditRow) -> String {
    format!(
        "{} {}/{}#{} by {} at {}",
        row.event_type,
        row.aggregate_type,
        row.aggregate_id,
        row.sequence,
        row.actor,
        row.recorded_at.format("%Y-%m-%d %H:%M:%S%.6f UTC")
    )
}

fn value_of(row: &AuditRow, field: &str) -> String {
    let option = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
    match field {
        "seq" => row.seq.to_string(),
        "event" => row.event().to_string(),
        "recorded_at" => row.recorded_at.to_rfc3339(),
        "aggregate_type" => row.aggregate_type.clone(),
        "aggregate_id" => row.aggregate_id.clone(),
        "sequence" => row.sequence.to_string(),
        "event_type" => row.event_type.clone(),
        "actor" => row.actor.clone(),
        "role" => option(&row.role),
        "from_status" => option(&row.from_status),
        "to_status" => option(&row.to_status),
        "event_digest" => row.event_digest.clone(),
        "prev_hash" => row.prev_hash.clone(),
        "hash" => row.hash.clone(),
        _ => String::new(),
    }
}

impl std::fmt::Display for Verification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(problem) = &self.first_break else {
            return write!(
                f,
                "audit chain intact: {} rows, through event {}, tip {}",
                self.rows, self.through, self.tip
            );
        };
        match problem {
            Break::Altered {
                seq,
                fields,
                found,
                expected,
            } => {
                writeln!(
                    f,
                    "audit chain broken at row {seq}: altered; it is for {} but {} differ{}",
                    describe(expected),
                    fields.join(", "),
                    if fields.len() == 1 { "s" } else { "" }
                )?;
                for field in fields {
                    writeln!(
                        f,
                        "  {field}: the row says {:?}, the events say {:?}",
                        value_of(found, field),
                        value_of(expected, field)
                    )?;
                }
                if fields.contains(&"event_digest") {
                    writeln!(f, "  (the event's payload or metadata no longer matches the digest recorded for it)")?;
                }
            }
            Break::Removed { seq, expected } => writeln!(
                f,
                "audit chain broken at row {seq}: removed; no row holds {}",
                describe(expected)
            )?,
            Break::Moved {
                seq,
                found_at,
                expected,
            } => writeln!(
                f,
                "audit chain broken at row {seq}: reordered; {} belongs at row {seq} but is at row {found_at}",
                describe(expected)
            )?,
            Break::Forged { seq, found } => writeln!(
                f,
                "audit chain broken at row {seq}: the row matches no event ({})",
                describe(found)
            )?,
        }
        write!(
            f,
            "{} rows before it are intact; the audit log has reached event {}",
            self.rows, self.through
        )
    }
}

/// Recomputes the chain from the events, up to where the audit log's subscription has
/// reached, and compares it row by row with `audit_log`, in one consistent snapshot.
pub async fn verify(pool: &PgPool) -> Result<Verification, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let through = checkpoint(&mut *tx, "audit_log")
        .await?
        .unwrap_or(LogPosition::START);
    let mut chain = Chain::default();
    let mut expected: std::collections::VecDeque<AuditRow> = Default::default();
    let mut found: std::collections::VecDeque<AuditRow> = Default::default();
    let audited = Selection::of(Some(AUDITED), true, &[], &[]);
    let mut read_to = LogPosition::START;
    let mut events_done = false;
    let mut rows_done = false;
    let mut matched = 0_i64;
    let mut last_seq = 0_i64;
    loop {
        while expected.is_empty() && !events_done {
            let batch = audited.read_after(&mut *tx, read_to, BATCH).await?;
            events_done = batch.len() < BATCH as usize;
            for event in batch {
                read_to = event.log;
                if event.log > through {
                    events_done = true;
                    break;
                }
                expected.extend(chain.next(&event));
            }
        }
        if found.is_empty() && !rows_done {
            let batch: Vec<AuditRow> =
                sqlx::query_as("SELECT * FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2")
                    .bind(last_seq)
                    .bind(BATCH)
                    .fetch_all(&mut *tx)
                    .await?;
            rows_done = batch.len() < BATCH as usize;
            last_seq = batch.last().map(|r| r.seq).unwrap_or(last_seq);
            found.extend(batch);
        }
        let problem = match (expected.pop_front(), found.pop_front()) {
            (None, None) => None,
            (Some(e), Some(f)) if e == f => {
                matched += 1;
                continue;
            }
            (Some(e), Some(f)) => Some(classify(&mut tx, e, f).await?),
            (Some(e), None) => Some(Break::Removed {
                seq: e.seq,
                expected: Box::new(e),
            }),
            (None, Some(f)) => Some(Break::Forged {
                seq: f.seq,
                found: Box::new(f),
            }),
        };
        tx.rollback().await?;
        return Ok(Verification {
            rows: matched,
            through,
            tip: if problem.is_none() {
                chain.tip.clone()
            } else {
                String::new()
            },
            first_break: problem,
        });
    }
}

async fn classify(
    conn: &mut PgConnection,
    expected: AuditRow,
    found: AuditRow,
) -> Result<Break, sqlx::Error> {
    let seq = expected.seq;
    if found.event() == expected.event() {
        return Ok(Break::Altered {
            seq,
            fields: found.differences(&expected),
            found: Box::new(found),
            expected: Box::new(expected),
        });
    }
    let is_event: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM events \
         WHERE transaction_id = $1::bigint::text::xid8 AND position = $2)",
    )
    .bind(found.transaction_id)
    .bind(found.position)
    .fetch_one(&mut *conn)
    .await?;
    if !is_event {
        return Ok(Break::Forged {
            seq,
            found: Box::new(found),
        });
    }
    let elsewhere: Option<i64> =
        sqlx::query_scalar("SELECT seq FROM audit_log WHERE transaction_id = $1 AND position = $2")
            .bind(expected.transaction_id)
            .bind(expected.position)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(match elsewhere {
        Some(found_at) => Break::Moved {
            seq,
            found_at,
            expected: Box::new(expected),
        },
        None => Break::Removed {
            seq,
            expected: Box::new(expected),
        },
    })
}

/// One step of a proposal's story.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Step {
    pub at: DateTime<Utc>,
    /// Milliseconds since the step before (0 for the first).
    pub after_ms: i64,
    /// Milliseconds since the first step.
    pub elapsed_ms: i64,
    pub aggregate: String,
    pub event_type: String,
    pub actor: String,
    pub role: Option<String>,
    /// One line for people.
    pub what: String,
    /// The facts behind the line, for tools and for the indented detail in text.
    pub details: Value,
}

/// A proposal's story.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Story {
    pub proposal: String,
    pub title: String,
    pub action_type: String,
    pub vertical: String,
    pub status: String,
    pub steps: Vec<Step>,
}

#[derive(Debug, thiserror::Error)]
pub enum ShowError {
    #[error("no proposal {0}")]
    NotFound(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("event {0} cannot be read: {1}")]
    Unreadable(String, serde_json::Error),
}

async fn stream(
    pool: &PgPool,
    aggregate_type: &str,
    ids: &[String],
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM events WHERE aggregate_type = $1 AND aggregate_id = ANY($2) \
         ORDER BY events.transaction_id, events.position"
    ))
    .bind(aggregate_type)
    .bind(ids)
    .fetch_all(pool)
    .await?;
    rows.iter().map(from_row).collect()
}

/// The story of proposal `id`, from its events and the signals behind it, in log order.
pub async fn story(pool: &PgPool, id: &str) -> Result<Story, ShowError> {
    let events = stream(pool, "Proposal", &[id.to_string()]).await?;
    if events.is_empty() {
        return Err(ShowError::NotFound(id.to_string()));
    }
    let mut decoded = Vec::with_capacity(events.len());
    for event in &events {
        let proposal: ProposalEvent = event
            .decode()
            .map_err(|e| ShowError::Unreadable(format!("Proposal/{id}#{}", event.sequence), e))?;
        decoded.push(proposal);
    }
    let mut story = Story {
        proposal: id.to_string(),
        title: String::new(),
        action_type: String::new(),
        vertical: String::new(),
        status: "not drafted".into(),
        steps: Vec::new(),
    };
    let mut signals: Vec<String> = Vec::new();
    let mut seen = Seen::default();
    for proposal in &decoded {
        match proposal {
            ProposalEvent::Drafted { draft, .. } | ProposalEvent::DraftSuppressed { draft, .. } => {
                story.title = draft.title.clone();
                story.action_type = draft.action_type.clone();
                story.vertical = text_of(&draft.vertical);
                signals.extend(draft.inbound_ids.iter().cloned());
            }
            ProposalEvent::Revised { revision, .. } => {
                story.title = revision.title.clone();
                signals.push(revision.inbound_id.clone());
            }
            _ => {}
        }
        if let Some(status) = proposal.status_after() {
            story.status = status.to_string();
        }
    }
    let inbound = stream(pool, "Inbound", &signals).await?;
    let mut all: Vec<(StoredEvent, Option<ProposalEvent>)> = inbound
        .into_iter()
        .map(|e| (e, None))
        .chain(events.into_iter().zip(decoded.into_iter().map(Some)))
        .collect();
    all.sort_by_key(|(e, _)| e.log);

    let start = all.first().map(|(e, _)| e.recorded_at);
    let mut previous_elapsed = 0;
    for (event, proposal) in all {
        let (what, details) = match &proposal {
            None => signal_step(&event),
            Some(p) => proposal_step(p, &mut seen, &story.action_type),
        };
        let elapsed_ms = start
            .map(|s| (event.recorded_at - s).num_milliseconds().max(0))
            .unwrap_or(0);
        story.steps.push(Step {
            at: event.recorded_at,
            after_ms: elapsed_ms - previous_elapsed,
            elapsed_ms,
            aggregate: format!("{}/{}", event.aggregate_type, event.aggregate_id),
            event_type: event.event_type.clone(),
            actor: actor_of(&event).unwrap_or_else(|| "system".into()),
            role: crate::projections::audit_log::field(&event, "role"),
            what,
            details,
        });
        previous_elapsed = elapsed_ms;
    }
    Ok(story)
}

fn text_of<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn actor_of(event: &StoredEvent) -> Option<String> {
    if event.aggregate_type == "Inbound" {
        return event
            .payload
            .pointer("/Received/source")
            .and_then(Value::as_str)
            .map(|source| format!("{source} webhook"));
    }
    Some(crate::projections::audit_log::actor(event))
}

fn signal_step(event: &StoredEvent) -> (String, Value) {
    match event.decode::<InboundEvent>() {
        Ok(InboundEvent::Received(signal)) => (
            format!(
                "signal {} {} from {}, which happened at {}",
                signal.kind,
                signal.external_id,
                signal.source,
                signal.occurred_at.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            json!({
                "inbound_id": event.aggregate_id,
                "source": signal.source,
                "kind": signal.kind,
                "external_id": signal.external_id,
                "occurred_at": signal.occurred_at,
            }),
        ),
        Err(_) => (
            format!("signal {} (unreadable payload)", event.aggregate_id),
            json!({ "inbound_id": event.aggregate_id }),
        ),
    }
}

/// What the story has seen so far that a later step's line needs.
#[derive(Default)]
struct Seen {
    action: Value,
    approvals: u32,
    approvals_needed: u32,
    rejections: u32,
    rejections_needed: u32,
}

fn proposal_step(event: &ProposalEvent, seen: &mut Seen, action_type: &str) -> (String, Value) {
    use ProposalEvent as E;
    let action = &mut seen.action;
    match event {
        E::Drafted {
            draft,
            payload_hash,
        } => {
            *action = draft.action.clone();
            seen.approvals_needed = draft.terms.approvals_needed;
            seen.rejections_needed = draft.terms.rejections_needed;
            let mut details = json!({
                "reasoning": draft.reasoning,
                "drivers": draft.drivers,
                "score": draft.score,
                "urgency": draft.urgency,
                "due_by": draft.due_by,
                "owner": draft.owner,
                "action_type": draft.action_type,
                "action": draft.action,
                "payload_hash": payload_hash,
            });
            // Terms are shown where they say something: drafts made before quorums and
            // deadlines existed read as they always did.
            let terms = &draft.terms;
            if let Value::Object(map) = &mut details {
                if let Some(by) = &draft.requested_by {
                    map.insert("requested_by".into(), json!(by));
                }
                if terms.approvals_needed > 1 {
                    map.insert("approvals_needed".into(), json!(terms.approvals_needed));
                }
                if terms.rejections_needed > 1 {
                    map.insert("rejections_needed".into(), json!(terms.rejections_needed));
                }
                if let Some(at) = terms.expires_at {
                    map.insert("expires_at".into(), json!(at));
                }
                if !terms.escalations.is_empty() {
                    map.insert("escalations".into(), json!(terms.escalations));
                }
            }
            (
                format!("drafted \"{}\", score {}", draft.title, draft.score),
                details,
            )
        }
        E::DraftSuppressed { draft, reason, .. } => {
            *action = draft.action.clone();
            (
                format!("drafted \"{}\" but held back: {reason}", draft.title),
                json!({
                    "reasoning": draft.reasoning,
                    "drivers": draft.drivers,
                    "score": draft.score,
                    "action_type": draft.action_type,
                    "action": draft.action,
                }),
            )
        }
        E::Revised {
            revision,
            payload_hash,
        } => {
            *action = revision.action.clone();
            seen.approvals = 0;
            seen.rejections = 0;
            (
                format!(
                    "revised by signal {}, score now {}",
                    revision.inbound_id, revision.score
                ),
                json!({
                    "reasoning": revision.reasoning,
                    "drivers": revision.drivers,
                    "score": revision.score,
                    "action": revision.action,
                    "payload_hash": payload_hash,
                }),
            )
        }
        E::ApprovalAdded(decision) => {
            seen.approvals += 1;
            (
                format!(
                    "approval {} of {} by {} ({}); still pending",
                    seen.approvals,
                    seen.approvals_needed,
                    decision.actor,
                    text_of(&decision.role)
                ),
                json!({ "comment": decision.comment, "payload_hash": decision.payload_hash }),
            )
        }
        E::Approved(decision) => {
            seen.approvals += 1;
            let quorum = if seen.approvals_needed > 1 {
                format!(
                    ", approval {} of {}: quorum reached",
                    seen.approvals, seen.approvals_needed
                )
            } else {
                String::new()
            };
            (
                format!(
                    "approved by {} ({}){quorum}",
                    decision.actor,
                    text_of(&decision.role)
                ),
                json!({ "comment": decision.comment, "payload_hash": decision.payload_hash }),
            )
        }
        E::RejectionAdded { decision, reason } => {
            seen.rejections += 1;
            (
                format!(
                    "rejection {} of {} by {} ({}); still pending: {reason}",
                    seen.rejections,
                    seen.rejections_needed,
                    decision.actor,
                    text_of(&decision.role)
                ),
                json!({ "reason": reason, "comment": decision.comment }),
            )
        }
        E::Rejected { decision, reason } => (
            format!(
                "rejected by {} ({}): {reason}",
                decision.actor,
                text_of(&decision.role)
            ),
            json!({ "reason": reason, "comment": decision.comment }),
        ),
        E::Expired { at } => ("expired undecided".into(), json!({ "at": at })),
        E::Escalated { at, level, to } => (
            format!("escalated to level {level}: {}", to.join(", ")),
            json!({ "at": at, "level": level, "to": to }),
        ),
        E::Superseded { by, reason } => (
            format!("superseded: {reason}"),
            json!({ "by": by, "reason": reason }),
        ),
        E::Previewed {
            actor, requests, ..
        } => (
            format!("dry run by {actor}: nothing sent"),
            json!({ "requests": requests }),
        ),
        E::ExecutionDeferred { reason, until } => (
            match until {
                Some(until) => format!(
                    "held: {reason}, until {}",
                    until.format("%Y-%m-%d %H:%M:%S UTC")
                ),
                None => format!("held: {reason}"),
            },
            json!({ "reason": reason, "until": until }),
        ),
        E::ExecutionStarted {
            attempt,
            idempotency_key,
        } => (
            format!("attempt {attempt} started"),
            json!({
                "attempt": attempt,
                "idempotency_key": idempotency_key,
                "request": { "action_type": action_type, "action": action.clone() },
            }),
        ),
        E::ExecutionSucceeded {
            attempt, result, ..
        } => (
            format!("attempt {attempt} succeeded"),
            json!({ "attempt": attempt, "result": result }),
        ),
        E::ExecutionFailed {
            attempt,
            error,
            retryable,
        } => (
            format!(
                "attempt {attempt} failed{}: {error}",
                if *retryable { ", will retry" } else { "" }
            ),
            json!({ "attempt": attempt, "error": error, "retryable": retryable }),
        ),
        E::ExecutionUncertain { attempt, reason } => (
            format!("attempt {attempt} uncertain, for a person to resolve: {reason}"),
            json!({ "attempt": attempt, "reason": reason }),
        ),
        E::RolledBack {
            actor,
            role,
            result,
        } => (
            format!("rolled back by {actor} ({})", text_of(role)),
            json!({ "result": result }),
        ),
        E::RollbackRequested {
            actor,
            role,
            reason,
            complete,
        } => (
            format!(
                "undo asked for by {actor} ({}){}: {reason}",
                text_of(role),
                if *complete { "" } else { ", waiting for more" }
            ),
            json!({ "reason": reason, "complete": complete }),
        ),
        E::RollbackStarted { attempt } => (
            format!("undo attempt {attempt} started"),
            json!({ "attempt": attempt }),
        ),
        E::RollbackFailed {
            attempt,
            error,
            retryable,
        } => (
            format!(
                "undo attempt {attempt} failed{}: {error}",
                if *retryable {
                    ", will retry"
                } else {
                    "; the action stands"
                }
            ),
            json!({ "attempt": attempt, "error": error, "retryable": retryable }),
        ),
        E::RollbackUncertain { attempt, reason } => (
            format!("undo attempt {attempt} uncertain, for a person to check: {reason}"),
            json!({ "attempt": attempt, "reason": reason }),
        ),
        E::MarkedDone { actor, role, note } => (
            format!("marked done by {actor} ({})", text_of(role)),
            json!({ "note": note }),
        ),
        E::RetryRequested { actor, role } => (
            format!("retry asked for by {actor} ({})", text_of(role)),
            json!({}),
        ),
        E::OutcomeRecorded {
            kind,
            summary,
            value_cents,
        } => (
            format!("outcome: {summary}"),
            json!({ "kind": kind, "value_cents": value_cents }),
        ),
    }
}

/// `+120ms`, `+4.2s`, `+3m 05s`, `+2h 10m`, `+3d 4h`.
pub fn delay(ms: i64) -> String {
    let s = ms / 1000;
    match ms {
        ..=999 => format!("+{ms}ms"),
        1_000..=59_999 => format!("+{}.{}s", s, (ms % 1000) / 100),
        60_000..=3_599_999 => format!("+{}m {:02}s", s / 60, s % 60),
        3_600_000..=86_399_999 => format!("+{}h {:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("+{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// Detail keys the text leaves out because the step's line already says them (the JSON
/// keeps everything).
const SAID_IN_THE_HEADLINE: &[&str] = &[
    "payload_hash",
    "attempt",
    "external_id",
    "kind",
    "source",
    "occurred_at",
    "score",
    "error",
    "retryable",
    "reason",
    "until",
    "value_cents",
];

/// The story as text for people: a heading, then a line per step with its time and the
/// delay since the step before, and the step's facts indented beneath.
pub fn render_text(story: &Story) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Proposal {}", story.proposal);
    let _ = writeln!(out, "  {}", story.title);
    let _ = writeln!(
        out,
        "  {} · {} · now {}",
        story.action_type, story.vertical, story.status
    );
    if let Some(last) = story.steps.last() {
        let _ = writeln!(
            out,
            "  {} steps over {}",
            story.steps.len(),
            delay(last.elapsed_ms).trim_start_matches('+')
        );
    }
    out.push('\n');
    for step in &story.steps {
        let _ = writeln!(
            out,
            "{}  {:>9}  {}",
            step.at.format("%Y-%m-%d %H:%M:%S%.3f UTC"),
            if step.after_ms == 0 && step.elapsed_ms == 0 {
                String::new()
            } else {
                delay(step.after_ms)
            },
            step.what
        );
        if let Value::Object(details) = &step.details {
            for (key, value) in details {
                if value.is_null() || SAID_IN_THE_HEADLINE.contains(&key.as_str()) {
                    continue;
                }
                let shown = match value {
                    Value::String(text) => text.clone(),
                    Value::Array(items) if items.iter().all(Value::is_string) => items
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("; "),
                    other => other.to_string(),
                };
                let _ = writeln!(out, "{:38}{key}: {shown}", "");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::delay;

    #[test]
    fn delays_read_at_a_glance() {
        let cases = [
            (0, "+0ms"),
            (120, "+120ms"),
            (4_260, "+4.2s"),
            (185_000, "+3m 05s"),
            (7_800_000, "+2h 10m"),
            (273_600_000, "+3d 4h"),
        ];
        for (ms, text) in cases {
            assert_eq!(delay(ms), text, "{ms} ms");
        }
    }
}
