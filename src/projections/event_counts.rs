//! How many events of each type the log holds: what `/metrics` reports as `execops_log_events`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::store::log::{LogPosition, StoredEvent};
use crate::store::subscription::{HandlerError, Subscriber};

#[derive(Debug, Default)]
pub struct EventCounts;

const UPSERT: &str =
    "INSERT INTO event_counts (aggregate_type, event_type, events, last_recorded_at) \
     VALUES ($1, $2, $3, $4) \
     ON CONFLICT (aggregate_type, event_type) DO UPDATE \
     SET events = event_counts.events + excluded.events, \
         last_recorded_at = greatest(event_counts.last_recorded_at, excluded.last_recorded_at)";

impl Subscriber for EventCounts {
    fn name(&self) -> &str {
        "event_counts"
    }

    fn payload_types(&self) -> Option<&'static [&'static str]> {
        Some(&[])
    }

    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), HandlerError> {
        sqlx::query(UPSERT)
            .bind(&event.aggregate_type)
            .bind(&event.event_type)
            .bind(1_i64)
            .bind(event.recorded_at)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// One row per event type for the whole batch: a busy log would otherwise update the
    /// same few rows once per event.
    async fn handle_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), (LogPosition, HandlerError)> {
        let mut counts: BTreeMap<(&str, &str), (i64, DateTime<Utc>)> = BTreeMap::new();
        for event in events {
            let entry = counts
                .entry((&event.aggregate_type, &event.event_type))
                .or_insert((0, event.recorded_at));
            entry.0 += 1;
            entry.1 = entry.1.max(event.recorded_at);
        }
        let last = events.last().map(|e| e.log).unwrap_or_default();
        for ((aggregate_type, event_type), (n, latest)) in counts {
            sqlx::query(UPSERT)
                .bind(aggregate_type)
                .bind(event_type)
                .bind(n)
                .bind(latest)
                .execute(&mut *conn)
                .await
                .map_err(|e| (last, HandlerError::from(e)))?;
        }
        Ok(())
    }
}

/// The projected counts, for `/metrics`.
pub async fn counts(pool: &sqlx::PgPool) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT aggregate_type, event_type, events FROM event_counts \
         ORDER BY aggregate_type, event_type",
    )
    .fetch_all(pool)
    .await
}
