//! The executor carries out approved proposals and nothing else. The `executor` subscription
//! turns each `Approved` (or a person's `RetryRequested`) into a row of `execution_jobs`; the
//! worker takes due rows and, before every attempt, re-reads the proposal's own stream and
//! the guardrails stream: a read model, or a row put there by hand, never makes anything
//! run. One process at a time runs the worker (a Postgres advisory lock), so an attempt
//! found open when the worker starts was cut short by a dead process: it is repeated with
//! the same idempotency key where the provider dedupes, and otherwise left `Uncertain` for a
//! person: never a silent second send.
//!
//! It wakes on `NOTIFY execops_jobs` and on the back-off or rate-limit time of the next job,
//! never on a schedule of its own.

pub mod outcomes;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::adapters::{adapter_of, AdapterError, Adapters};
use crate::commands::Store;
use crate::config::ExecutionConfig;
use crate::domain::guardrails::{GuardrailsCommand, Hold, Load, Scope};
use crate::domain::{Proposal, ProposalCommand, Status};
use crate::store::log::StoredEvent;
use crate::store::notifications::Notifications;
use crate::store::subscription::{lock_name, stopping, wait_or_shutdown, HandlerError, Subscriber};
use crate::store::CommandError;
use crate::store::Metadata;
use crate::telemetry::Metrics;

/// The channel the `executor` subscription notifies when a job is due.
pub const JOBS_CHANNEL: &str = "execops_jobs";

/// Who the executor's events are recorded as.
pub const ACTOR: &str = "executor";

/// Turns approvals into jobs; wakes held jobs when the guardrails change.
#[derive(Debug, Default)]
pub struct ExecutionQueue;

impl Subscriber for ExecutionQueue {
    fn name(&self) -> &str {
        "executor"
    }

    fn payload_types(&self) -> Option<&'static [&'static str]> {
        // The event type and time are all it needs.
        Some(&[])
    }

    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), HandlerError> {
        match (event.aggregate_type.as_str(), event.event_type.as_str()) {
            // An undo's request that completes its quorum is carried out like an action; an
            // earlier one finds nothing to do and its job is dropped.
            ("Proposal", "Approved" | "RetryRequested" | "RollbackRequested") => {
                sqlx::query(
                    "INSERT INTO execution_jobs (proposal_id, approved_at, due_at) \
                     VALUES ($1, $2, now()) \
                     ON CONFLICT (proposal_id) DO UPDATE SET due_at = now(), held_by = NULL",
                )
                .bind(&event.aggregate_id)
                .bind(event.recorded_at)
                .execute(&mut *conn)
                .await?;
            }
            ("Guardrails", _) => {
                sqlx::query("UPDATE execution_jobs SET due_at = now() WHERE held_by IS NOT NULL")
                    .execute(&mut *conn)
                    .await?;
            }
            _ => return Ok(()),
        }
        // Delivered at commit, with the job.
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(JOBS_CHANNEL)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Store(String),
}

impl<E: std::error::Error> From<CommandError<E>> for StepError {
    fn from(error: CommandError<E>) -> Self {
        StepError::Store(error.to_string())
    }
}

#[derive(Debug)]
struct Job {
    proposal_id: String,
    approved_at: DateTime<Utc>,
    held_by: Option<String>,
}

/// The worker. Cheap to clone: every attempt runs on a clone.
#[derive(Clone)]
pub struct Executor {
    store: Store,
    adapters: Adapters,
    config: ExecutionConfig,
    metrics: Metrics,
    /// Attempts in flight in this process, by proposal, with their adapter.
    running: Arc<Mutex<HashMap<String, &'static str>>>,
    /// Guardrail checks and starts one at a time, so two attempts never both take the last
    /// slot of a rate limit or both probe a half-open circuit.
    gate: Arc<tokio::sync::Mutex<()>>,
    notifications: Option<Notifications>,
}

impl Executor {
    pub fn new(
        store: Store,
        adapters: Adapters,
        config: ExecutionConfig,
        metrics: Metrics,
    ) -> Self {
        Self {
            store,
            adapters,
            config,
            metrics,
            running: Arc::default(),
            gate: Arc::default(),
            notifications: None,
        }
    }

    /// Wakes on the process's shared listener instead of a connection of its own.
    pub fn with_notifications(mut self, notifications: Notifications) -> Self {
        self.notifications = Some(notifications);
        self
    }

    fn pool(&self) -> &PgPool {
        self.store.pool()
    }

    /// Runs until `shutdown` turns true, standing by while another process holds the worker
    /// lock and starting again after failures.
    #[tracing::instrument(skip_all, name = "executor")]
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.run_once(&mut shutdown).await {
                Ok(()) => break,
                Err(error) => {
                    tracing::error!(%error, retry_in_ms = backoff.as_millis() as u64, "executor stopped; retrying");
                    if wait_or_shutdown(&mut shutdown, backoff).await {
                        break;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    async fn run_once(&self, shutdown: &mut watch::Receiver<bool>) -> Result<(), sqlx::Error> {
        let lock = lock_name("executor.worker");
        let mut conn = self.pool().acquire().await?.detach();
        loop {
            if stopping(shutdown) {
                return Ok(());
            }
            let locked: bool =
                sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                    .bind(&lock)
                    .fetch_one(&mut conn)
                    .await?;
            if locked {
                break;
            }
            if wait_or_shutdown(shutdown, Duration::from_secs(1)).await {
                return Ok(());
            }
        }
        tracing::info!("executor active");
        let notifications = self.notifications.clone().unwrap_or_else(|| {
            Notifications::start(self.pool().connect_options().as_ref().clone())
        });
        let mut wakeups = notifications.subscribe();
        let mut tasks: JoinSet<String> = JoinSet::new();
        let mut in_flight: HashSet<String> = HashSet::new();
        let result = loop {
            if stopping(shutdown) {
                break Ok(());
            }
            let next_due = match self.start_due(&mut tasks, &mut in_flight).await {
                Ok(next) => next,
                Err(error) => break Err(error),
            };
            // No job due: sleep until the next one is, or until something changes. The
            // slow fallback only covers a notification lost while reconnecting.
            let wait = next_due
                .map(|due| (due - Utc::now()).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(Duration::from_secs(30))
                .min(Duration::from_secs(30));
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = wakeups.wait_for(JOBS_CHANNEL, None) => wakeups.drain(),
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Ok(id) = done {
                        in_flight.remove(&id);
                    }
                }
                _ = tokio::time::sleep(wait) => {}
            }
        };
        // Attempts under way finish and record their results before the lock goes.
        while tasks.join_next().await.is_some() {}
        sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
            .bind(&lock)
            .execute(&mut conn)
            .await?;
        tracing::info!("executor released");
        result
    }

    /// Starts the due jobs there is room for; answers when the next one falls due.
    async fn start_due(
        &self,
        tasks: &mut JoinSet<String>,
        in_flight: &mut HashSet<String>,
    ) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        let room = self.config.concurrency.max(1).saturating_sub(tasks.len());
        let busy: Vec<String> = in_flight.iter().cloned().collect();
        let rows = sqlx::query(
            "SELECT proposal_id, approved_at, held_by, due_at, due_at <= now() AS due \
             FROM execution_jobs \
             WHERE NOT (proposal_id = ANY($1)) AND due_at < 'infinity' \
             ORDER BY due_at, proposal_id LIMIT $2",
        )
        .bind(&busy)
        .bind(room as i64 + 1)
        .fetch_all(self.pool())
        .await?;
        for (started, row) in rows.into_iter().enumerate() {
            let due: bool = row.try_get("due")?;
            if !due || started == room {
                let at: DateTime<Utc> = row.try_get("due_at")?;
                return Ok(Some(at));
            }
            let job = Job {
                proposal_id: row.try_get("proposal_id")?,
                approved_at: row.try_get("approved_at")?,
                held_by: row.try_get("held_by")?,
            };
            in_flight.insert(job.proposal_id.clone());
            let executor = self.clone();
            tasks.spawn(async move { executor.attempt(job).await });
        }
        Ok(None)
    }

    /// One look at one job. Whatever fails here is logged and the job looked at again soon:
    /// the proposal's stream says what was done, so looking again is always safe.
    #[tracing::instrument(skip_all, fields(proposal = %job.proposal_id))]
    async fn attempt(self, job: Job) -> String {
        if let Err(error) = self.step(&job).await {
            tracing::warn!(%error, "execution step failed; looking again shortly");
            let _ = sqlx::query(
                "UPDATE execution_jobs SET due_at = now() + interval '2 seconds' \
                 WHERE proposal_id = $1",
            )
            .bind(&job.proposal_id)
            .execute(self.pool())
            .await;
        }
        if let Ok(mut running) = self.running.lock() {
            running.remove(&job.proposal_id);
        }
        job.proposal_id
    }

    async fn record(&self, id: &str, command: ProposalCommand) -> Result<(), StepError> {
        let metadata = Metadata::by(ACTOR).into();
        self.store.proposal(id, command, metadata).await?;
        Ok(())
    }

    async fn finish(&self, id: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM execution_jobs WHERE proposal_id = $1")
            .bind(id)
            .execute(self.pool())
            .await
            .map(|_| ())
    }

    async fn step(&self, job: &Job) -> Result<(), StepError> {
        let id = job.proposal_id.as_str();
        let mut proposal = self.store.load_proposal(id).await?;
        let action_type = proposal.action_type().to_string();
        if proposal.status() == Status::RollingBack {
            return self.roll_back(job, &proposal).await;
        }
        if proposal.status() == Status::Executing {
            if !self.interrupted(id, &proposal).await? {
                return Ok(());
            }
            proposal = self.store.load_proposal(id).await?;
        }
        if proposal.may_start().is_err() {
            // Not approved, or nothing left to do: whatever put the job here, nothing runs.
            self.finish(id).await?;
            return Ok(());
        }
        let Some(adapter) = adapter_of(&action_type) else {
            self.record(id, ProposalCommand::StartExecution).await?;
            self.record(
                id,
                ProposalCommand::RecordFailure {
                    attempt: proposal.attempts() + 1,
                    error: format!("no adapter executes {action_type}"),
                    retryable: false,
                },
            )
            .await?;
            self.finish(id).await?;
            return Ok(());
        };
        let (attempt, probe) = {
            let _gate = self.gate.lock().await;
            let probe = match self.hold(&action_type, adapter).await? {
                Err(hold) => return self.defer(job, hold).await,
                Ok(probe) => probe,
            };
            // Refused only if the proposal changed since it was loaded (a person resolved
            // it meanwhile): the next look, from the stream again, sorts it out.
            self.record(id, ProposalCommand::StartExecution).await?;
            let attempt = proposal.attempts() + 1;
            self.attempt_started(id, attempt as i32, &action_type, adapter)
                .await?;
            (attempt, probe)
        };
        let key = proposal.idempotency_key().unwrap_or_default();
        let result = self
            .adapters
            .execute(&action_type, proposal.action(), &key)
            .await;
        self.conclude(job, adapter, attempt, probe, result).await
    }

    /// Carries out an undo the quorum asked for, with the same rules as an execution: the
    /// guardrails first, the attempt recorded before the call, and an attempt found open
    /// (the process died during the call) repeated only where the provider dedupes.
    /// Attempts count against the action type's rate limit; in `execution_attempts` an
    /// undo's attempt `n` is numbered `-n`.
    async fn roll_back(&self, job: &Job, proposal: &Proposal) -> Result<(), StepError> {
        let id = job.proposal_id.as_str();
        let action_type = proposal.action_type().to_string();
        let adapter = adapter_of(&action_type).unwrap_or("none");
        if proposal.rollback_running() {
            let attempt = proposal.rollback_attempts();
            self.row_finished(id, undo_row(attempt), "interrupted")
                .await?;
            if self.adapters.dedupes(&action_type) {
                self.record(
                    id,
                    ProposalCommand::RecordRollbackFailure {
                        attempt,
                        error: format!(
                            "the process stopped before the result of undo attempt {attempt} \
                             was recorded; undoing again with the same key, which {adapter} \
                             dedupes"
                        ),
                        retryable: true,
                    },
                )
                .await?;
            } else {
                self.record(
                    id,
                    ProposalCommand::RecordRollbackUncertain {
                        attempt,
                        reason: format!(
                            "the process stopped after undo attempt {attempt} may have reached \
                             {adapter} and before its result was recorded; {adapter} does not \
                             dedupe, so ExecOps will not undo again on its own. Check {adapter}."
                        ),
                    },
                )
                .await?;
                self.metrics.execution(adapter, "uncertain");
                self.finish(id).await?;
                return Ok(());
            }
        }
        let (attempt, probe) = {
            let _gate = self.gate.lock().await;
            let probe = match self.hold(&action_type, adapter).await? {
                Err(hold) => return self.defer(job, hold).await,
                Ok(probe) => probe,
            };
            self.record(id, ProposalCommand::StartRollback).await?;
            let attempt = proposal.rollback_attempts() + 1;
            self.attempt_started(id, undo_row(attempt), &action_type, adapter)
                .await?;
            (attempt, probe)
        };
        let key = proposal.idempotency_key().unwrap_or_default();
        let result = self
            .adapters
            .rollback(&action_type, proposal.action(), proposal.result(), &key)
            .await;
        match result {
            Ok(value) => {
                self.record(
                    id,
                    ProposalCommand::RecordRollback {
                        attempt,
                        result: value,
                    },
                )
                .await?;
                self.row_finished(id, undo_row(attempt), "ok").await?;
                self.finish(id).await?;
                self.metrics.execution(adapter, "rolled_back");
                if probe {
                    self.close_circuit(adapter).await?;
                }
            }
            Err(error) => {
                let transient = error.is_retryable();
                let retryable = transient && attempt < self.config.max_attempts;
                self.record(
                    id,
                    ProposalCommand::RecordRollbackFailure {
                        attempt,
                        error: error.to_string(),
                        retryable,
                    },
                )
                .await?;
                let outcome = if transient { "transient" } else { "permanent" };
                self.row_finished(id, undo_row(attempt), outcome).await?;
                if retryable {
                    self.retry_later(id, self.backoff(attempt, &error)).await?;
                } else {
                    self.finish(id).await?;
                }
                if transient {
                    self.maybe_open_circuit(adapter).await?;
                }
            }
        }
        Ok(())
    }

    /// An attempt found open: its process died between the call and the record. Answers
    /// whether to go on and try again.
    async fn interrupted(&self, id: &str, proposal: &Proposal) -> Result<bool, StepError> {
        let attempt = proposal.attempts();
        let action_type = proposal.action_type();
        let adapter = adapter_of(action_type).unwrap_or("none");
        self.attempt_finished(id, attempt, "interrupted").await?;
        if self.adapters.dedupes(action_type) {
            self.record(
                id,
                ProposalCommand::RecordFailure {
                    attempt,
                    error: format!(
                        "the process stopped before the result of attempt {attempt} was \
                         recorded; trying again with the same idempotency key, which {adapter} \
                         dedupes"
                    ),
                    retryable: true,
                },
            )
            .await?;
            Ok(true)
        } else {
            self.record(
                id,
                ProposalCommand::RecordUncertain {
                    attempt,
                    reason: format!(
                        "the process stopped after attempt {attempt} may have reached \
                         {adapter} and before its result was recorded; {adapter} does not \
                         dedupe, so ExecOps will not send it again on its own. Check, then \
                         mark it as done or retry."
                    ),
                },
            )
            .await?;
            self.metrics.execution(adapter, "uncertain");
            self.finish(id).await?;
            Ok(false)
        }
    }

    /// Whether the guardrails let an attempt start now: `Ok(true)` when it is the probe of a
    /// half-open circuit, whose success closes it.
    async fn hold(
        &self,
        action_type: &str,
        adapter: &str,
    ) -> Result<Result<bool, Hold>, StepError> {
        let guardrails = self.store.load_guardrails().await?;
        let row = sqlx::query(
            "SELECT count(*)::int AS started, min(started_at) AS oldest FROM execution_attempts \
             WHERE action_type = $1 AND started_at > now() - interval '1 hour'",
        )
        .bind(action_type)
        .fetch_one(self.pool())
        .await?;
        let started: i32 = row.try_get("started")?;
        let probe_running = self
            .running
            .lock()
            .map(|running| running.values().any(|a| *a == adapter))
            .unwrap_or(false);
        let load = Load {
            now: Utc::now(),
            started_last_hour: started.max(0) as u32,
            oldest_in_hour: row.try_get("oldest")?,
            default_per_hour: self.config.default_rate_per_hour,
            probe_running,
        };
        Ok(match guardrails.hold(action_type, adapter, &load) {
            Some(hold) => Err(hold),
            None => Ok(guardrails.circuits().contains_key(adapter)),
        })
    }

    /// Records a hold once (not at every look) and parks the job until the hold ends by
    /// itself or the guardrails change.
    async fn defer(&self, job: &Job, hold: Hold) -> Result<(), StepError> {
        let key = hold_key(&hold);
        if job.held_by.as_deref() != Some(key.as_str()) {
            self.record(
                &job.proposal_id,
                ProposalCommand::Defer {
                    reason: hold.to_string(),
                    until: hold.until(),
                },
            )
            .await?;
            let adapter = match &hold {
                Hold::CircuitOpen { adapter, .. } => adapter.as_str(),
                _ => "any",
            };
            self.metrics.execution(adapter, "deferred");
        }
        sqlx::query(
            "UPDATE execution_jobs SET held_by = $2, due_at = coalesce($3, 'infinity') \
             WHERE proposal_id = $1",
        )
        .bind(&job.proposal_id)
        .bind(key)
        .bind(hold.until())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Opens row `row` of `execution_attempts` (an attempt, or an undo's as `-n`), which
    /// counts against the rate limit, and marks the adapter busy in this process.
    async fn attempt_started(
        &self,
        id: &str,
        row: i32,
        action_type: &str,
        adapter: &'static str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO execution_attempts (proposal_id, attempt, action_type, adapter, started_at) \
             VALUES ($1, $2, $3, $4, now()) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(row)
        .bind(action_type)
        .bind(adapter)
        .execute(self.pool())
        .await?;
        if let Ok(mut running) = self.running.lock() {
            running.insert(id.to_string(), adapter);
        }
        Ok(())
    }

    /// Looks at the job again after `wait`, whatever held it before.
    async fn retry_later(&self, id: &str, wait: Duration) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE execution_jobs SET held_by = NULL, \
               due_at = now() + make_interval(secs => $2) WHERE proposal_id = $1",
        )
        .bind(id)
        .bind(wait.as_secs_f64())
        .execute(self.pool())
        .await
        .map(|_| ())
    }

    async fn attempt_finished(
        &self,
        id: &str,
        attempt: u32,
        outcome: &str,
    ) -> Result<(), sqlx::Error> {
        self.row_finished(id, attempt as i32, outcome).await
    }

    /// Closes row `row` of `execution_attempts`: an attempt, or (negative) an undo's.
    async fn row_finished(&self, id: &str, row: i32, outcome: &str) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE execution_attempts SET finished_at = now(), outcome = $3 \
             WHERE proposal_id = $1 AND attempt = $2",
        )
        .bind(id)
        .bind(row)
        .bind(outcome)
        .execute(self.pool())
        .await
        .map(|_| ())
    }

    async fn conclude(
        &self,
        job: &Job,
        adapter: &'static str,
        attempt: u32,
        probe: bool,
        result: Result<serde_json::Value, AdapterError>,
    ) -> Result<(), StepError> {
        let id = job.proposal_id.as_str();
        match result {
            Ok(value) => {
                let at = Utc::now();
                self.record(
                    id,
                    ProposalCommand::RecordSuccess {
                        attempt,
                        result: value,
                        at,
                    },
                )
                .await?;
                self.attempt_finished(id, attempt, "ok").await?;
                self.finish(id).await?;
                self.metrics.execution(adapter, "succeeded");
                let latency = (at - job.approved_at).to_std().unwrap_or_default();
                self.metrics
                    .execution_latency
                    .observe(latency.as_secs_f64());
                if probe {
                    self.close_circuit(adapter).await?;
                }
            }
            Err(error) => {
                let transient = error.is_retryable();
                let retryable = transient && attempt < self.config.max_attempts;
                let message = if transient && !retryable {
                    format!("gave up after {attempt} attempts: {error}")
                } else {
                    error.to_string()
                };
                self.record(
                    id,
                    ProposalCommand::RecordFailure {
                        attempt,
                        error: message,
                        retryable,
                    },
                )
                .await?;
                let outcome = if transient { "transient" } else { "permanent" };
                self.attempt_finished(id, attempt, outcome).await?;
                if retryable {
                    self.retry_later(id, self.backoff(attempt, &error)).await?;
                    self.metrics.execution(adapter, "retrying");
                } else {
                    self.finish(id).await?;
                    self.metrics.execution(adapter, "failed");
                }
                if transient {
                    self.maybe_open_circuit(adapter).await?;
                }
            }
        }
        Ok(())
    }

    /// Exponential back-off with full jitter, at least what the provider asked for.
    fn backoff(&self, attempt: u32, error: &AdapterError) -> Duration {
        let exponent = attempt.saturating_sub(1).min(20);
        let ceiling = self
            .config
            .base_backoff
            .saturating_mul(1 << exponent)
            .min(self.config.max_backoff);
        let jittered = ceiling.mul_f64(rand::thread_rng().gen_range(0.5..=1.0));
        match error {
            AdapterError::Transient {
                retry_after: Some(asked),
                ..
            } => jittered
                .max(*asked)
                .min(self.config.max_backoff.max(*asked)),
            _ => jittered,
        }
    }

    /// Opens the adapter's circuit after `breaker_failures` transient failures in a row
    /// (or again when the probe of a half-open circuit fails).
    async fn maybe_open_circuit(&self, adapter: &str) -> Result<(), StepError> {
        let threshold = self.config.breaker_failures.max(1);
        let recent: Vec<String> = sqlx::query_scalar(
            "SELECT outcome FROM execution_attempts \
             WHERE adapter = $1 AND outcome IN ('ok', 'transient') \
             ORDER BY finished_at DESC LIMIT $2",
        )
        .bind(adapter)
        .bind(threshold as i64)
        .fetch_all(self.pool())
        .await?;
        let guardrails = self.store.load_guardrails().await?;
        let now = Utc::now();
        let open = guardrails
            .circuits()
            .get(adapter)
            .is_some_and(|until| *until > now);
        let half_open = guardrails.circuits().contains_key(adapter) && !open;
        let tripped = recent.len() as u32 >= threshold && recent.iter().all(|o| o == "transient");
        if !open && (tripped || half_open) {
            let cooldown = chrono::Duration::from_std(self.config.breaker_cooldown)
                .unwrap_or_else(|_| chrono::Duration::seconds(60));
            self.store
                .guardrails(
                    GuardrailsCommand::OpenCircuit {
                        adapter: adapter.to_string(),
                        failures: recent.len() as u32,
                        until: now + cooldown,
                    },
                    Metadata::by(ACTOR).into(),
                )
                .await?;
            tracing::warn!(adapter, "circuit opened after repeated failures");
        }
        Ok(())
    }

    async fn close_circuit(&self, adapter: &str) -> Result<(), StepError> {
        let result = self
            .store
            .guardrails(
                GuardrailsCommand::CloseCircuit {
                    adapter: adapter.to_string(),
                },
                Metadata::by(ACTOR).into(),
            )
            .await;
        match result {
            Ok(()) | Err(CommandError::Refused(_)) => Ok(()),
            Err(other) => Err(other.into()),
        }
    }
}

/// What a hold is about, without its times: the same hold is recorded once.
/// The `execution_attempts` row of an undo's attempt `attempt`.
fn undo_row(attempt: u32) -> i32 {
    -i32::try_from(attempt).unwrap_or(i32::MAX)
}

fn hold_key(hold: &Hold) -> String {
    match hold {
        Hold::KillSwitch(Scope::Global) => "kill_switch".into(),
        Hold::KillSwitch(Scope::ActionType(t)) => format!("kill_switch:action_type:{t}"),
        Hold::KillSwitch(Scope::Adapter(a)) => format!("kill_switch:adapter:{a}"),
        Hold::Disabled(t) => format!("disabled:{t}"),
        Hold::RateLimited { .. } => "rate_limited".into(),
        Hold::CircuitOpen { adapter, .. } => format!("circuit_open:{adapter}"),
    }
}
