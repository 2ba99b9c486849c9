//! How many events of each type the log holds: what `/metrics` reports as `execops_log_events`.

use sqlx::PgConnection;

use crate::store::log::StoredEvent;
use crate::store::subscription::{HandlerError, Subscriber};

#[derive(Debug, Default)]
pub struct EventCounts;

impl Subscriber for EventCounts {
    fn name(&self) -> &str {
        "event_counts"
    }

    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), HandlerError> {
        sqlx::query(
            "INSERT INTO event_counts (aggregate_type, event_type, events, last_recorded_at) \
             VALUES ($1, $2, 1, $3) \
             ON CONFLICT (aggregate_type, event_type) DO UPDATE \
             SET events = event_counts.events + 1, \
                 last_recorded_at = greatest(event_counts.last_recorded_at, excluded.last_recorded_at)",
        )
        .bind(&event.aggregate_type)
        .bind(&event.event_type)
        .bind(event.recorded_at)
        .execute(conn)
        .await?;
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
