//! The `execops` command line, one module per noun: [`serve`] (serve, demo, send),
//! [`people`] (users and tokens), [`guardrails`], [`events`] (tail, export), [`ops`] (audit,
//! replay), [`canvas`], and [`demo`], the demo's data. A one-off command opens the database
//! and the store with [`Opened`] and closes them again.

mod canvas;
pub mod demo;
mod events;
mod guardrails;
mod ops;
mod people;
mod serve;

use clap::{Parser, Subcommand};
use sqlx::PgPool;

use crate::commands::Store;
use crate::config::Config;
use crate::store::Database;
use crate::telemetry::Metrics;

#[derive(Debug, Parser)]
#[command(
    name = "execops",
    version,
    about = "An approval engine for founders: signals in, proposals out, nothing runs without a person's approval."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve HTTP and run the subscriptions, on DATABASE_URL or the embedded Postgres.
    Serve,
    /// Serve with a demo admin and every fixture sent through the webhooks: a populated inbox.
    Demo {
        /// Where the fixtures are.
        #[arg(long, default_value = "fixtures")]
        fixtures: std::path::PathBuf,
    },
    /// Bring the database schema up to date, then exit.
    Migrate,
    /// Sign a fixture as its sender would and post it to a running ExecOps.
    Send {
        /// A file under fixtures/<sender>/ (see fixtures/README.md).
        fixture: std::path::PathBuf,
        /// The server's base URL; default http://EXECOPS_ADDR.
        #[arg(long)]
        to: Option<String>,
    },
    /// Manage the people who may sign in.
    User {
        #[command(subcommand)]
        command: people::UserCli,
    },
    /// API tokens.
    Token {
        #[command(subcommand)]
        command: people::TokenCli,
    },
    /// Switch action types off and on again.
    Guardrails {
        #[command(subcommand)]
        command: guardrails::GuardrailsCli,
    },
    /// Read the event log.
    Events {
        #[command(subcommand)]
        command: events::EventsCommand,
    },
    /// What happened, who decided, what ran; and whether the audit log is intact.
    Audit {
        #[command(subcommand)]
        command: ops::AuditCommand,
    },
    /// A data subject's requests: what is held about them.
    Privacy {
        #[command(subcommand)]
        command: ops::PrivacyCommand,
    },
    /// Rebuild the projections from the event log beside the live ones, then swap them in
    /// (`--yes`) or compare them with the live ones (`--verify`). Safe while serving.
    Replay {
        /// One projection (event_counts, proposals, users, audit_log); default all.
        #[arg(long)]
        projection: Option<String>,
        /// Compare the rebuild with the live tables and print every difference; change
        /// nothing. Exits non-zero when anything differs.
        #[arg(long, conflicts_with = "yes")]
        verify: bool,
        /// Replace the live tables with the rebuild. Without it (or --verify) the command
        /// only says what it would do.
        #[arg(long)]
        yes: bool,
    },
    /// Replay past signals through the policies with a configuration to try, and print what
    /// would have been proposed against what was, for tuning thresholds. Writes nothing.
    ///
    /// Signals recorded before --since only rebuild the facts the policies read (spend,
    /// revenue, cash, deals); those since are run through the policies as the router would,
    /// without its language model. Nothing persists: the facts are rebuilt in temporary
    /// tables of a session of its own whose transactions are all read only, so Postgres
    /// refuses any other write, and the tables go when the session ends. It works in short
    /// transactions, so the running subscribers are not held back; it still reads the whole
    /// log once. Scores use each action type's track record as it is today.
    Backtest {
        /// Replay the signals recorded at or after this day (YYYY-MM-DD, UTC) or RFC 3339 time.
        #[arg(long)]
        since: String,
        /// A file of KEY=VALUE settings as in .env.example; its keys win over the
        /// environment. Without it, the current configuration is replayed.
        #[arg(long)]
        config: Option<std::path::PathBuf>,
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Answer one of the canvas's questions: runway, burn, mrr, failed_payments,
    /// spend_by_vendor, approval_latency, precision, outcomes, execution_success. Read only.
    Canvas(canvas::CanvasArgs),
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    match cli.command {
        Command::Serve => serve::serve(config, None).await,
        Command::Demo { fixtures } => {
            serve::serve(demo::with_demo_secrets(config), Some(fixtures)).await
        }
        Command::Migrate => {
            // Opening the database applies the migrations.
            let db = Database::open(&config.database()).await?;
            let applied = crate::store::MIGRATOR.iter().count();
            println!("schema up to date ({applied} migrations)");
            db.close().await
        }
        Command::Send { fixture, to } => serve::send(&config, &fixture, to).await,
        Command::Guardrails { command } => guardrails::guardrails(config, command).await,
        Command::User { command } => people::user(config, command).await,
        Command::Token { command } => people::token(config, command).await,
        Command::Events { command } => events::run(config, command).await,
        Command::Audit { command } => {
            let opened = Opened::open(&config).await?;
            let result = ops::audit(opened.pool(), command).await;
            opened.close(result).await
        }
        Command::Privacy { command } => {
            let opened = Opened::open(&config).await?;
            let result = ops::privacy(opened.pool(), command).await;
            opened.close(result).await
        }
        Command::Replay {
            projection,
            verify,
            yes,
        } => {
            let opened = Opened::open(&config).await?;
            let result = ops::replay(opened.pool(), projection.as_deref(), verify, yes).await;
            opened.close(result).await
        }
        Command::Canvas(args) => canvas::run(config, args).await,
        Command::Backtest {
            since,
            config: file,
            json,
        } => {
            let since = events::parse_since(&since)?;
            crate::ops::backtest::run(config, since, file.as_deref(), json).await
        }
    }
}

/// The database and the store a one-off command works on.
pub(crate) struct Opened {
    db: Database,
    pub store: Store,
}

impl Opened {
    /// Opens the database (bringing its schema up to date) and a store on it.
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        let db = Database::open(&config.database()).await?;
        let store = Store::new(db.pool.clone(), Metrics::new());
        Ok(Self { db, store })
    }

    pub fn pool(&self) -> &PgPool {
        &self.db.pool
    }

    /// Closes the database, then gives back what the command came to.
    pub async fn close<T>(self, result: anyhow::Result<T>) -> anyhow::Result<T> {
        self.db.close().await?;
        result
    }
}

/// Writes one line to standard output; false once nobody reads it any more (`| head`).
fn print_line(line: &str) -> bool {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
}
