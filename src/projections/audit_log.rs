//! The audit log: who did what, when, and what it changed — one row per event that is not a
//! raw delivery, in log order. Each row is chained to the one before it by
//! `hash = sha256(prev_hash, canonical row)`, and the row carries a digest of its event, so
//! `execops audit verify` can recompute the whole chain from the events and name the first
//! row that was altered, removed or moved.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use crate::domain::values::write_canonical;
use crate::domain::ProposalEvent;
use crate::store::log::{LogPosition, StoredEvent};
use crate::store::subscription::{HandlerError, Subscriber};

/// The aggregates the audit log covers: everything but the raw deliveries (`Inbound`), which
/// the event store keeps as they came.
pub const AUDITED: &[&str] = &["Proposal", "Guardrails", "User"];

/// The `prev_hash` of the first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Default)]
pub struct AuditLog;

/// One row of `audit_log`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AuditRow {
    pub seq: i64,
    pub transaction_id: i64,
    pub position: i64,
    pub recorded_at: DateTime<Utc>,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub actor: String,
    pub role: Option<String>,
    pub from_status: Option<String>,
    pub to_status: Option<String>,
    pub event_digest: String,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditRow {
    pub fn event(&self) -> LogPosition {
        LogPosition {
            transaction_id: self.transaction_id,
            position: self.position,
        }
    }

    /// The fields that differ from `other`, by name.
    pub fn differences(&self, other: &AuditRow) -> Vec<&'static str> {
        let checks = [
            ("seq", self.seq == other.seq),
            ("event", self.event() == other.event()),
            ("recorded_at", self.recorded_at == other.recorded_at),
            (
                "aggregate_type",
                self.aggregate_type == other.aggregate_type,
            ),
            ("aggregate_id", self.aggregate_id == other.aggregate_id),
            ("sequence", self.sequence == other.sequence),
            ("event_type", self.event_type == other.event_type),
            ("actor", self.actor == other.actor),
            ("role", self.role == other.role),
            ("from_status", self.from_status == other.from_status),
            ("to_status", self.to_status == other.to_status),
            ("event_digest", self.event_digest == other.event_digest),
            ("prev_hash", self.prev_hash == other.prev_hash),
            ("hash", self.hash == other.hash),
        ];
        checks
            .into_iter()
            .filter(|(_, same)| !same)
            .map(|(name, _)| name)
            .collect()
    }
}

/// Builds the audit log one event at a time: the chain's tip and every proposal's status.
/// The projection and `audit verify` both build rows with it, so they cannot disagree.
#[derive(Debug)]
pub struct Chain {
    pub seq: i64,
    pub tip: String,
    statuses: HashMap<String, String>,
}

impl Default for Chain {
    fn default() -> Self {
        Self::after(0, GENESIS.to_string())
    }
}

impl Chain {
    /// A chain whose last row is `seq` with hash `tip`.
    pub fn after(seq: i64, tip: String) -> Self {
        Self {
            seq,
            tip,
            statuses: HashMap::new(),
        }
    }

    /// Tells the chain a proposal's status before the events it is about to see.
    pub fn know_status(&mut self, proposal: String, status: String) {
        self.statuses.insert(proposal, status);
    }

    pub fn knows(&self, proposal: &str) -> bool {
        self.statuses.contains_key(proposal)
    }

    /// The next row, for `event`; `None` for events the audit log does not cover.
    pub fn next(&mut self, event: &StoredEvent) -> Option<AuditRow> {
        if !AUDITED.contains(&event.aggregate_type.as_str()) {
            return None;
        }
        let (from_status, to_status) = if event.aggregate_type == "Proposal" {
            let before = self.statuses.get(&event.aggregate_id).cloned();
            let after = ProposalEvent::deserialize(&event.payload)
                .ok()
                .and_then(|e| e.status_after())
                .map(|s| s.to_string())
                .or_else(|| before.clone());
            if let Some(status) = &after {
                self.statuses
                    .insert(event.aggregate_id.clone(), status.clone());
            }
            (before, after)
        } else {
            (None, None)
        };
        let mut row = AuditRow {
            seq: self.seq + 1,
            transaction_id: event.log.transaction_id,
            position: event.log.position,
            recorded_at: event.recorded_at,
            aggregate_type: event.aggregate_type.clone(),
            aggregate_id: event.aggregate_id.clone(),
            sequence: event.sequence,
            event_type: event.event_type.clone(),
            actor: actor(event),
            role: field(event, "role"),
            from_status,
            to_status,
            event_digest: event_digest(&event.payload, &event.metadata),
            prev_hash: self.tip.clone(),
            hash: String::new(),
        };
        row.hash = row_hash(&row);
        self.seq = row.seq;
        self.tip = row.hash.clone();
        Some(row)
    }
}

/// Who caused the event: the body's `actor` (decisions) or `by` (people and tokens), else
/// the metadata's `actor`, else the system itself.
pub fn actor(event: &StoredEvent) -> String {
    field(event, "actor")
        .or_else(|| field(event, "by"))
        .unwrap_or_else(|| "system".to_string())
}

/// A field of the event's body, else of its metadata.
pub fn field(event: &StoredEvent, name: &str) -> Option<String> {
    event
        .payload
        .get(&event.event_type)
        .and_then(|body| body.get(name))
        .or_else(|| event.metadata.get(name))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// `sha256(prev_hash "\n" canonical row)`, hex. The canonical row is a JSON array of every
/// field but the two hashes, in a fixed order, times to the microsecond.
pub fn row_hash(row: &AuditRow) -> String {
    let canonical = serde_json::json!([
        row.seq,
        row.transaction_id,
        row.position,
        row.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        row.aggregate_type,
        row.aggregate_id,
        row.sequence,
        row.event_type,
        row.actor,
        row.role,
        row.from_status,
        row.to_status,
        row.event_digest,
    ]);
    let mut hasher = Sha256::new();
    hasher.update(row.prev_hash.as_bytes());
    hasher.update(b"\n");
    hasher.update(canonical.to_string().as_bytes());
    hex::encode(hasher.finalize())
}

/// sha256 of the payload and the metadata, each as canonical JSON (object keys sorted), so
/// the digest does not depend on how the JSON was spelled when it was stored.
pub fn event_digest(payload: &Value, metadata: &Value) -> String {
    let mut text = String::new();
    write_canonical(payload, &mut text);
    text.push('\n');
    write_canonical(metadata, &mut text);
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The last row's `seq` and `hash`, or the genesis values.
async fn tip(conn: &mut PgConnection) -> Result<(i64, String), sqlx::Error> {
    let last: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(conn)
            .await?;
    Ok(last.unwrap_or_else(|| (0, GENESIS.to_string())))
}

impl Subscriber for AuditLog {
    fn name(&self) -> &str {
        "audit_log"
    }

    fn payload_types(&self) -> Option<&'static [&'static str]> {
        Some(AUDITED)
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

    /// One read of the tip, one of the statuses the batch needs, one insert.
    async fn handle_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), (LogPosition, HandlerError)> {
        let Some(last) = events.last().map(|e| e.log) else {
            return Ok(());
        };
        let failed = |e: sqlx::Error| (last, HandlerError::from(e));
        let (seq, hash) = tip(conn).await.map_err(failed)?;
        let mut chain = Chain::after(seq, hash);
        let mut proposals: Vec<&str> = events
            .iter()
            .filter(|e| e.aggregate_type == "Proposal")
            .map(|e| e.aggregate_id.as_str())
            .collect();
        proposals.sort_unstable();
        proposals.dedup();
        if !proposals.is_empty() {
            let known: Vec<(String, String)> = sqlx::query_as(
                "SELECT DISTINCT ON (aggregate_id) aggregate_id, to_status FROM audit_log \
                 WHERE aggregate_type = 'Proposal' AND aggregate_id = ANY($1) \
                   AND to_status IS NOT NULL \
                 ORDER BY aggregate_id, seq DESC",
            )
            .bind(&proposals)
            .fetch_all(&mut *conn)
            .await
            .map_err(failed)?;
            for (proposal, status) in known {
                chain.know_status(proposal, status);
            }
        }
        let rows: Vec<AuditRow> = events.iter().filter_map(|e| chain.next(e)).collect();
        if rows.is_empty() {
            return Ok(());
        }
        insert(conn, &rows).await.map_err(failed)
    }
}

/// Writes `rows` in one statement.
pub async fn insert(conn: &mut PgConnection, rows: &[AuditRow]) -> Result<(), sqlx::Error> {
    macro_rules! column {
        ($name:ident) => {
            rows.iter().map(|r| r.$name.clone()).collect::<Vec<_>>()
        };
    }
    sqlx::query(
        "INSERT INTO audit_log (seq, transaction_id, position, recorded_at, aggregate_type, \
           aggregate_id, sequence, event_type, actor, role, from_status, to_status, \
           event_digest, prev_hash, hash) \
         SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::timestamptz[], \
           $5::text[], $6::text[], $7::bigint[], $8::text[], $9::text[], $10::text[], \
           $11::text[], $12::text[], $13::text[], $14::text[], $15::text[])",
    )
    .bind(column!(seq))
    .bind(column!(transaction_id))
    .bind(column!(position))
    .bind(column!(recorded_at))
    .bind(column!(aggregate_type))
    .bind(column!(aggregate_id))
    .bind(column!(sequence))
    .bind(column!(event_type))
    .bind(column!(actor))
    .bind(column!(role))
    .bind(column!(from_status))
    .bind(column!(to_status))
    .bind(column!(event_digest))
    .bind(column!(prev_hash))
    .bind(column!(hash))
    .execute(conn)
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(aggregate_id: &str, sequence: i64, event_type: &str, body: Value) -> StoredEvent {
        StoredEvent {
            log: LogPosition {
                transaction_id: 10,
                position: sequence,
            },
            aggregate_type: "Proposal".into(),
            aggregate_id: aggregate_id.into(),
            sequence,
            event_type: event_type.into(),
            event_version: "1.0".into(),
            payload: json!({ event_type: body }),
            metadata: json!({}),
            recorded_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default(),
        }
    }

    fn approved() -> StoredEvent {
        event(
            "p1",
            2,
            "Approved",
            json!({"actor": "ada@example.com", "role": "approver", "comment": null, "payload_hash": "h"}),
        )
    }

    #[test]
    fn rows_chain_each_to_the_one_before() {
        let mut chain = Chain::default();
        chain.know_status("p1".into(), "pending".into());
        let first = chain
            .next(&approved())
            .expect("a proposal event is audited");
        assert_eq!(first.seq, 1);
        assert_eq!(first.prev_hash, GENESIS);
        assert_eq!(first.actor, "ada@example.com");
        assert_eq!(first.role.as_deref(), Some("approver"));
        assert_eq!(first.from_status.as_deref(), Some("pending"));
        assert_eq!(first.to_status.as_deref(), Some("approved"));
        let second = chain
            .next(&event(
                "p1",
                3,
                "ExecutionStarted",
                json!({"attempt": 1, "idempotency_key": "k"}),
            ))
            .expect("audited");
        assert_eq!(second.prev_hash, first.hash);
        assert_eq!(second.from_status.as_deref(), Some("approved"));
        assert_eq!(second.to_status.as_deref(), Some("executing"));
        assert_eq!(second.actor, "system");
    }

    #[test]
    fn every_field_is_in_the_hash() {
        let mut chain = Chain::default();
        let row = chain.next(&approved()).expect("audited");
        assert_eq!(row_hash(&row), row.hash);
        let edits: [fn(&mut AuditRow); 12] = [
            |r| r.seq += 1,
            |r| r.position += 1,
            |r| r.recorded_at += chrono::Duration::microseconds(1),
            |r| r.aggregate_id.push('x'),
            |r| r.sequence += 1,
            |r| r.event_type.push('x'),
            |r| r.actor = "mallory@example.com".into(),
            |r| r.role = None,
            |r| r.from_status = Some("approved".into()),
            |r| r.to_status = None,
            |r| r.event_digest.push('0'),
            |r| r.prev_hash = "1".repeat(64),
        ];
        for (i, edit) in edits.iter().enumerate() {
            let mut changed = row.clone();
            edit(&mut changed);
            assert_ne!(row_hash(&changed), row.hash, "edit {i} went unnoticed");
        }
    }

    #[test]
    fn the_event_digest_ignores_key_order_but_not_values() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":2,"x":[1,2]}}"#).unwrap_or_default();
        let b: Value = serde_json::from_str(r#"{"a":{"x":[1,2],"y":2},"b":1}"#).unwrap_or_default();
        let c: Value = serde_json::from_str(r#"{"a":{"x":[2,1],"y":2},"b":1}"#).unwrap_or_default();
        assert_eq!(event_digest(&a, &json!({})), event_digest(&b, &json!({})));
        assert_ne!(event_digest(&a, &json!({})), event_digest(&c, &json!({})));
        assert_ne!(
            event_digest(&a, &json!({})),
            event_digest(&a, &json!({"ip": "10.0.0.1"}))
        );
    }

    #[test]
    fn deliveries_are_not_audited() {
        let mut delivery = approved();
        delivery.aggregate_type = "Inbound".into();
        assert_eq!(Chain::default().next(&delivery), None);
    }
}

/// What the audit log is narrowed to; `None` is no narrowing.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    /// A proposal's (or any record's) id.
    pub proposal: Option<String>,
    /// An event type.
    pub action: Option<String>,
    /// The first and last day, inclusive.
    pub from: Option<chrono::NaiveDate>,
    pub to: Option<chrono::NaiveDate>,
}

#[derive(Debug, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// The row's place in the hash chain.
    pub seq: i64,
    pub recorded_at: DateTime<Utc>,
    pub actor: String,
    /// The actor's role, where the event records one (decisions, undo, retries).
    pub role: Option<String>,
    pub event_type: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// A proposal's status before and after the event.
    pub from_status: Option<String>,
    pub to_status: Option<String>,
    /// `sha256(previous row's hash, this row)`; see `execops audit verify`.
    pub hash: String,
}

impl AuditEntry {
    /// `pending → approved`, or the status alone when it did not change.
    pub fn status_change(&self) -> String {
        match (&self.from_status, &self.to_status) {
            (Some(from), Some(to)) if from != to => format!("{from} → {to}"),
            (None, Some(to)) => format!("→ {to}"),
            (_, Some(to)) => to.clone(),
            _ => String::new(),
        }
    }
}

/// Who did what, when, newest first: the audit log, a row per event but the raw deliveries.
pub async fn entries(
    pool: &sqlx::PgPool,
    filter: &AuditFilter,
    limit: i64,
    offset: i64,
) -> Result<Vec<AuditEntry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT seq, recorded_at, actor, role, event_type, aggregate_type, aggregate_id, \
           from_status, to_status, hash \
         FROM audit_log \
         WHERE ($1::text IS NULL OR actor = $1) \
           AND ($2::text IS NULL OR aggregate_id = $2) \
           AND ($3::text IS NULL OR event_type = $3) \
           AND ($4::date IS NULL OR recorded_at >= $4) \
           AND ($5::date IS NULL OR recorded_at < $5 + 1) \
         ORDER BY seq DESC \
         LIMIT $6 OFFSET $7",
    )
    .bind(filter.actor.as_deref())
    .bind(filter.proposal.as_deref())
    .bind(filter.action.as_deref())
    .bind(filter.from)
    .bind(filter.to)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await
}
