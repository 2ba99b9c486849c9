//! Every proposal as it stands, for the inbox (pending, newest first, filterable by vertical
//! and urgency) and Today's Moves (pending, due within 24 hours first, then by score).
//!
//! A batch of events is folded into the rows it touches in memory, read with one query and
//! written back with one, so a replay of a long log costs two statements a batch rather
//! than one an event.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use crate::domain::{ProposalEvent, Status, Urgency};
use crate::store::log::{LogPosition, StoredEvent};
use crate::store::subscription::{HandlerError, Subscriber};

#[derive(Debug, Default)]
pub struct Proposals;

fn urgency_text(urgency: Urgency) -> (String, i32) {
    let rank = match urgency {
        Urgency::Low => 1,
        Urgency::Medium => 2,
        Urgency::High => 3,
        Urgency::Critical => 4,
    };
    let text = serde_json::to_value(urgency)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    (text, rank)
}

/// A whole row of `proposal_summaries`.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
struct Row {
    id: String,
    status: String,
    vertical: String,
    action_type: String,
    title: String,
    reasoning: String,
    drivers: Value,
    score: i32,
    urgency: String,
    urgency_rank: i32,
    due_by: Option<DateTime<Utc>>,
    owner: Option<String>,
    subject_key: String,
    inbound_ids: Value,
    action: Value,
    payload_hash: String,
    suppressed_reason: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    waiting_reason: Option<String>,
    waiting_until: Option<DateTime<Utc>>,
    last_error: Option<String>,
    executed_at: Option<DateTime<Utc>>,
    outcome: Option<String>,
    approved_by: Value,
    approvals_needed: i32,
    rejected_by: Value,
    rejections_needed: i32,
    expires_at: Option<DateTime<Utc>>,
    escalations: Value,
    escalation_level: i32,
    escalate_at: Option<DateTime<Utc>>,
}

const ROW: &str = "id, status, vertical, action_type, title, reasoning, drivers, score, urgency, \
    urgency_rank, due_by, owner, subject_key, inbound_ids, action, payload_hash, suppressed_reason, \
    created_at, updated_at, waiting_reason, waiting_until, last_error, executed_at, outcome, \
    approved_by, approvals_needed, rejected_by, rejections_needed, expires_at, escalations, \
    escalation_level, escalate_at";

/// The time of ladder level `level + 1`, the next to tell, from the draft's schedule.
fn next_escalation(escalations: &Value, level: i32) -> Option<DateTime<Utc>> {
    let step = escalations.get(usize::try_from(level).ok()?)?;
    serde_json::from_value(step.get("at")?.clone()).ok()
}

fn push(list: &mut Value, actor: String) {
    if let Value::Array(items) = list {
        items.push(Value::String(actor));
    }
}

/// Execution progress: a new status (or none), why it waits and until when, the last error.
fn set_execution(
    row: &mut Row,
    status: Option<Status>,
    waiting: Option<&str>,
    until: Option<DateTime<Utc>>,
    error: Option<&str>,
    at: DateTime<Utc>,
) {
    if let Some(status) = status {
        row.status = status.to_string();
    }
    row.waiting_reason = waiting.map(str::to_string);
    row.waiting_until = until;
    if let Some(error) = error {
        row.last_error = Some(error.to_string());
    }
    row.updated_at = at;
}

/// Folds one event into the proposal's row (`None`: it has none yet). Events for a
/// proposal without a row change nothing, as an `UPDATE` of no row would.
fn apply(
    slot: &mut Option<Row>,
    id: &str,
    event: ProposalEvent,
    at: DateTime<Utc>,
) -> Result<(), HandlerError> {
    use ProposalEvent as E;
    if let E::Drafted {
        draft,
        payload_hash,
    }
    | E::DraftSuppressed {
        draft,
        payload_hash,
        ..
    } = &event
    {
        if slot.is_none() {
            let suppressed = match &event {
                E::DraftSuppressed { reason, .. } => Some(reason.clone()),
                _ => None,
            };
            let (urgency, urgency_rank) = urgency_text(draft.urgency);
            let escalations = serde_json::to_value(&draft.terms.escalations)?;
            *slot = Some(Row {
                id: id.to_string(),
                status: event.status_after().unwrap_or_default().to_string(),
                vertical: serde_json::to_value(draft.vertical)?
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                action_type: draft.action_type.clone(),
                title: draft.title.clone(),
                reasoning: draft.reasoning.clone(),
                drivers: serde_json::to_value(&draft.drivers)?,
                score: i32::from(draft.score),
                urgency,
                urgency_rank,
                due_by: draft.due_by,
                owner: draft.owner.clone(),
                subject_key: draft.subject_key.clone(),
                inbound_ids: serde_json::to_value(&draft.inbound_ids)?,
                action: draft.action.clone(),
                payload_hash: payload_hash.clone(),
                suppressed_reason: suppressed,
                created_at: at,
                updated_at: at,
                waiting_reason: None,
                waiting_until: None,
                last_error: None,
                executed_at: None,
                outcome: None,
                approved_by: Value::Array(Vec::new()),
                approvals_needed: i32::try_from(draft.terms.approvals_needed).unwrap_or(i32::MAX),
                rejected_by: Value::Array(Vec::new()),
                rejections_needed: i32::try_from(draft.terms.rejections_needed).unwrap_or(i32::MAX),
                expires_at: draft.terms.expires_at,
                escalate_at: next_escalation(&escalations, 0),
                escalations,
                escalation_level: 0,
            });
        }
        return Ok(());
    }
    let Some(row) = slot.as_mut() else {
        return Ok(());
    };
    let status = event.status_after();
    match event {
        E::Drafted { .. } | E::DraftSuppressed { .. } | E::Previewed { .. } => {}
        E::Revised {
            revision,
            payload_hash,
        } => {
            let (urgency, rank) = urgency_text(revision.urgency);
            row.title = revision.title;
            row.reasoning = revision.reasoning;
            row.drivers = serde_json::to_value(&revision.drivers)?;
            row.score = i32::from(revision.score);
            row.urgency = urgency;
            row.urgency_rank = rank;
            row.due_by = revision.due_by;
            row.action = revision.action;
            row.payload_hash = payload_hash;
            if let Some(terms) = revision.terms {
                row.approvals_needed = i32::try_from(terms.approvals_needed).unwrap_or(i32::MAX);
                row.rejections_needed = i32::try_from(terms.rejections_needed).unwrap_or(i32::MAX);
                row.expires_at = terms.expires_at;
                row.escalations = serde_json::to_value(&terms.escalations)?;
                row.escalation_level = 0;
                row.escalate_at = next_escalation(&row.escalations, 0);
            }
            if let Value::Array(ids) = &mut row.inbound_ids {
                ids.push(Value::String(revision.inbound_id));
            }
            // Decisions so far were of the payload before.
            row.approved_by = Value::Array(Vec::new());
            row.rejected_by = Value::Array(Vec::new());
            row.updated_at = at;
        }
        E::ApprovalAdded(decision) => {
            push(&mut row.approved_by, decision.actor);
            row.updated_at = at;
        }
        E::RejectionAdded { decision, .. } => {
            push(&mut row.rejected_by, decision.actor);
            row.updated_at = at;
        }
        E::Escalated { level, .. } => {
            row.escalation_level = i32::try_from(level).unwrap_or(i32::MAX);
            row.escalate_at = next_escalation(&row.escalations, row.escalation_level);
            row.updated_at = at;
        }
        E::Approved(decision) => {
            push(&mut row.approved_by, decision.actor);
            row.status = status.unwrap_or_default().to_string();
            row.updated_at = at;
        }
        E::Rejected { decision, .. } => {
            push(&mut row.rejected_by, decision.actor);
            row.status = status.unwrap_or_default().to_string();
            row.updated_at = at;
        }
        E::Expired { .. } | E::Superseded { .. } | E::RolledBack { .. } => {
            row.status = status.unwrap_or_default().to_string();
            row.updated_at = at;
        }
        E::ExecutionDeferred { reason, until } => {
            set_execution(row, None, Some(&reason), until, None, at)
        }
        E::ExecutionStarted { .. } | E::RetryRequested { .. } => {
            set_execution(row, status, None, None, None, at)
        }
        E::ExecutionSucceeded { .. } | E::MarkedDone { .. } => {
            set_execution(row, status, None, None, None, at);
            row.executed_at = Some(at);
        }
        E::ExecutionFailed {
            error, retryable, ..
        } => {
            let waiting = retryable.then_some("retrying after a failure");
            set_execution(row, status, waiting, None, Some(&error), at)
        }
        E::ExecutionUncertain { reason, .. } => {
            set_execution(row, status, None, None, Some(&reason), at)
        }
        E::RollbackRequested { complete, .. } => {
            let waiting = (!complete).then_some("the undo waits for more people to ask");
            set_execution(row, status, waiting, None, None, at)
        }
        E::RollbackStarted { .. } => set_execution(row, status, None, None, None, at),
        E::RollbackFailed {
            error, retryable, ..
        } => {
            let waiting = retryable.then_some("undoing again after a failure");
            set_execution(row, status, waiting, None, Some(&error), at)
        }
        E::RollbackUncertain { reason, .. } => {
            set_execution(row, status, None, None, Some(&reason), at)
        }
        E::OutcomeRecorded { summary, .. } => {
            row.outcome = Some(match row.outcome.take() {
                Some(before) => format!("{before}; {summary}"),
                None => summary,
            });
        }
    }
    Ok(())
}

/// Writes `rows` back in one statement.
async fn upsert(conn: &mut PgConnection, rows: &[&Row]) -> Result<(), sqlx::Error> {
    macro_rules! column {
        ($name:ident) => {
            rows.iter().map(|r| r.$name.clone()).collect::<Vec<_>>()
        };
    }
    let assignments: Vec<String> = ROW
        .split(',')
        .map(str::trim)
        .filter(|c| *c != "id")
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    let sql = format!(
        "INSERT INTO proposal_summaries ({ROW}) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
           $6::text[], $7::jsonb[], $8::int[], $9::text[], $10::int[], $11::timestamptz[], \
           $12::text[], $13::text[], $14::jsonb[], $15::jsonb[], $16::text[], $17::text[], \
           $18::timestamptz[], $19::timestamptz[], $20::text[], $21::timestamptz[], $22::text[], \
           $23::timestamptz[], $24::text[], $25::jsonb[], $26::int[], $27::jsonb[], $28::int[], \
           $29::timestamptz[], $30::jsonb[], $31::int[], $32::timestamptz[]) \
         ON CONFLICT (id) DO UPDATE SET {}",
        assignments.join(", ")
    );
    sqlx::query(&sql)
        .bind(column!(id))
        .bind(column!(status))
        .bind(column!(vertical))
        .bind(column!(action_type))
        .bind(column!(title))
        .bind(column!(reasoning))
        .bind(column!(drivers))
        .bind(column!(score))
        .bind(column!(urgency))
        .bind(column!(urgency_rank))
        .bind(column!(due_by))
        .bind(column!(owner))
        .bind(column!(subject_key))
        .bind(column!(inbound_ids))
        .bind(column!(action))
        .bind(column!(payload_hash))
        .bind(column!(suppressed_reason))
        .bind(column!(created_at))
        .bind(column!(updated_at))
        .bind(column!(waiting_reason))
        .bind(column!(waiting_until))
        .bind(column!(last_error))
        .bind(column!(executed_at))
        .bind(column!(outcome))
        .bind(column!(approved_by))
        .bind(column!(approvals_needed))
        .bind(column!(rejected_by))
        .bind(column!(rejections_needed))
        .bind(column!(expires_at))
        .bind(column!(escalations))
        .bind(column!(escalation_level))
        .bind(column!(escalate_at))
        .execute(conn)
        .await
        .map(|_| ())
}

impl Subscriber for Proposals {
    fn name(&self) -> &str {
        "proposals"
    }

    fn payload_types(&self) -> Option<&'static [&'static str]> {
        Some(&["Proposal"])
    }

    fn ignores_other_types(&self) -> bool {
        true
    }

    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), HandlerError> {
        self.handle_batch(conn, std::slice::from_ref(event))
            .await
            .map_err(|(_, error)| error)
    }

    /// Reads the rows the batch touches, folds the events into them in log order, and
    /// writes the changed ones back.
    async fn handle_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), (LogPosition, HandlerError)> {
        let events: Vec<&StoredEvent> = events
            .iter()
            .filter(|e| e.aggregate_type == "Proposal")
            .collect();
        let Some(last) = events.last().map(|e| e.log) else {
            return Ok(());
        };
        let mut ids: Vec<&str> = events.iter().map(|e| e.aggregate_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let found: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {ROW} FROM proposal_summaries WHERE id IN (SELECT unnest($1::text[]))"
        ))
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| (last, e.into()))?;
        let before: HashMap<String, Row> =
            found.into_iter().map(|row| (row.id.clone(), row)).collect();
        let mut rows: HashMap<&str, Option<Row>> = ids
            .iter()
            .map(|id| (*id, before.get(*id).cloned()))
            .collect();
        for event in &events {
            let proposal: ProposalEvent =
                ProposalEvent::deserialize(&event.payload).map_err(|e| (event.log, e.into()))?;
            let slot = rows.entry(event.aggregate_id.as_str()).or_default();
            apply(slot, &event.aggregate_id, proposal, event.recorded_at)
                .map_err(|e| (event.log, e))?;
        }
        let mut changed: Vec<&Row> = rows
            .values()
            .flatten()
            .filter(|row| before.get(&row.id) != Some(*row))
            .collect();
        if changed.is_empty() {
            return Ok(());
        }
        // A fixed order, so two writers can never lock the same rows in opposite orders.
        changed.sort_by(|a, b| a.id.cmp(&b.id));
        upsert(conn, &changed).await.map_err(|e| (last, e.into()))
    }
}

/// A proposal as the inbox and the queue show it.
#[derive(Clone, Debug, PartialEq, Serialize, sqlx::FromRow)]
pub struct Summary {
    pub id: String,
    pub status: String,
    pub vertical: String,
    pub action_type: String,
    pub title: String,
    pub reasoning: String,
    pub drivers: Value,
    pub score: i32,
    pub urgency: String,
    pub due_by: Option<DateTime<Utc>>,
    pub owner: Option<String>,
    pub subject_key: String,
    pub inbound_ids: Value,
    pub action: Value,
    pub payload_hash: String,
    pub suppressed_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Why an approved execution waits (a guardrail, a back-off), and until when.
    pub waiting_reason: Option<String>,
    pub waiting_until: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub executed_at: Option<DateTime<Utc>>,
    /// Outcomes recorded so far, `; `-separated.
    pub outcome: Option<String>,
    /// Who approved so far, in order (a JSON array of emails), and how many it takes.
    pub approved_by: Value,
    pub approvals_needed: i32,
    pub rejected_by: Value,
    pub rejections_needed: i32,
    /// Undecided past this time, it expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// The ladder levels told so far, and when the next is due.
    pub escalation_level: i32,
    pub escalate_at: Option<DateTime<Utc>>,
}

/// The strings of a JSON array column (drivers, inbound ids, approvers); nothing for
/// anything else.
pub fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl Summary {
    /// The emails of those who approved so far.
    pub fn approvers(&self) -> Vec<String> {
        strings(&self.approved_by)
    }

    /// Whether a deadline (expiry or escalation) has passed while it is pending.
    pub fn is_due(&self, now: DateTime<Utc>) -> bool {
        self.status == "pending"
            && (self.expires_at.is_some_and(|t| t <= now)
                || self.escalate_at.is_some_and(|t| t <= now))
    }
}

const COLUMNS: &str = "id, status, vertical, action_type, title, reasoning, drivers, score, urgency, \
    due_by, owner, subject_key, inbound_ids, action, payload_hash, suppressed_reason, created_at, updated_at, \
    waiting_reason, waiting_until, last_error, executed_at, outcome, approved_by, approvals_needed, \
    rejected_by, rejections_needed, expires_at, escalation_level, escalate_at";

/// Pending proposals whose expiry or next escalation is at or before `now`, oldest deadline
/// first; each condition walks its own partial index.
pub async fn due<'e>(
    db: impl sqlx::PgExecutor<'e>,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM ( \
           (SELECT id, expires_at AS at FROM proposal_summaries \
            WHERE status = 'pending' AND expires_at <= $1 ORDER BY expires_at LIMIT $2) \
           UNION \
           (SELECT id, escalate_at AS at FROM proposal_summaries \
            WHERE status = 'pending' AND escalate_at <= $1 ORDER BY escalate_at LIMIT $2) \
         ) due ORDER BY at, id LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// What the inbox may be narrowed to.
#[derive(Clone, Debug, Default)]
pub struct InboxFilter {
    pub vertical: Option<String>,
    pub urgency: Option<String>,
    pub limit: i64,
    pub offset: i64,
}

/// Pending proposals, newest first. Only the filters asked for go into the query, so the
/// planner walks the (status, created_at, id) index whatever the parameters.
pub async fn inbox(pool: &PgPool, filter: &InboxFilter) -> Result<Vec<Summary>, sqlx::Error> {
    let mut sql = format!("SELECT {COLUMNS} FROM proposal_summaries WHERE status = 'pending'");
    let mut n = 0;
    if filter.vertical.is_some() {
        n += 1;
        sql.push_str(&format!(" AND vertical = ${n}"));
    }
    if filter.urgency.is_some() {
        n += 1;
        sql.push_str(&format!(" AND urgency = ${n}"));
    }
    sql.push_str(&format!(
        " ORDER BY created_at DESC, id DESC LIMIT ${} OFFSET ${}",
        n + 1,
        n + 2
    ));
    let mut query = sqlx::query_as::<_, Summary>(&sql);
    if let Some(vertical) = &filter.vertical {
        query = query.bind(vertical);
    }
    if let Some(urgency) = &filter.urgency {
        query = query.bind(urgency);
    }
    query
        .bind(filter.limit.clamp(1, 500))
        .bind(filter.offset.max(0))
        .fetch_all(pool)
        .await
}

/// What Today's Moves may be narrowed to. The status is `pending` unless asked otherwise.
#[derive(Clone, Debug, Default)]
pub struct QueueFilter {
    pub status: Option<String>,
    pub owner: Option<String>,
    pub vertical: Option<String>,
}

/// Today's Moves: the top `limit` pending proposals, due within 24 hours first, then by
/// score; and how many are pending in all.
pub async fn todays_moves(pool: &PgPool, limit: i64) -> Result<(Vec<Summary>, i64), sqlx::Error> {
    queue(pool, &QueueFilter::default(), limit).await
}

/// Today's Moves narrowed by `filter`: due within 24 hours first, then by score, and the
/// count of all that match. Two index walks in score order rather than one sort of
/// everything; only the filters asked for go into the query.
pub async fn queue(
    pool: &PgPool,
    filter: &QueueFilter,
    limit: i64,
) -> Result<(Vec<Summary>, i64), sqlx::Error> {
    let limit = limit.clamp(1, 500);
    let mut conditions = String::from("status = $1");
    let mut n = 1;
    if filter.owner.is_some() {
        n += 1;
        conditions.push_str(&format!(" AND owner = ${n}"));
    }
    if filter.vertical.is_some() {
        n += 1;
        conditions.push_str(&format!(" AND vertical = ${n}"));
    }
    let status = filter.status.clone().unwrap_or_else(|| "pending".into());
    let soon_sql = format!(
        "SELECT {COLUMNS} FROM proposal_summaries WHERE {conditions} \
         AND due_by <= now() + interval '24 hours' ORDER BY score DESC, created_at, id LIMIT ${}",
        n + 1
    );
    let rest_sql = format!(
        "SELECT {COLUMNS} FROM proposal_summaries WHERE {conditions} \
         AND (due_by IS NULL OR due_by > now() + interval '24 hours') \
         ORDER BY score DESC, created_at, id LIMIT ${}",
        n + 1
    );
    let count_sql = format!("SELECT count(*) FROM proposal_summaries WHERE {conditions}");
    let mut moves: Vec<Summary> = bound(sqlx::query_as(&soon_sql), &status, filter)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    if (moves.len() as i64) < limit {
        let rest: Vec<Summary> = bound(sqlx::query_as(&rest_sql), &status, filter)
            .bind(limit - moves.len() as i64)
            .fetch_all(pool)
            .await?;
        moves.extend(rest);
    }
    let (total,): (i64,) = bound(sqlx::query_as(&count_sql), &status, filter)
        .fetch_one(pool)
        .await?;
    Ok((moves, total))
}

/// Binds the queue's filter values, in the order `queue` numbered them.
fn bound<'q, O>(
    query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    status: &str,
    filter: &QueueFilter,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    let mut query = query.bind(status.to_string());
    if let Some(owner) = &filter.owner {
        query = query.bind(owner.clone());
    }
    if let Some(vertical) = &filter.vertical {
        query = query.bind(vertical.clone());
    }
    query
}

/// One proposal as it stands.
/// Approved proposals not finished yet (waiting, running, retrying) and executions a person
/// must resolve, most recently changed first.
pub async fn in_flight(pool: &PgPool, limit: i64) -> Result<Vec<Summary>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM proposal_summaries \
         WHERE status IN ('approved', 'executing', 'uncertain') \
            OR (status = 'failed' AND waiting_reason IS NOT NULL) \
         ORDER BY updated_at DESC LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(pool)
    .await
}

pub async fn by_id(pool: &PgPool, id: &str) -> Result<Option<Summary>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM proposal_summaries WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Proposals of any status, newest first, after `after` (created at, id) when given. Only
/// the filters asked for go into the query, so the planner walks the matching index.
pub async fn newest(
    pool: &PgPool,
    status: Option<&str>,
    vertical: Option<&str>,
    after: Option<(DateTime<Utc>, String)>,
    limit: i64,
) -> Result<Vec<Summary>, sqlx::Error> {
    let mut sql = format!("SELECT {COLUMNS} FROM proposal_summaries WHERE true");
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    if status.is_some() {
        sql.push_str(&format!(" AND status = ${}", next()));
    }
    if vertical.is_some() {
        sql.push_str(&format!(" AND vertical = ${}", next()));
    }
    if after.is_some() {
        let (a, b) = (next(), next());
        sql.push_str(&format!(" AND (created_at, id) < (${a}, ${b})"));
    }
    sql.push_str(&format!(
        " ORDER BY created_at DESC, id DESC LIMIT ${}",
        next()
    ));
    let mut select = sqlx::query_as::<_, Summary>(&sql);
    if let Some(status) = status {
        select = select.bind(status.to_string());
    }
    if let Some(vertical) = vertical {
        select = select.bind(vertical.to_string());
    }
    if let Some((at, id)) = after {
        select = select.bind(at).bind(id);
    }
    select.bind(limit).fetch_all(pool).await
}

/// One event of a proposal's stream, its fields unwrapped from the event's type.
#[derive(Clone, Debug)]
pub struct Step {
    pub sequence: i64,
    pub event_type: String,
    pub recorded_at: DateTime<Utc>,
    pub data: Value,
    pub metadata: Value,
}

/// Every event of a proposal's stream, in order: its timeline.
pub async fn history(pool: &PgPool, id: &str) -> Result<Vec<Step>, sqlx::Error> {
    let rows: Vec<(i64, String, DateTime<Utc>, Value, Value)> = sqlx::query_as(
        "SELECT sequence, event_type, recorded_at, payload::jsonb, metadata::jsonb FROM events \
         WHERE aggregate_type = 'Proposal' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(sequence, event_type, recorded_at, payload, metadata)| Step {
                data: payload.get(&event_type).cloned().unwrap_or(payload),
                sequence,
                event_type,
                recorded_at,
                metadata,
            },
        )
        .collect())
}

/// Every proposal drafted from the given signal, for tests and the audit.
pub async fn from_signal(pool: &PgPool, inbound_id: &str) -> Result<Vec<Summary>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM proposal_summaries WHERE inbound_ids ? $1 ORDER BY title"
    ))
    .bind(inbound_id)
    .fetch_all(pool)
    .await
}
