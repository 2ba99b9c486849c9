//! Grouped appends for deliveries. Webhooks arrive many at a time, and each `Received`
//! starts a new `Inbound` stream, so instead of one transaction per delivery (load the
//! stream, then insert) concurrent deliveries are written together: one INSERT statement,
//! one commit, one fsync for the whole group. Each caller is answered only after the commit
//! that holds its event.
//!
//! The rows are exactly what postgres-es would write: the aggregate decides the events as
//! for a fresh stream, and the primary key on `(aggregate_type, aggregate_id, sequence)`
//! stands in for loading it: a row already at sequence 1 means the delivery was received
//! before, so it is a duplicate and nothing is written.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{CommandError, Receipt};
use crate::domain::{Inbound, InboundCommand, InboundError, Signal};
use crate::store::is_unavailable;
use crate::telemetry::Metrics;

/// The most deliveries written in one statement.
const MAX_GROUP: usize = 500;
/// Groups in flight at once: while one commits, the next one gathers.
const IN_FLIGHT: usize = 2;

type Reply = oneshot::Sender<Result<Receipt, CommandError<InboundError>>>;

struct Pending {
    signal: Signal,
    metadata: HashMap<String, String>,
    reply: Reply,
}

/// A handle to the appender task. Cheap to clone.
#[derive(Clone)]
pub struct Appender {
    queue: mpsc::Sender<Pending>,
}

impl Appender {
    /// Starts the appender on the current Tokio runtime; it ends when every handle is dropped.
    pub fn start(pool: PgPool, metrics: Metrics) -> Self {
        let (queue, receiver) = mpsc::channel(MAX_GROUP * IN_FLIGHT);
        tokio::spawn(run(pool, metrics, receiver));
        Self { queue }
    }

    pub async fn receive(
        &self,
        signal: Signal,
        metadata: HashMap<String, String>,
    ) -> Result<Receipt, CommandError<InboundError>> {
        let (reply, answer) = oneshot::channel();
        let stopped = || CommandError::Internal("the appender has stopped".into());
        self.queue
            .send(Pending {
                signal,
                metadata,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(pool: PgPool, metrics: Metrics, mut receiver: mpsc::Receiver<Pending>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = receiver.recv().await {
        // Wait for a slot first: whatever arrives meanwhile joins this group.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match receiver.try_recv() {
                Ok(pending) => group.push(pending),
                Err(_) => break,
            }
        }
        let (pool, metrics) = (pool.clone(), metrics.clone());
        tokio::spawn(async move {
            write_group(&pool, &metrics, group).await;
            drop(slot);
        });
    }
}

/// What the aggregate records for a delivery on a fresh stream.
async fn decide(signal: Signal) -> Result<Vec<<Inbound as Aggregate>::Event>, InboundError> {
    let mut inbound = Inbound::default();
    let sink = EventSink::default();
    inbound
        .handle(InboundCommand::Receive(signal), &(), &sink)
        .await?;
    Ok(sink.collect().await)
}

struct Row {
    id: String,
    event_type: String,
    event_version: String,
    payload: String,
    metadata: String,
}

async fn write_group(pool: &PgPool, metrics: &Metrics, group: Vec<Pending>) {
    let mut rows = Vec::with_capacity(group.len());
    let mut seen_in_group = HashSet::new();
    let mut waiters: Vec<(String, bool, Reply)> = Vec::with_capacity(group.len());
    for pending in group {
        let id = pending.signal.inbound_id().to_string();
        // A second copy in the same group is a duplicate of the first.
        let first_copy = seen_in_group.insert(id.clone());
        if first_copy {
            match to_row(&id, pending.signal, &pending.metadata).await {
                Ok(row) => rows.push(row),
                Err(error) => {
                    let _ = pending.reply.send(Err(error));
                    continue;
                }
            }
        }
        waiters.push((id, first_copy, pending.reply));
    }
    let inserted = insert(pool, &rows).await;
    let written = inserted.as_ref().map(|ids| ids.len()).unwrap_or(0);
    metrics.events_appended_by(Inbound::TYPE, written as u64);
    for (id, first_copy, reply) in waiters {
        let answer = match &inserted {
            Ok(ids) if first_copy && ids.contains(&id) => Ok(Receipt::Accepted),
            Ok(_) => Ok(Receipt::Duplicate),
            Err(error) if is_unavailable(error) => {
                Err(CommandError::Unavailable(error.to_string()))
            }
            Err(error) => Err(CommandError::Internal(error.to_string())),
        };
        let _ = reply.send(answer);
    }
}

async fn to_row(
    id: &str,
    signal: Signal,
    metadata: &HashMap<String, String>,
) -> Result<Row, CommandError<InboundError>> {
    let mut events = decide(signal).await.map_err(CommandError::Refused)?;
    let event = match (events.pop(), events.is_empty()) {
        (Some(event), true) => event,
        _ => {
            return Err(CommandError::Internal(
                "a delivery must record exactly one event".into(),
            ))
        }
    };
    let encode = |e: serde_json::Error| CommandError::Internal(e.to_string());
    Ok(Row {
        id: id.to_string(),
        event_type: event.event_type(),
        event_version: event.event_version(),
        payload: serde_json::to_string(&event).map_err(encode)?,
        metadata: serde_json::to_string(metadata).map_err(encode)?,
    })
}

/// One statement, so one commit; returns the ids that were new.
async fn insert(pool: &PgPool, rows: &[Row]) -> Result<HashSet<String>, sqlx::Error> {
    if rows.is_empty() {
        return Ok(HashSet::new());
    }
    let column = |f: fn(&Row) -> &String| rows.iter().map(f).cloned().collect::<Vec<String>>();
    let ids: Vec<String> = sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         SELECT $1, id, 1, event_type, event_version, payload::json, metadata::json \
         FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) \
              AS r(id, event_type, event_version, payload, metadata) \
         ON CONFLICT (aggregate_type, aggregate_id, sequence) DO NOTHING \
         RETURNING aggregate_id",
    )
    .bind(Inbound::TYPE)
    .bind(column(|r| &r.id))
    .bind(column(|r| &r.event_type))
    .bind(column(|r| &r.event_version))
    .bind(column(|r| &r.payload))
    .bind(column(|r| &r.metadata))
    .fetch_all(pool)
    .await?;
    Ok(ids.into_iter().collect())
}
