//! Checkpointed subscribers: each reads the log in commit-safe order and applies every event
//! exactly once, writing its own rows and its checkpoint in one transaction, so it survives
//! a crash anywhere. One process at a time runs a given subscription (a Postgres advisory
//! lock); the others stand by and take over when it stops or dies.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::{Connection, PgConnection, PgPool, Row};
use tokio::sync::watch;

use super::log::{read_after_with, LogPosition, Selection, Slim, StoredEvent};
use super::notifications::Notifications;

/// The channel the `events` insert trigger notifies.
pub const EVENTS_CHANNEL: &str = "execops_events";
/// Where each subscription says, with its name, that it has applied a batch holding events
/// it reads: told when the batch commits, so that a reader of its tables (the inbox) can
/// read what it just wrote.
pub const CHECKPOINTS_CHANNEL: &str = "execops_checkpoints";

pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// Something that follows the log. `handle` runs inside the runner's transaction; the
/// runner commits it together with the checkpoint, or rolls both back.
pub trait Subscriber: Send + Sync + 'static {
    /// Stable: it keys the checkpoint and the advisory lock.
    fn name(&self) -> &str;

    fn handle(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// The aggregate types whose payloads this subscriber reads; events of other types reach
    /// it with a `null` payload. `None`, the default, reads every payload.
    fn payload_types(&self) -> Option<&'static [&'static str]> {
        None
    }

    /// True when events of aggregate types outside [`Subscriber::payload_types`] change
    /// nothing for this subscriber, so a rebuild (`execops replay`) need not read them at
    /// all. The live runner still reads every event, to move its checkpoint past them.
    fn ignores_other_types(&self) -> bool {
        false
    }

    /// The parts of some aggregate types' payloads this subscriber reads, when it reads few
    /// of a large payload's fields; the others, by default all, are decoded whole.
    fn slim(&self) -> &'static [Slim] {
        &[]
    }

    /// Senders (the source part of an `Inbound` id) whose deliveries change nothing for this
    /// subscriber, so that a rebuild need not read them; with [`Subscriber::ignores_other_types`].
    fn ignores_sources(&self) -> &'static [&'static str] {
        &[]
    }

    /// What a rebuild of this subscriber reads of the log, from the declarations above.
    fn selection(&self) -> Selection {
        Selection::of(
            self.payload_types(),
            self.ignores_other_types(),
            self.ignores_sources(),
            self.slim(),
        )
    }

    /// Applies a batch in log order. Override it when a batch can be written in fewer
    /// statements than its events; the result must equal applying them one by one.
    fn handle_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> impl Future<Output = Result<(), (LogPosition, HandlerError)>> + Send {
        async move {
            for event in events {
                self.handle(&mut *conn, event)
                    .await
                    .map_err(|error| (event.log, error))?;
            }
            Ok(())
        }
    }
}

#[derive(Clone, Debug)]
pub struct RunnerOptions {
    /// Events applied in one transaction.
    pub batch_size: i64,
    /// The slow poll that backs up LISTEN/NOTIFY.
    pub poll_interval: Duration,
    /// How often a standby checks whether the active runner is gone.
    pub standby_interval: Duration,
    /// The longest pause after a failure before trying again.
    pub max_backoff: Duration,
    /// After a notification, how long to let more events gather before reading: under load
    /// it turns a transaction per commit into a transaction per batch.
    pub gather: Duration,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_secs(2),
            standby_interval: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            gather: Duration::from_millis(10),
        }
    }
}

/// What a runner tells the rest of the process (readiness, metrics) about itself.
#[derive(Debug)]
pub struct RunnerStatus {
    pub name: String,
    active: AtomicBool,
    processed: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl RunnerStatus {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            active: AtomicBool::new(false),
            processed: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    /// Whether this process holds the subscription's lock and is applying events.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    pub fn processed(&self) -> u64 {
        self.processed.load(Ordering::Relaxed)
    }

    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
    }
}

/// The subscriptions this process runs or stands by for.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    runners: Arc<Mutex<Vec<Arc<RunnerStatus>>>>,
}

impl Registry {
    fn register(&self, name: &str) -> Arc<RunnerStatus> {
        let status = Arc::new(RunnerStatus::new(name));
        if let Ok(mut runners) = self.runners.lock() {
            runners.push(status.clone());
        }
        status
    }

    pub fn statuses(&self) -> Vec<Arc<RunnerStatus>> {
        self.runners.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("subscriber failed on event {position}: {source}")]
    Handler {
        position: LogPosition,
        source: HandlerError,
    },
    #[error("the checkpoint moved under this runner; another runner or a rebuild owns it")]
    CheckpointMoved,
}

pub struct Runner<S: Subscriber> {
    pool: PgPool,
    subscriber: Arc<S>,
    options: RunnerOptions,
    status: Arc<RunnerStatus>,
    notifications: Option<Notifications>,
}

impl<S: Subscriber> Runner<S> {
    pub fn new(pool: PgPool, subscriber: S, options: RunnerOptions, registry: &Registry) -> Self {
        let status = registry.register(subscriber.name());
        Self {
            pool,
            subscriber: Arc::new(subscriber),
            options,
            status,
            notifications: None,
        }
    }

    /// Wakes on the process's shared listener instead of a connection of its own.
    pub fn with_notifications(mut self, notifications: Notifications) -> Self {
        self.notifications = Some(notifications);
        self
    }

    pub fn status(&self) -> Arc<RunnerStatus> {
        self.status.clone()
    }

    /// Runs until `shutdown` turns true, standing by while another process holds the
    /// subscription and retrying with back-off after failures.
    #[tracing::instrument(skip_all, fields(subscription = %self.subscriber.name()))]
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.run_once(&mut shutdown).await {
                Ok(()) => break,
                Err(error) => {
                    self.status.active.store(false, Ordering::Relaxed);
                    self.status.failures.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut last) = self.status.last_error.lock() {
                        *last = Some(error.to_string());
                    }
                    tracing::error!(%error, retry_in_ms = backoff.as_millis() as u64, "subscription stopped; retrying");
                    if wait_or_shutdown(&mut shutdown, backoff).await {
                        break;
                    }
                    backoff = (backoff * 2).min(self.options.max_backoff);
                }
            }
        }
        self.status.active.store(false, Ordering::Relaxed);
    }

    async fn run_once(&self, shutdown: &mut watch::Receiver<bool>) -> Result<(), RunError> {
        let name = self.subscriber.name();
        // A connection of its own, outside the pool: the advisory lock lives exactly as long
        // as it does, and it must never go back to the pool still holding the lock.
        let mut conn = self.pool.acquire().await?.detach();
        loop {
            if stopping(shutdown) {
                return Ok(());
            }
            let locked: bool =
                sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                    .bind(lock_name(name))
                    .fetch_one(&mut conn)
                    .await?;
            if locked {
                break;
            }
            if wait_or_shutdown(shutdown, self.options.standby_interval).await {
                return Ok(());
            }
        }
        tracing::info!("subscription active");
        self.status.active.store(true, Ordering::Relaxed);

        let notifications = self
            .notifications
            .clone()
            .unwrap_or_else(|| Notifications::start(self.pool.connect_options().as_ref().clone()));
        let mut wakeups = notifications.subscribe();
        let mut checkpoint = load_checkpoint(&mut conn, name).await?;
        let mut retry_soon: Option<Duration> = None;

        loop {
            if stopping(shutdown) {
                break;
            }
            let batch = read_after_with(
                &mut conn,
                checkpoint,
                self.options.batch_size,
                self.subscriber.payload_types(),
                self.subscriber.slim(),
            )
            .await?;
            if let Some(last) = batch.last().map(|e| e.log) {
                self.apply(&mut conn, &batch, checkpoint, last).await?;
                checkpoint = last;
                self.status
                    .processed
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                retry_soon = None;
                // Caught up while events keep coming: let a batch gather rather than spend a
                // transaction on every few events.
                if (batch.len() as i64) < self.options.batch_size {
                    wait_or_shutdown(shutdown, self.options.gather).await;
                }
                continue;
            }
            // Nothing readable. A notification means something committed; if it is still
            // behind an older running transaction, look again soon rather than at the poll.
            let wait = retry_soon.unwrap_or(self.options.poll_interval);
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = wakeups.wait_for(EVENTS_CHANNEL, None) => {
                    tokio::time::sleep(self.options.gather).await;
                    wakeups.drain();
                    retry_soon = Some(Duration::from_millis(20));
                }
                _ = tokio::time::sleep(wait) => {
                    retry_soon = retry_soon.map(|d| (d * 2).min(self.options.poll_interval));
                }
            }
        }
        sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
            .bind(lock_name(name))
            .execute(&mut conn)
            .await?;
        self.status.active.store(false, Ordering::Relaxed);
        tracing::info!("subscription released");
        Ok(())
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        batch: &[StoredEvent],
        from: LogPosition,
        to: LogPosition,
    ) -> Result<(), RunError> {
        let mut tx = conn.begin().await?;
        self.subscriber
            .handle_batch(&mut tx, batch)
            .await
            .map_err(|(position, source)| RunError::Handler { position, source })?;
        let moved = sqlx::query(
            "UPDATE subscription_checkpoints \
             SET transaction_id = $2::bigint::text::xid8, position = $3, updated_at = now() \
             WHERE name = $1 AND transaction_id = $4::bigint::text::xid8 AND position = $5",
        )
        .bind(self.subscriber.name())
        .bind(to.transaction_id)
        .bind(to.position)
        .bind(from.transaction_id)
        .bind(from.position)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() != 1 {
            return Err(RunError::CheckpointMoved);
        }
        let types = self.subscriber.payload_types();
        if batch
            .iter()
            .any(|e| types.is_none_or(|types| types.contains(&e.aggregate_type.as_str())))
        {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHECKPOINTS_CHANNEL)
                .bind(self.subscriber.name())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

pub(crate) fn lock_name(subscription: &str) -> String {
    format!("execops.subscription.{subscription}")
}

/// True once shutdown was asked for, or once nobody is left to ask.
pub(crate) fn stopping(shutdown: &watch::Receiver<bool>) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

/// Sleeps for `duration`; true if shutdown was asked for meanwhile.
pub(crate) async fn wait_or_shutdown(
    shutdown: &mut watch::Receiver<bool>,
    duration: Duration,
) -> bool {
    tokio::select! {
        _ = shutdown.changed() => {}
        _ = tokio::time::sleep(duration) => {}
    }
    stopping(shutdown)
}

async fn load_checkpoint(conn: &mut PgConnection, name: &str) -> Result<LogPosition, sqlx::Error> {
    sqlx::query("INSERT INTO subscription_checkpoints (name) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(name)
        .execute(&mut *conn)
        .await?;
    checkpoint(&mut *conn, name)
        .await
        .map(|c| c.unwrap_or(LogPosition::START))
}

/// A subscription's checkpoint as stored; `None` if it has never run.
pub async fn checkpoint<'e, E: sqlx::PgExecutor<'e>>(
    executor: E,
    name: &str,
) -> Result<Option<LogPosition>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT transaction_id::text::bigint AS transaction_id, position \
         FROM subscription_checkpoints WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(executor)
    .await?;
    row.map(|row| {
        Ok(LogPosition {
            transaction_id: row.try_get("transaction_id")?,
            position: row.try_get("position")?,
        })
    })
    .transpose()
}

/// How far behind the subscription `name` is, wherever it runs.
pub async fn backlog(pool: &PgPool, name: &str) -> Result<super::log::Backlog, sqlx::Error> {
    let at = checkpoint(pool, name).await?.unwrap_or(LogPosition::START);
    super::log::backlog(pool, at, BACKLOG_CAP).await
}

/// Lag is counted up to this many events; past it the exact number does not matter.
pub const BACKLOG_CAP: i64 = 100_000;

/// Waits until `subscriber`'s read model has applied every event recorded so far on one
/// aggregate, so that a command's caller reads its own write (a token works on the next
/// request). Whoever runs the subscription applies it: a serving instance, or, when none
/// does, a runner started here for the wait and stopped after it.
pub async fn wait_applied<S: Subscriber>(
    pool: &PgPool,
    subscriber: S,
    aggregate_type: &str,
    aggregate_id: &str,
    timeout: Duration,
) -> Result<(), WaitError> {
    let name = subscriber.name().to_string();
    let target: Option<(i64, i64)> = sqlx::query_as(
        "SELECT transaction_id::text::bigint, position FROM events \
         WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence DESC LIMIT 1",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .fetch_optional(pool)
    .await?;
    let Some((transaction_id, position)) = target else {
        return Ok(());
    };
    let target = LogPosition {
        transaction_id,
        position,
    };
    let (stop, stopped) = watch::channel(false);
    let options = RunnerOptions {
        standby_interval: Duration::from_millis(50),
        poll_interval: Duration::from_millis(50),
        gather: Duration::ZERO,
        ..RunnerOptions::default()
    };
    let runner = tokio::spawn(
        Runner::new(pool.clone(), subscriber, options, &Registry::default()).run(stopped),
    );
    let deadline = tokio::time::Instant::now() + timeout;
    let outcome = loop {
        let at = match checkpoint(pool, &name).await {
            Ok(Some(at)) if at >= target => break Ok(()),
            Ok(at) => at.unwrap_or(LogPosition::START),
            Err(error) => break Err(error.into()),
        };
        if tokio::time::Instant::now() >= deadline {
            break Err(WaitError::NotApplied {
                subscription: name,
                timeout,
                at,
                target,
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let _ = stop.send(true);
    let _ = runner.await;
    outcome
}

#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(
        "the change is recorded, but the {subscription} read model has not applied it within \
         {timeout:?} (it is at {at:?}, the change at {target:?}); /readyz names a subscription \
         that is stuck or failing"
    )]
    NotApplied {
        subscription: String,
        timeout: Duration,
        at: LogPosition,
        target: LogPosition,
    },
}
