//! The event store, generic over what the events are: the commit-safe log reader,
//! checkpointed subscribers, the notifications that wake them, events' metadata, the
//! Postgres itself (an external one from `DATABASE_URL`, or an embedded cluster ExecOps
//! starts on its own) and the test helpers. What knows ExecOps's aggregates and their
//! commands is in `commands`.

pub mod embedded;
pub mod log;
pub mod metadata;
pub mod notifications;
pub mod subscription;
pub mod testing;

use std::time::Duration;

use cqrs_es::AggregateError;
use secrecy::{ExposeSecret, SecretString};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

use crate::config::DatabaseSettings;
use embedded::{EmbeddedOptions, EmbeddedPostgres};
pub use metadata::Metadata;

/// The schema, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// The database ExecOps runs on, and the embedded server behind it when there is one.
pub struct Database {
    pub pool: PgPool,
    embedded: Option<EmbeddedPostgres>,
}

impl Database {
    /// Connects to `DATABASE_URL`, or starts the embedded cluster when it is unset, and
    /// brings the schema up to date.
    pub async fn open(settings: &DatabaseSettings) -> anyhow::Result<Self> {
        let (url, embedded) = match &settings.url {
            Some(url) => (url.clone(), None),
            None => {
                let options = EmbeddedOptions::new(settings.data_dir.clone());
                let cluster =
                    tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&options))
                        .await??;
                create_database_if_missing(&cluster.url("postgres"), "execops").await?;
                (SecretString::from(cluster.url("execops")), Some(cluster))
            }
        };
        let pool = connect(url.expose_secret(), settings.max_connections).await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool, embedded })
    }

    /// Closes the pool, then stops the embedded server if ExecOps started one.
    pub async fn close(self) -> anyhow::Result<()> {
        self.pool.close().await;
        if let Some(cluster) = self.embedded {
            tokio::task::spawn_blocking(move || cluster.stop()).await??;
        }
        Ok(())
    }
}

/// How long a pooled connection may sit idle before it is pinged on its next use.
pub const PING_AFTER_IDLE: Duration = Duration::from_millis(100);

/// A pool with short acquire timeouts, so an unreachable database is reported quickly
/// (and webhooks answered 503) rather than hanging the request.
///
/// A connection taken out of the pool is pinged first only when it sat idle for
/// [`PING_AFTER_IDLE`]: under load connections are never idle that long, and a ping per query
/// cost about a tenth of the server's CPU; after Postgres restarted (which takes far longer),
/// every stale connection is found dead by its ping and replaced, so no request fails on one.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse::<PgConnectOptions>()?.disable_statement_logging();
    PgPoolOptions::new()
        .max_connections(max_connections)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_AFTER_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .acquire_timeout(Duration::from_secs(3))
        .connect_with(options)
        .await
}

pub async fn create_database_if_missing(server_url: &str, name: &str) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(server_url).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        sqlx::query(&format!("CREATE DATABASE {}", quote_ident(name)))
            .execute(&mut conn)
            .await?;
    }
    conn.close().await
}

/// Postgres chose this transaction to break a deadlock (SQLSTATE 40P01): it rolled back
/// whole, and may be tried again.
pub fn is_deadlock(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "40P01")
}

pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Why a command did not record its events.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    /// The aggregate refused it: a user error with a reason.
    #[error(transparent)]
    Refused(E),
    /// Another command on the same aggregate committed first.
    #[error("another change to the same record was committed first")]
    Conflict,
    /// Postgres could not be reached; nothing was recorded and the caller may retry.
    #[error("the event store is unreachable: {0}")]
    Unavailable(String),
    #[error("the event store failed: {0}")]
    Internal(String),
}

impl<E: std::error::Error> From<AggregateError<E>> for CommandError<E> {
    fn from(error: AggregateError<E>) -> Self {
        match error {
            AggregateError::UserError(e) => CommandError::Refused(e),
            AggregateError::AggregateConflict => CommandError::Conflict,
            AggregateError::DatabaseConnectionError(e) => CommandError::Unavailable(e.to_string()),
            AggregateError::DeserializationError(e) => CommandError::Internal(e.to_string()),
            AggregateError::UnexpectedError(e) => match e.downcast_ref::<sqlx::Error>() {
                Some(sql) if is_unavailable(sql) => CommandError::Unavailable(e.to_string()),
                _ => CommandError::Internal(e.to_string()),
            },
        }
    }
}

/// One round trip to Postgres: whether it answers at all.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(pool)
        .await
        .map(|_| ())
}

/// True for errors that mean "Postgres is not there right now" rather than a bug.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 57P: the server is shutting down or starting.
            code.starts_with("08") || code.starts_with("57P") || code == "53300"
        }),
        _ => false,
    }
}
