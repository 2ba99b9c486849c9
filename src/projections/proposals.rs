//! Every proposal as it stands, for the inbox (pending, newest first, filterable by vertical
//! and urgency) and Today's Moves (pending, due within 24 hours first, then by score).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use crate::domain::{ProposalEvent, Status, Urgency};
use crate::store::log::StoredEvent;
use crate::store::subscription::{HandlerError, Subscriber};

#[derive(Debug, Default)]
pub struct Proposals;

fn status_text(status: Status) -> String {
    status.to_string()
}

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

async fn set_status(
    conn: &mut PgConnection,
    id: &str,
    status: Status,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE proposal_summaries SET status = $2, updated_at = $3 WHERE id = $1")
        .bind(id)
        .bind(status_text(status))
        .bind(at)
        .execute(conn)
        .await
        .map(|_| ())
}

/// Execution progress: a new status (or none), why it waits and until when, the last error.
async fn set_execution(
    conn: &mut PgConnection,
    id: &str,
    status: Option<Status>,
    waiting: Option<&str>,
    until: Option<DateTime<Utc>>,
    error: Option<&str>,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE proposal_summaries SET status = coalesce($2, status), waiting_reason = $3, \
           waiting_until = $4, last_error = coalesce($5, last_error), updated_at = $6 \
         WHERE id = $1",
    )
    .bind(id)
    .bind(status.map(status_text))
    .bind(waiting)
    .bind(until)
    .bind(error)
    .bind(at)
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

    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), HandlerError> {
        if event.aggregate_type != "Proposal" {
            return Ok(());
        }
        let id = event.aggregate_id.as_str();
        let at = event.recorded_at;
        let proposal: ProposalEvent = serde_json::from_value(event.payload.clone())?;
        use ProposalEvent as E;
        match proposal {
            E::Drafted {
                draft,
                payload_hash,
            }
            | E::DraftSuppressed {
                draft,
                payload_hash,
                ..
            } => {
                let suppressed = proposal_reason(&event.payload);
                let status = if suppressed.is_some() {
                    Status::Suppressed
                } else {
                    Status::Pending
                };
                let (urgency, rank) = urgency_text(draft.urgency);
                sqlx::query(
                    "INSERT INTO proposal_summaries (id, status, vertical, action_type, title, reasoning, \
                       drivers, score, urgency, urgency_rank, due_by, owner, subject_key, inbound_ids, \
                       action, payload_hash, suppressed_reason, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $18) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(id)
                .bind(status_text(status))
                .bind(serde_json::to_value(draft.vertical)?.as_str().unwrap_or_default().to_string())
                .bind(&draft.action_type)
                .bind(&draft.title)
                .bind(&draft.reasoning)
                .bind(serde_json::to_value(&draft.drivers)?)
                .bind(i32::from(draft.score))
                .bind(urgency)
                .bind(rank)
                .bind(draft.due_by)
                .bind(&draft.owner)
                .bind(&draft.subject_key)
                .bind(serde_json::to_value(&draft.inbound_ids)?)
                .bind(&draft.action)
                .bind(payload_hash)
                .bind(suppressed)
                .bind(at)
                .execute(conn)
                .await?;
            }
            E::Revised {
                revision,
                payload_hash,
            } => {
                let (urgency, rank) = urgency_text(revision.urgency);
                sqlx::query(
                    "UPDATE proposal_summaries SET title = $2, reasoning = $3, drivers = $4, score = $5, \
                       urgency = $6, urgency_rank = $7, due_by = $8, action = $9, payload_hash = $10, \
                       inbound_ids = inbound_ids || to_jsonb($11::text), updated_at = $12 \
                     WHERE id = $1",
                )
                .bind(id)
                .bind(&revision.title)
                .bind(&revision.reasoning)
                .bind(serde_json::to_value(&revision.drivers)?)
                .bind(i32::from(revision.score))
                .bind(urgency)
                .bind(rank)
                .bind(revision.due_by)
                .bind(&revision.action)
                .bind(payload_hash)
                .bind(&revision.inbound_id)
                .bind(at)
                .execute(conn)
                .await?;
            }
            E::Approved(_) => set_status(conn, id, Status::Approved, at).await?,
            E::Rejected { .. } => set_status(conn, id, Status::Rejected, at).await?,
            E::Expired { .. } => set_status(conn, id, Status::Expired, at).await?,
            E::Superseded { .. } => set_status(conn, id, Status::Superseded, at).await?,
            E::Previewed { .. } => {}
            E::ExecutionDeferred { reason, until } => {
                set_execution(conn, id, None, Some(&reason), until, None, at).await?
            }
            E::ExecutionStarted { .. } => {
                set_execution(conn, id, Some(Status::Executing), None, None, None, at).await?
            }
            E::ExecutionSucceeded { .. } | E::MarkedDone { .. } => {
                set_execution(conn, id, Some(Status::Succeeded), None, None, None, at).await?;
                sqlx::query("UPDATE proposal_summaries SET executed_at = $2 WHERE id = $1")
                    .bind(id)
                    .bind(at)
                    .execute(&mut *conn)
                    .await?;
            }
            E::ExecutionFailed {
                error, retryable, ..
            } => {
                let waiting = retryable.then_some("retrying after a failure");
                let error = Some(error.as_str());
                set_execution(conn, id, Some(Status::Failed), waiting, None, error, at).await?
            }
            E::ExecutionUncertain { reason, .. } => {
                let error = Some(reason.as_str());
                set_execution(conn, id, Some(Status::Uncertain), None, None, error, at).await?
            }
            E::RetryRequested { .. } => {
                set_execution(conn, id, Some(Status::Approved), None, None, None, at).await?
            }
            E::RolledBack { .. } => set_status(conn, id, Status::RolledBack, at).await?,
            E::OutcomeRecorded { summary, .. } => {
                sqlx::query(
                    "UPDATE proposal_summaries SET outcome = coalesce(outcome || '; ', '') || $2 \
                     WHERE id = $1",
                )
                .bind(id)
                .bind(summary)
                .execute(&mut *conn)
                .await?;
            }
        }
        Ok(())
    }
}

fn proposal_reason(payload: &Value) -> Option<String> {
    payload
        .pointer("/DraftSuppressed/reason")
        .and_then(Value::as_str)
        .map(str::to_string)
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
}

const COLUMNS: &str = "id, status, vertical, action_type, title, reasoning, drivers, score, urgency, \
    due_by, owner, subject_key, inbound_ids, action, payload_hash, suppressed_reason, created_at, updated_at, \
    waiting_reason, waiting_until, last_error, executed_at, outcome";

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
