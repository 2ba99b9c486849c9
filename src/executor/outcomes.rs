//! The outcome attributor: links a later signal to the executed proposals it vindicates (an
//! `invoice.paid` after a card-update email is money recovered; a green run after an issue
//! was opened is a fix) and records `OutcomeRecorded` on them. It also keeps, per action
//! type, how many executions had an outcome: the router's track record for the priority.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};

use crate::commands::Store;
use crate::domain::inbound::InboundEvent;
use crate::domain::policies::{outcome_of, OutcomeSignal};
use crate::domain::priority::money;
use crate::domain::{ProposalCommand, ProposalError, ProposalEvent};
use crate::store::log::StoredEvent;
use crate::store::subscription::{HandlerError, Subscriber};
use crate::store::CommandError;
use crate::store::Metadata;

pub struct Outcomes {
    store: Store,
}

impl Outcomes {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

/// "recovered $120.00", "fixed after 3 h".
pub fn summary(outcome: &OutcomeSignal, executed_at: DateTime<Utc>) -> String {
    match outcome.kind {
        "recovered" => match outcome.value_cents {
            Some(cents) => format!(
                "recovered {}",
                money(cents, outcome.currency.as_deref().unwrap_or("usd"))
            ),
            None => "recovered".to_string(),
        },
        "fixed" => {
            let minutes = (outcome.occurred_at - executed_at).num_minutes().max(0);
            if minutes < 60 {
                format!("fixed after {minutes} min")
            } else {
                format!("fixed after {} h", (minutes + 30) / 60)
            }
        }
        other => other.to_string(),
    }
}

impl Subscriber for Outcomes {
    fn name(&self) -> &str {
        "outcomes"
    }

    fn payload_types(&self) -> Option<&'static [&'static str]> {
        Some(&["Inbound", "Proposal"])
    }

    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), HandlerError> {
        match (event.aggregate_type.as_str(), event.event_type.as_str()) {
            ("Proposal", "Drafted") => {
                let ProposalEvent::Drafted { draft, .. } = event.decode()? else {
                    return Ok(());
                };
                if let Some(key) = draft.outcome_key {
                    sqlx::query(
                        "INSERT INTO outcome_watches (proposal_id, outcome_key, action_type) \
                         VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    )
                    .bind(&event.aggregate_id)
                    .bind(key)
                    .bind(&draft.action_type)
                    .execute(&mut *conn)
                    .await?;
                }
            }
            ("Proposal", "ExecutionSucceeded" | "MarkedDone") => {
                let executed: Option<String> = sqlx::query_scalar(
                    "UPDATE outcome_watches SET executed_at = $2 \
                     WHERE proposal_id = $1 AND executed_at IS NULL RETURNING action_type",
                )
                .bind(&event.aggregate_id)
                .bind(event.recorded_at)
                .fetch_optional(&mut *conn)
                .await?;
                if let Some(action_type) = executed {
                    sqlx::query(
                        "INSERT INTO outcome_rates (action_type, executed) VALUES ($1, 1) \
                         ON CONFLICT (action_type) DO UPDATE \
                         SET executed = outcome_rates.executed + 1",
                    )
                    .bind(action_type)
                    .execute(&mut *conn)
                    .await?;
                }
            }
            ("Proposal", "OutcomeRecorded") => {
                let recorded: Option<String> = sqlx::query_scalar(
                    "UPDATE outcome_watches SET recorded = true \
                     WHERE proposal_id = $1 AND NOT recorded RETURNING action_type",
                )
                .bind(&event.aggregate_id)
                .fetch_optional(&mut *conn)
                .await?;
                if let Some(action_type) = recorded {
                    sqlx::query(
                        "UPDATE outcome_rates SET with_outcome = with_outcome + 1 \
                         WHERE action_type = $1",
                    )
                    .bind(action_type)
                    .execute(&mut *conn)
                    .await?;
                }
            }
            ("Inbound", "Received") => {
                let InboundEvent::Received(signal) = event.decode()?;
                let Some(outcome) = outcome_of(&signal) else {
                    return Ok(());
                };
                let watching = sqlx::query(
                    "SELECT proposal_id, executed_at FROM outcome_watches \
                     WHERE outcome_key = $1 AND NOT recorded AND executed_at IS NOT NULL",
                )
                .bind(&outcome.key)
                .fetch_all(&mut *conn)
                .await?;
                for row in watching {
                    let id: String = row.try_get("proposal_id")?;
                    let executed_at: DateTime<Utc> = row.try_get("executed_at")?;
                    let command = ProposalCommand::RecordOutcome {
                        kind: outcome.kind.to_string(),
                        summary: summary(&outcome, executed_at),
                        value_cents: outcome.value_cents,
                    };
                    let metadata = Metadata::by("outcomes")
                        .caused_by(signal.inbound_id().to_string())
                        .into();
                    // Applied again after a crash, the command is refused as recorded.
                    match self.store.proposal(&id, command, metadata).await {
                        Ok(())
                        | Err(CommandError::Refused(ProposalError::OutcomeAlreadyRecorded(_))) => {}
                        Err(other) => return Err(other.into()),
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(kind: &'static str, cents: Option<i64>, at: DateTime<Utc>) -> OutcomeSignal {
        OutcomeSignal {
            key: "k".into(),
            kind,
            value_cents: cents,
            currency: Some("usd".into()),
            occurred_at: at,
        }
    }

    #[test]
    fn summaries_say_what_was_achieved() {
        let executed = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        let later = |minutes| executed + chrono::Duration::minutes(minutes);
        assert_eq!(
            summary(&outcome("recovered", Some(12_000), later(5)), executed),
            "recovered $120.00"
        );
        assert_eq!(
            summary(&outcome("fixed", None, later(25)), executed),
            "fixed after 25 min"
        );
        assert_eq!(
            summary(&outcome("fixed", None, later(200)), executed),
            "fixed after 3 h"
        );
    }
}
