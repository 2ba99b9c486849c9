//! Expiry and escalation with no timer and no cron. A proposal's deadlines are fixed when it
//! is drafted; they are settled whenever something happens: a checkpointed subscriber looks
//! for overdue pending proposals after every batch of new events, of any kind, and every
//! read or decision settles the proposals it is about to show or decide first.
//!
//! Settling is a command on the `Proposal` aggregate, which checks the deadline itself, so
//! the subscriber and a page settling the same proposal at once are harmless: the loser's
//! command is refused or loses the optimistic-concurrency race, and nothing is recorded twice.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::clock::Clock;
use crate::commands::Store;
use crate::domain::{Proposal, ProposalError};
use crate::projections::proposals::{due, Summary};
use crate::store::log::{LogPosition, StoredEvent};
use crate::store::subscription::{HandlerError, Subscriber};
use crate::store::CommandError;
use crate::store::Metadata;

/// Overdue proposals settled per batch; more wait for the next event or read.
const PER_BATCH: i64 = 200;

/// The subscriber that settles overdue proposals as events arrive.
pub struct Deadlines {
    store: Store,
    clock: Clock,
}

impl Deadlines {
    pub fn new(store: Store, clock: Clock) -> Self {
        Self { store, clock }
    }
}

fn metadata(via: &str) -> HashMap<String, String> {
    Metadata::via(via).actor("deadlines").into()
}

/// Records what is overdue on proposal `id` at `now`, one step at a time (expiry, or the
/// next ladder level), and returns the proposal as its stream then tells it. A step someone
/// else recorded meanwhile is not recorded again.
pub async fn settle(
    store: &Store,
    id: &str,
    now: DateTime<Utc>,
    via: &str,
) -> Result<Proposal, CommandError<ProposalError>> {
    // Each step moves the proposal on (expired, or one ladder level up), so the loop ends;
    // the bound only guards against a store that keeps losing races.
    for _ in 0..32 {
        let proposal = store.load_proposal(id).await?;
        let Some(command) = proposal.due(now) else {
            return Ok(proposal);
        };
        match store.proposal(id, command, metadata(via)).await {
            Ok(()) | Err(CommandError::Refused(_)) | Err(CommandError::Conflict) => {}
            Err(other) => return Err(other),
        }
    }
    store.load_proposal(id).await
}

/// Brings a read model row in line with the proposal's stream after settling it, so the
/// page that settled it shows it as it now is, before the projection catches up.
pub fn patch(summary: &mut Summary, proposal: &Proposal) {
    summary.status = proposal.status().to_string();
    summary.escalation_level = i32::try_from(proposal.escalation_level()).unwrap_or(i32::MAX);
    summary.escalate_at = proposal.next_escalation().map(|step| step.at);
    summary.approved_by = serde_json::json!(proposal.approved_by());
    summary.rejected_by = serde_json::json!(proposal.rejected_by());
}

/// Settles every row of `rows` (a page about to be shown) overdue at `now`, and patches it.
pub async fn settle_rows(
    store: &Store,
    rows: &mut [Summary],
    now: DateTime<Utc>,
    via: &str,
) -> Result<(), CommandError<ProposalError>> {
    for row in rows.iter_mut().filter(|row| row.is_due(now)) {
        let proposal = settle(store, &row.id, now, via).await?;
        patch(row, &proposal);
    }
    Ok(())
}

impl Subscriber for Deadlines {
    fn name(&self) -> &str {
        "deadlines"
    }

    /// It reads no payload: any event is only the moment to look at the clock.
    fn payload_types(&self) -> Option<&'static [&'static str]> {
        Some(&[])
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

    #[tracing::instrument(skip_all, fields(events = events.len()))]
    async fn handle_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), (LogPosition, HandlerError)> {
        let Some(last) = events.last().map(|e| e.log) else {
            return Ok(());
        };
        let now = self.clock.now();
        let ids = due(&mut *conn, now, PER_BATCH)
            .await
            .map_err(|e| (last, e.into()))?;
        for id in ids {
            match settle(&self.store, &id, now, "event").await {
                Ok(_) | Err(CommandError::Refused(_)) => {}
                Err(error) => return Err((last, error.into())),
            }
        }
        Ok(())
    }
}
