//! The typed command facade over the event store: each of ExecOps's aggregates (`Inbound`,
//! `Proposal`, `Guardrails`, `User`) takes its commands here and records their events,
//! deliveries through the grouped [`appender`], the others through cqrs-es.

pub mod appender;
pub mod people;

use std::collections::HashMap;
use std::sync::Arc;

use cqrs_es::Aggregate;
use postgres_es::PostgresCqrs;
use sqlx::PgPool;

use crate::domain::guardrails::{Guardrails, GuardrailsCommand, GuardrailsError, GUARDRAILS_ID};
use crate::domain::user::{Email, User, UserCommand, UserError};
use crate::domain::{InboundError, Proposal, ProposalCommand, ProposalError, Signal};
pub use crate::store::CommandError;
use crate::telemetry::Metrics;

/// How a delivery was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Receipt {
    /// Its `Received` event is committed.
    Accepted,
    /// It had been received before; nothing was written.
    Duplicate,
}

/// Appends events through the aggregates. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    inbound: appender::Appender,
    proposals: Arc<PostgresCqrs<Proposal>>,
    guardrails: Arc<PostgresCqrs<Guardrails>>,
    users: Arc<PostgresCqrs<User>>,
    metrics: Metrics,
}

impl Store {
    pub fn new(pool: PgPool, metrics: Metrics) -> Self {
        Self {
            inbound: appender::Appender::start(pool.clone(), metrics.clone()),
            proposals: Arc::new(postgres_es::postgres_cqrs(pool.clone(), vec![], ())),
            guardrails: Arc::new(postgres_es::postgres_cqrs(pool.clone(), vec![], ())),
            users: Arc::new(postgres_es::postgres_cqrs(pool.clone(), vec![], ())),
            pool,
            metrics,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Records a delivery once, grouped with concurrent deliveries into one commit. A
    /// redelivery, or a concurrent copy of the same delivery, is a duplicate and writes
    /// nothing. Must be called within the Tokio runtime the store was made on.
    pub async fn receive(
        &self,
        signal: Signal,
        metadata: HashMap<String, String>,
    ) -> Result<Receipt, CommandError<InboundError>> {
        self.inbound.receive(signal, metadata).await
    }

    /// Runs one command on a proposal; every accepted command records one event.
    pub async fn proposal(
        &self,
        id: &str,
        command: ProposalCommand,
        metadata: HashMap<String, String>,
    ) -> Result<(), CommandError<crate::domain::ProposalError>> {
        self.proposals
            .execute_with_metadata(id, command, metadata)
            .await?;
        self.metrics.event_appended(Proposal::TYPE);
        Ok(())
    }

    /// Runs one command on the guardrails stream, retrying when another change to it
    /// committed first.
    pub async fn guardrails(
        &self,
        command: GuardrailsCommand,
        metadata: HashMap<String, String>,
    ) -> Result<(), CommandError<GuardrailsError>> {
        let mut tries = 0;
        loop {
            let result = self
                .guardrails
                .execute_with_metadata(GUARDRAILS_ID, command.clone(), metadata.clone())
                .await
                .map_err(CommandError::from);
            match result {
                Err(CommandError::Conflict) if tries < 5 => tries += 1,
                Err(error) => return Err(error),
                Ok(()) => {
                    self.metrics.event_appended(Guardrails::TYPE);
                    return Ok(());
                }
            }
        }
    }

    /// A delivery as it was received: when it was recorded, and its `Received` event (the
    /// source, kind, time and payload); `None` for an id the log does not hold.
    pub async fn delivery(
        &self,
        inbound_id: &str,
    ) -> Result<Option<(chrono::DateTime<chrono::Utc>, serde_json::Value)>, sqlx::Error> {
        let row: Option<(chrono::DateTime<chrono::Utc>, serde_json::Value)> = sqlx::query_as(
            "SELECT recorded_at, payload::jsonb FROM events \
             WHERE aggregate_type = 'Inbound' AND aggregate_id = $1 AND sequence = 1",
        )
        .bind(inbound_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|(at, payload)| {
            let received = payload.get("Received").cloned().unwrap_or(payload);
            (at, received)
        }))
    }

    /// A proposal as its own stream tells it, read from the event store (never from a
    /// read model): what the executor trusts before every attempt.
    pub async fn load_proposal(&self, id: &str) -> Result<Proposal, CommandError<ProposalError>> {
        load(&self.pool, id).await
    }

    /// The guardrails as their stream tells them.
    pub async fn load_guardrails(&self) -> Result<Guardrails, CommandError<GuardrailsError>> {
        load(&self.pool, GUARDRAILS_ID).await
    }

    /// Runs one command on a person's stream.
    pub async fn user(
        &self,
        email: &Email,
        command: UserCommand,
        metadata: HashMap<String, String>,
    ) -> Result<(), CommandError<UserError>> {
        self.users
            .execute_with_metadata(email.as_str(), command, metadata)
            .await?;
        self.metrics.event_appended(User::TYPE);
        Ok(())
    }
}

async fn load<A: cqrs_es::Aggregate>(pool: &PgPool, id: &str) -> Result<A, CommandError<A::Error>>
where
    A::Error: std::error::Error,
{
    use cqrs_es::persist::PersistedEventStore;
    use cqrs_es::EventStore;
    let store = PersistedEventStore::<_, A>::new_event_store(
        postgres_es::PostgresEventRepository::new(pool.clone()),
    );
    let context = store.load_aggregate(id).await?;
    Ok(context.aggregate)
}
