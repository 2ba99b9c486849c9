//! Rebuilding projections from the event log, beside the live ones.
//!
//! A replay creates the projection's tables afresh in a schema of its own
//! (`execops_replay_NAME`), runs the projection's own subscriber over the whole log into them
//! (the connection's `search_path` puts that schema first, so the subscriber's SQL is used
//! unchanged), in short transactions, so the live subscribers never wait on it. Then, in
//! one short transaction that holds the live tables, it catches up with the live checkpoint
//! and either swaps the new tables in (indexes, views and foreign keys carried over) or
//! compares them with the live ones and reports every difference.
//!
//! Only pure projections replay: the router, the executor and the outcome watcher act on
//! what they read, and replaying them would act twice.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool, Row};

use crate::projections::{AuditLog, Canvas, EventCounts, Proposals, Users};
use tokio::sync::mpsc;

use crate::store::log::{LogPosition, Selection, StoredEvent};
use crate::store::subscription::{checkpoint, HandlerError, Subscriber};

/// A projection that can be rebuilt: its subscription name and the tables it owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Projection {
    pub name: &'static str,
    pub tables: &'static [&'static str],
}

pub const PROJECTIONS: &[Projection] = &[
    Projection {
        name: "event_counts",
        tables: &["event_counts"],
    },
    Projection {
        name: "proposals",
        tables: &["proposal_summaries"],
    },
    Projection {
        name: "users",
        tables: &["users", "api_tokens"],
    },
    Projection {
        name: "audit_log",
        tables: &["audit_log"],
    },
    Projection {
        name: "canvas",
        tables: crate::projections::canvas::TABLES,
    },
];

/// Events applied per transaction: fewer statements a million events than 1,000, at about
/// 200 MB for all the projections at once (`just bench-replay`).
const BATCH: i64 = 4_000;
/// Differences listed per table; the count is always exact.
const SHOWN_DIFFERENCES: i64 = 200;
/// Statistics are gathered on a rebuild's tables after batches 1, 2, 4, … up to this one.
const ANALYZED_BATCHES: u64 = 32;

/// Evaluates `$body` with `$s` bound to the subscriber of the projection named `$name`.
macro_rules! with_subscriber {
    ($name:expr, |$s:ident| $body:expr) => {
        match $name {
            "event_counts" => {
                let $s = EventCounts;
                $body
            }
            "proposals" => {
                let $s = Proposals;
                $body
            }
            "users" => {
                let $s = Users;
                $body
            }
            "audit_log" => {
                let $s = AuditLog;
                $body
            }
            "canvas" => {
                let $s = Canvas;
                $body
            }
            other => Err(find(other)
                .err()
                .unwrap_or_else(|| ReplayError::UnknownProjection(other.into(), String::new()))),
        }
    };
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("no projection {0:?}; the projections are {1}")]
    UnknownProjection(String, String),
    #[error("another replay of {0} is running")]
    Busy(&'static str),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("a replay task ended abnormally: {0}")]
    Task(String),
    #[error("{projection}: event {position} could not be applied: {source}")]
    Handler {
        projection: &'static str,
        position: LogPosition,
        source: HandlerError,
    },
}

pub fn find(name: &str) -> Result<Projection, ReplayError> {
    PROJECTIONS
        .iter()
        .find(|p| p.name == name)
        .copied()
        .ok_or_else(|| {
            let names: Vec<&str> = PROJECTIONS.iter().map(|p| p.name).collect();
            ReplayError::UnknownProjection(name.to_string(), names.join(", "))
        })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Rebuild and swap the new tables in.
    Swap,
    /// Rebuild and compare with the live tables; change nothing.
    Verify,
}

/// A row that differs between the live table and its rebuild.
#[derive(Clone, Debug, PartialEq)]
pub struct Difference {
    pub table: &'static str,
    /// The row's primary key, as JSON.
    pub key: Value,
    /// The row as live, `None` when only the rebuild has it.
    pub live: Option<Value>,
    /// The row as rebuilt, `None` when only the live table has it.
    pub replayed: Option<Value>,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = self.key.to_string();
        match (&self.live, &self.replayed) {
            (Some(_), None) => write!(f, "{} {key}: only in the live table", self.table),
            (None, Some(_)) => write!(f, "{} {key}: missing from the live table", self.table),
            (Some(Value::Object(live)), Some(Value::Object(replayed))) => {
                let changes: Vec<String> = replayed
                    .iter()
                    .filter_map(|(column, value)| {
                        let was = live.get(column).unwrap_or(&Value::Null);
                        (was != value)
                            .then(|| format!("{column} is {was} live, {value} from the events"))
                    })
                    .collect();
                write!(f, "{} {key}: {}", self.table, changes.join("; "))
            }
            _ => write!(f, "{} {key}: differs", self.table),
        }
    }
}

/// What one projection's replay did.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub projection: &'static str,
    pub mode: Mode,
    /// Events read from the log, the catch-up included.
    pub events: u64,
    pub elapsed: Duration,
    /// Where the projection stands afterwards.
    pub through: LogPosition,
    /// With `--verify`: how many rows differ per table, and the first of them.
    pub differing_rows: i64,
    pub differences: Vec<Difference>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = self.events as f64 / self.elapsed.as_secs_f64().max(1e-9);
        match self.mode {
            Mode::Swap => write!(
                f,
                "{}: rebuilt from {} events in {:.1}s ({:.0} events/s) and swapped in, through event {}",
                self.projection,
                self.events,
                self.elapsed.as_secs_f64(),
                rate,
                self.through
            ),
            Mode::Verify if self.differing_rows == 0 => write!(
                f,
                "{}: no difference ({} events, through event {})",
                self.projection, self.events, self.through
            ),
            Mode::Verify => {
                writeln!(
                    f,
                    "{}: {} rows differ from what the events say (through event {})",
                    self.projection, self.differing_rows, self.through
                )?;
                for difference in &self.differences {
                    writeln!(f, "  {difference}")?;
                }
                if (self.differences.len() as i64) < self.differing_rows {
                    writeln!(
                        f,
                        "  … and {} more",
                        self.differing_rows - self.differences.len() as i64
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// What a replay is about to do, for people to read before it starts.
pub async fn plan(
    pool: &PgPool,
    projections: &[Projection],
    mode: Mode,
) -> Result<String, sqlx::Error> {
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await?;
    let mut text = String::new();
    for projection in projections {
        let _ = writeln!(
            text,
            "{}: rebuild {} from {events} events in schema {}",
            projection.name,
            projection.tables.join(", "),
            shadow_schema(projection)
        );
    }
    let _ = match mode {
        Mode::Swap => writeln!(
            text,
            "The live tables keep serving meanwhile; at the end each is replaced by its rebuild \
             in one short transaction that holds it for a moment."
        ),
        Mode::Verify => writeln!(
            text,
            "Nothing is changed: each rebuild is compared with its live tables and then dropped."
        ),
    };
    Ok(text)
}

/// Replays `projections` side by side from one read of the log, each on a thread and a
/// connection of its own, with a progress bar each (drawn only on a terminal).
pub async fn run(
    pool: &PgPool,
    projections: &[Projection],
    mode: Mode,
    progress: bool,
) -> Result<Vec<Report>, ReplayError> {
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await?;
    let bars = MultiProgress::with_draw_target(if progress {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let style = ProgressStyle::with_template(
        "{prefix:>12} [{bar:30}] {pos}/{len} events, {per_sec}, {eta} left",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    // One thread reads and decodes the log once for all the projections; each projection
    // has a thread of its own too, with a runtime and a connection, so that their work
    // spreads over the cores.
    let selections = projections
        .iter()
        .map(|projection| with_subscriber!(projection.name, |s| Ok(s.selection())))
        .collect::<Result<Vec<_>, ReplayError>>()?;
    let selection = Selection::union(&selections);
    let options = pool.connect_options();
    let mut feeds = Vec::with_capacity(projections.len());
    let runs: Vec<_> = projections
        .iter()
        .map(|projection| {
            let bar = bars.add(ProgressBar::new(total.max(0) as u64));
            bar.set_style(style.clone());
            bar.set_prefix(projection.name);
            let (sender, feed) = mpsc::channel(FEED_DEPTH);
            feeds.push(sender);
            let (options, projection) = (options.clone(), *projection);
            on_a_thread_of_its_own(options, move |pool| async move {
                let result = replay(&pool, projection, mode, feed, &bar).await;
                bar.finish_and_clear();
                result
            })
        })
        .collect();
    let reader = on_a_thread_of_its_own(options, move |pool| async move {
        feed_log(&pool, &selection, feeds).await;
        Ok(())
    });
    // Every thread is waited for, so that none is left rebuilding (or swapping) unseen
    // when one fails; then the first failure is the answer, the reader's first, since the
    // projections only see that it stopped.
    let mut results = Vec::with_capacity(runs.len());
    for run in runs {
        results.push(joined(run).await);
    }
    joined(reader).await?;
    results.into_iter().collect()
}

/// Batches queued for each projection: enough to keep it busy while the next is read.
const FEED_DEPTH: usize = 2;

/// What the log reader sends each projection.
enum Fed {
    Batch(Arc<Vec<StoredEvent>>),
    /// The log is read to its end.
    End,
    Failed(String),
}

/// Reads the log after its start, once, for every projection whose feed is still open,
/// until the log ends or no projection wants more.
async fn feed_log(pool: &PgPool, selection: &Selection, mut feeds: Vec<mpsc::Sender<Fed>>) {
    let mut at = LogPosition::START;
    let mut conn = match pool.acquire().await {
        Ok(conn) => conn,
        Err(e) => return fail(&feeds, e).await,
    };
    loop {
        let batch = match selection.read_after(&mut *conn, at, BATCH).await {
            Ok(batch) => batch,
            Err(e) => return fail(&feeds, e).await,
        };
        let full = batch.len() as i64 == BATCH;
        let Some(last) = batch.last().map(|e| e.log) else {
            break;
        };
        at = last;
        let batch = Arc::new(batch);
        let mut open = Vec::with_capacity(feeds.len());
        for feed in feeds {
            if feed.send(Fed::Batch(batch.clone())).await.is_ok() {
                open.push(feed);
            }
        }
        feeds = open;
        if !full || feeds.is_empty() {
            break;
        }
    }
    for feed in &feeds {
        let _ = feed.send(Fed::End).await;
    }
}

async fn fail(feeds: &[mpsc::Sender<Fed>], error: sqlx::Error) {
    for feed in feeds {
        let _ = feed.send(Fed::Failed(error.to_string())).await;
    }
}

/// Runs `work` on a new thread with a runtime and a pool of two connections of its own.
fn on_a_thread_of_its_own<T, F, Fut>(
    options: Arc<sqlx::postgres::PgConnectOptions>,
    work: F,
) -> std::thread::JoinHandle<Result<T, ReplayError>>
where
    T: Send + 'static,
    F: FnOnce(PgPool) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, ReplayError>>,
{
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ReplayError::Task(e.to_string()))?;
        runtime.block_on(async {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(2)
                .connect_with((*options).clone())
                .await?;
            let result = work(pool.clone()).await;
            pool.close().await;
            result
        })
    })
}

async fn joined<T: Send + 'static>(
    thread: std::thread::JoinHandle<Result<T, ReplayError>>,
) -> Result<T, ReplayError> {
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .map_err(|e| ReplayError::Task(e.to_string()))?
        .map_err(|_| ReplayError::Task("a replay thread panicked".into()))?
}

/// One projection's replay, from the batches of the log in `feed`.
async fn replay(
    pool: &PgPool,
    projection: Projection,
    mode: Mode,
    feed: mpsc::Receiver<Fed>,
    bar: &ProgressBar,
) -> Result<Report, ReplayError> {
    with_subscriber!(projection.name, |s| {
        Replay::new(pool, projection, s, mode, bar).run(feed).await
    })
}

fn shadow_schema(projection: &Projection) -> String {
    format!("execops_replay_{}", projection.name)
}

fn retired_schema(projection: &Projection) -> String {
    format!("execops_retired_{}", projection.name)
}

/// `"name"`, for identifiers that come from our own constants and the catalog.
fn quoted(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

struct Replay<'a, S: Subscriber> {
    pool: &'a PgPool,
    projection: Projection,
    subscriber: S,
    /// What the subscriber reads of the log.
    selection: Selection,
    mode: Mode,
    bar: &'a ProgressBar,
    events: u64,
    /// Batches written so far.
    batches: u64,
}

impl<'a, S: Subscriber> Replay<'a, S> {
    fn new(
        pool: &'a PgPool,
        projection: Projection,
        subscriber: S,
        mode: Mode,
        bar: &'a ProgressBar,
    ) -> Self {
        Self {
            pool,
            projection,
            selection: subscriber.selection(),
            subscriber,
            mode,
            bar,
            events: 0,
            batches: 0,
        }
    }

    async fn run(mut self, feed: mpsc::Receiver<Fed>) -> Result<Report, ReplayError> {
        let started = Instant::now();
        // A connection of its own: its search_path and its session lock stay with it.
        let mut conn = self.pool.acquire().await?.detach();
        let lock = format!("execops.replay.{}", self.projection.name);
        let locked: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                .bind(&lock)
                .fetch_one(&mut conn)
                .await?;
        if !locked {
            return Err(ReplayError::Busy(self.projection.name));
        }
        let result = self.rebuild(&mut conn, feed, started).await;
        // Whatever happened, leave no rebuild behind.
        let schema = quoted(&shadow_schema(&self.projection));
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
        result
    }

    async fn rebuild(
        &mut self,
        conn: &mut PgConnection,
        feed: mpsc::Receiver<Fed>,
        started: Instant,
    ) -> Result<Report, ReplayError> {
        let schema = quoted(&shadow_schema(&self.projection));
        let mut ddl = format!(
            "SET search_path = public; DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};"
        );
        for table in self.projection.tables {
            let table = quoted(table);
            let _ = write!(
                ddl,
                " CREATE TABLE {schema}.{table} (LIKE public.{table} INCLUDING ALL);"
            );
        }
        let _ = write!(ddl, " SET search_path = {schema}, public;");
        sqlx::raw_sql(&ddl).execute(&mut *conn).await?;

        // Verify compares with the live tables as they stand, so it stops at their
        // checkpoint; a swap reads to the end of the log.
        let live = checkpoint(&mut *conn, self.projection.name).await?;
        let limit = match self.mode {
            Mode::Verify => Some(live.unwrap_or(LogPosition::START)),
            Mode::Swap => None,
        };
        let at = self.apply_fed(conn, feed, limit).await?;
        // The lock is taken table by table, so a statement that reads two of them at once
        // can hold one while waiting for the other: Postgres breaks the deadlock by failing
        // one side. The transaction then rolled back whole, so it is tried again.
        let mut attempt = 0;
        let mut report = loop {
            let events = self.events;
            match self.finish(conn, at).await {
                Err(ReplayError::Database(error))
                    if crate::store::is_deadlock(&error) && attempt < 5 =>
                {
                    // What the rolled-back attempt applied is not in the rebuild.
                    self.events = events;
                    attempt += 1;
                    tracing::warn!(
                        projection = self.projection.name,
                        attempt,
                        "the swap met a deadlock; trying again"
                    );
                    tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                }
                other => break other?,
            }
        };
        sqlx::query("SET search_path = public")
            .execute(&mut *conn)
            .await?;
        report.events = self.events;
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// Locks the live tables, brings the rebuild up to their checkpoint, and compares or
    /// swaps, all in one transaction.
    async fn finish(
        &mut self,
        conn: &mut PgConnection,
        at: LogPosition,
    ) -> Result<Report, ReplayError> {
        let mut tx = conn.begin().await?;
        let names: Vec<String> = self
            .projection
            .tables
            .iter()
            .map(|t| format!("public.{}", quoted(t)))
            .collect();
        let lock_mode = match self.mode {
            Mode::Swap => "ACCESS EXCLUSIVE",
            Mode::Verify => "SHARE",
        };
        sqlx::query(&format!(
            "LOCK TABLE {} IN {lock_mode} MODE",
            names.join(", ")
        ))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO subscription_checkpoints (name) VALUES ($1) ON CONFLICT DO NOTHING",
        )
        .bind(self.projection.name)
        .execute(&mut *tx)
        .await?;
        // Holding the row stops the live subscriber committing a batch meanwhile.
        let row = sqlx::query(
            "SELECT transaction_id::text::bigint AS transaction_id, position \
             FROM subscription_checkpoints WHERE name = $1 FOR UPDATE",
        )
        .bind(self.projection.name)
        .fetch_one(&mut *tx)
        .await?;
        let live = LogPosition {
            transaction_id: row.try_get("transaction_id")?,
            position: row.try_get("position")?,
        };
        // Everything up to the live checkpoint is now in the rebuild too (a reader of some
        // aggregate types only may stop short of it, at its last event of theirs).
        let through = if live > at {
            self.apply_until(&mut tx, at, live).await?.max(live)
        } else {
            at
        };
        let mut report = Report {
            projection: self.projection.name,
            mode: self.mode,
            events: self.events,
            elapsed: Duration::ZERO,
            through,
            differing_rows: 0,
            differences: Vec::new(),
        };
        match self.mode {
            Mode::Verify => {
                for table in self.projection.tables {
                    let (count, shown) = compare(&mut tx, &self.projection, table).await?;
                    report.differing_rows += count;
                    report.differences.extend(shown);
                }
                tx.rollback().await?;
            }
            Mode::Swap => {
                swap(&mut tx, &self.projection).await?;
                sqlx::query(
                    "UPDATE subscription_checkpoints \
                     SET transaction_id = $2::bigint::text::xid8, position = $3, updated_at = now() \
                     WHERE name = $1",
                )
                .bind(self.projection.name)
                .bind(through.transaction_id)
                .bind(through.position)
                .execute(&mut *tx)
                .await?;
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(crate::store::subscription::CHECKPOINTS_CHANNEL)
                    .bind(self.projection.name)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
        }
        Ok(report)
    }

    /// Gathers statistics on the rebuild's tables. They start empty and grow by the batch,
    /// faster than autovacuum samples them: without statistics the planner scans a whole
    /// table to look up a few keys, and keeps that plan as the table grows. Taken as the
    /// rebuild doubles while it is small, it costs a few samples in all.
    async fn analyze(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        let tables: Vec<String> = self.projection.tables.iter().map(|t| quoted(t)).collect();
        sqlx::query(&format!("ANALYZE {}", tables.join(", ")))
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Applies `batch` to the rebuild in one transaction.
    async fn write(
        &self,
        conn: &mut PgConnection,
        batch: &[StoredEvent],
    ) -> Result<(), ReplayError> {
        let mut tx = conn.begin().await?;
        self.subscriber
            .handle_batch(&mut tx, batch)
            .await
            .map_err(|(position, source)| ReplayError::Handler {
                projection: self.projection.name,
                position,
                source,
            })?;
        tx.commit().await?;
        Ok(())
    }

    /// Applies the batches of the log in `feed` to the rebuild, a transaction per batch, up
    /// to `limit` or to the log's end; returns where it stopped.
    async fn apply_fed(
        &mut self,
        conn: &mut PgConnection,
        mut feed: mpsc::Receiver<Fed>,
        limit: Option<LogPosition>,
    ) -> Result<LogPosition, ReplayError> {
        let mut at = LogPosition::START;
        loop {
            let batch = match feed.recv().await {
                Some(Fed::Batch(batch)) => batch,
                Some(Fed::End) => return Ok(at),
                Some(Fed::Failed(error)) => {
                    return Err(ReplayError::Task(format!("reading the log: {error}")))
                }
                None => return Err(ReplayError::Task("the log reader stopped".into())),
            };
            let upto = limit.map_or(batch.len(), |l| batch.partition_point(|e| e.log <= l));
            if let Some(last) = batch[..upto].last().map(|e| e.log) {
                self.apply(conn, &batch[..upto]).await?;
                at = last;
                self.batches += 1;
                // The plans that matter are chosen while the tables are small.
                if self.batches.is_power_of_two() && self.batches <= ANALYZED_BATCHES {
                    self.analyze(conn).await?;
                }
            }
            if upto < batch.len() {
                return Ok(at);
            }
        }
    }

    /// Applies the log after `from` up to `limit` to the rebuild, in the caller's
    /// transaction; returns where it stopped.
    async fn apply_until(
        &mut self,
        conn: &mut PgConnection,
        from: LogPosition,
        limit: LogPosition,
    ) -> Result<LogPosition, ReplayError> {
        let mut at = from;
        loop {
            let mut batch = self.selection.read_after(&mut *conn, at, BATCH).await?;
            let full = batch.len() as i64 == BATCH;
            batch.retain(|e| e.log <= limit);
            let Some(last) = batch.last().map(|e| e.log) else {
                return Ok(at);
            };
            self.apply(conn, &batch).await?;
            at = last;
            if !full || last >= limit {
                return Ok(at);
            }
        }
    }

    /// Applies `batch` to the rebuild in one transaction, and counts what it read.
    async fn apply(
        &mut self,
        conn: &mut PgConnection,
        batch: &[StoredEvent],
    ) -> Result<(), ReplayError> {
        self.write(conn, batch).await?;
        self.events += batch.iter().filter(|e| self.selection.reads(e)).count() as u64;
        self.bar.inc(batch.len() as u64);
        Ok(())
    }
}

/// Rows of `public.table` and its rebuild that differ, compared by primary key as JSON:
/// how many, and the first [`SHOWN_DIFFERENCES`] of them.
async fn compare(
    conn: &mut PgConnection,
    projection: &Projection,
    table: &'static str,
) -> Result<(i64, Vec<Difference>), sqlx::Error> {
    let keys: Vec<String> = sqlx::query_scalar(
        "SELECT a.attname::text FROM pg_index i \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
         WHERE i.indrelid = ('public.' || quote_ident($1))::regclass AND i.indisprimary \
         ORDER BY array_position(i.indkey, a.attnum)",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await?;
    let key = if keys.is_empty() {
        "to_jsonb(t)".to_string()
    } else {
        let pairs: Vec<String> = keys
            .iter()
            .map(|k| format!("'{}', t.{}", k.replace('\'', "''"), quoted(k)))
            .collect();
        format!("jsonb_build_object({})", pairs.join(", "))
    };
    let shadow = quoted(&shadow_schema(projection));
    let name = quoted(table);
    let joined = format!(
        "FROM (SELECT {key} AS k, to_jsonb(t) AS r FROM public.{name} t) l \
         FULL JOIN (SELECT {key} AS k, to_jsonb(t) AS r FROM {shadow}.{name} t) s ON l.k = s.k \
         WHERE l.r IS DISTINCT FROM s.r"
    );
    let count: i64 = sqlx::query_scalar(&format!("SELECT count(*) {joined}"))
        .fetch_one(&mut *conn)
        .await?;
    let rows = sqlx::query(&format!(
        "SELECT coalesce(l.k, s.k) AS key, l.r AS live, s.r AS replayed {joined} \
         ORDER BY coalesce(l.k, s.k) LIMIT {SHOWN_DIFFERENCES}"
    ))
    .fetch_all(&mut *conn)
    .await?;
    let differences = rows
        .iter()
        .map(|row| {
            Ok(Difference {
                table,
                key: row.try_get("key")?,
                live: row.try_get("live")?,
                replayed: row.try_get("replayed")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok((count, differences))
}

/// Replaces the live tables with their rebuilds, in the caller's transaction: the old
/// tables move aside, the new ones take their place and their index names, the views and
/// foreign keys that named the old tables name the new ones, and the old ones are dropped.
async fn swap(conn: &mut PgConnection, projection: &Projection) -> Result<(), sqlx::Error> {
    sqlx::query("SET LOCAL search_path = public")
        .execute(&mut *conn)
        .await?;
    let tables: Vec<String> = projection.tables.iter().map(|t| t.to_string()).collect();
    let shadow = shadow_schema(projection);
    let retired = retired_schema(projection);
    // What names the old tables, read while they are still the live ones.
    let views: Vec<(String, String)> = sqlx::query_as(
        "SELECT DISTINCT v.oid::regclass::text, pg_get_viewdef(v.oid) \
         FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid \
         JOIN pg_class v ON v.oid = r.ev_class \
         WHERE d.refobjid = ANY(SELECT ('public.' || quote_ident(t))::regclass FROM unnest($1::text[]) t) \
           AND v.relkind = 'v' AND v.oid <> d.refobjid",
    )
    .bind(&tables)
    .fetch_all(&mut *conn)
    .await?;
    let foreign_keys: Vec<(String, String, String, bool)> = sqlx::query_as(
        "SELECT c.conrelid::regclass::text, c.conname::text, pg_get_constraintdef(c.oid), \
                c.conrelid = ANY(SELECT ('public.' || quote_ident(t))::regclass FROM unnest($1::text[]) t) \
         FROM pg_constraint c \
         WHERE c.contype = 'f' AND (c.conrelid = ANY(SELECT ('public.' || quote_ident(t))::regclass FROM unnest($1::text[]) t) \
            OR c.confrelid = ANY(SELECT ('public.' || quote_ident(t))::regclass FROM unnest($1::text[]) t))",
    )
    .bind(&tables)
    .fetch_all(&mut *conn)
    .await?;
    // (unique?, definition after USING) → the old index's name.
    let old_indexes: Vec<(String, String)> =
        index_definitions(&mut *conn, "public", &tables).await?;

    let mut ddl = format!(
        "DROP SCHEMA IF EXISTS {r} CASCADE; CREATE SCHEMA {r};",
        r = quoted(&retired)
    );
    for table in &tables {
        let t = quoted(table);
        let _ = write!(
            ddl,
            " ALTER TABLE public.{t} SET SCHEMA {}; ALTER TABLE {}.{t} SET SCHEMA public;",
            quoted(&retired),
            quoted(&shadow)
        );
    }
    sqlx::raw_sql(&ddl).execute(&mut *conn).await?;

    let new_indexes = index_definitions(&mut *conn, "public", &tables).await?;
    let mut ddl = String::new();
    let mut taken = vec![false; new_indexes.len()];
    for (old_name, old_shape) in &old_indexes {
        let found = new_indexes
            .iter()
            .enumerate()
            .find(|(i, (_, shape))| !taken[*i] && shape == old_shape);
        if let Some((i, (new_name, _))) = found {
            taken[i] = true;
            if new_name != old_name {
                let _ = write!(
                    ddl,
                    " ALTER INDEX public.{} RENAME TO {};",
                    quoted(new_name),
                    quoted(old_name)
                );
            }
        }
    }
    for (name, definition) in &views {
        let _ = write!(ddl, " CREATE OR REPLACE VIEW {name} AS {definition}");
        if !definition.trim_end().ends_with(';') {
            ddl.push(';');
        }
    }
    for (table, constraint, definition, on_swapped_table) in &foreign_keys {
        if !on_swapped_table {
            let _ = write!(
                ddl,
                " ALTER TABLE {table} DROP CONSTRAINT {};",
                quoted(constraint)
            );
        }
        let _ = write!(
            ddl,
            " ALTER TABLE {table} ADD CONSTRAINT {} {definition};",
            quoted(constraint)
        );
    }
    let _ = write!(
        ddl,
        " DROP SCHEMA {} CASCADE; DROP SCHEMA {} CASCADE;",
        quoted(&retired),
        quoted(&shadow)
    );
    sqlx::raw_sql(&ddl).execute(&mut *conn).await?;
    Ok(())
}

/// Each index of `tables` in `schema`: its name and its shape (unique or not, and what
/// follows `USING`), which is what two copies of the same index share.
async fn index_definitions(
    conn: &mut PgConnection,
    schema: &str,
    tables: &[String],
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT t.relname::text, i.relname::text, pg_get_indexdef(i.oid) \
         FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
         JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE n.nspname = $1 AND t.relname = ANY($2) ORDER BY i.relname",
    )
    .bind(schema)
    .bind(tables)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(table, name, definition)| {
            let unique = definition.starts_with("CREATE UNIQUE");
            let shape = definition
                .split_once(" USING ")
                .map(|(_, rest)| rest.to_string())
                .unwrap_or_default();
            (name, format!("{table} {unique} {shape}"))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_projection_is_found_by_name_and_others_are_named_in_the_error() {
        for projection in PROJECTIONS {
            assert_eq!(find(projection.name).ok(), Some(*projection));
        }
        let error = find("router")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(
            error,
            "no projection \"router\"; the projections are event_counts, proposals, users, audit_log, canvas"
        );
    }
}
