//! The `execops` command line.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sqlx::postgres::PgListener;

use crate::app::App;
use crate::config::Config;
use crate::store::log::{
    read_after, read_in_snapshot_after, read_last, read_last_in_snapshot, StoredEvent,
};
use crate::store::subscription::EVENTS_CHANNEL;
use crate::store::Database;

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
        command: UserCli,
    },
    /// API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCli,
    },
    /// Switch action types off and on again.
    Guardrails {
        #[command(subcommand)]
        command: GuardrailsCli,
    },
    /// Read the event log.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// What happened, who decided, what ran; and whether the audit log is intact.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
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
    Canvas {
        query: String,
        /// First day, YYYY-MM-DD (default: the first of the month three months ago).
        #[arg(long)]
        from: Option<String>,
        /// Last day, YYYY-MM-DD (default: today).
        #[arg(long)]
        to: Option<String>,
        /// day, week or month (default).
        #[arg(long)]
        granularity: Option<String>,
        /// One vendor (spend_by_vendor).
        #[arg(long)]
        vendor: Option<String>,
        /// One currency (three letters); default every currency, each apart.
        #[arg(long)]
        currency: Option<String>,
        /// Rows a ranking keeps, 1–50 (default 10).
        #[arg(long)]
        top: Option<String>,
        /// The answer as one JSON document (the API's shape).
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        /// The table as CSV.
        #[arg(long)]
        csv: bool,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// A proposal's story in order: signals, draft, dry runs, decisions, attempts, outcomes.
    Show {
        proposal_id: String,
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Recompute the audit chain from the events; name the first row altered, removed or
    /// moved. Read only; exits non-zero on a break.
    Verify,
}

#[derive(Debug, Subcommand)]
enum UserCli {
    /// Add a person. Without --password-stdin a password is generated and printed once.
    Add {
        email: String,
        #[arg(long, value_parser = ["admin", "approver", "viewer"])]
        role: String,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Say which Slack member a person is (their member id, `U…`, from "Copy member ID" in
    /// their Slack profile), so their Approve and Reject clicks in Slack count as theirs.
    LinkSlack {
        email: String,
        slack_user_id: String,
    },
    /// Forget a person's Slack member: their clicks in Slack are refused again.
    UnlinkSlack { email: String },
}

#[derive(Debug, Subcommand)]
enum TokenCli {
    /// Issue an API token for a person; it is printed once and stored only as a hash.
    Create { email: String },
    /// Revoke a token by its id (the part between `eo_` and the next `_`).
    Revoke { email: String, token_id: String },
}

#[derive(Debug, Subcommand)]
enum GuardrailsCli {
    /// Stop drafting proposals of an action type; new drafts of it are recorded as suppressed.
    Disable {
        action_type: String,
        /// Who is doing it (recorded in the audit trail).
        #[arg(long)]
        by: String,
        #[arg(long)]
        reason: String,
    },
    /// Draft proposals of an action type again.
    Enable {
        action_type: String,
        #[arg(long)]
        by: String,
    },
    /// Engage a kill switch: approved proposals it covers wait until it is released.
    Engage {
        /// `global`, `action_type:NAME` (e.g. action_type:email.send) or `adapter:NAME`
        /// (slack, email, stripe, github, webhook).
        scope: String,
        #[arg(long)]
        by: String,
        #[arg(long)]
        reason: String,
    },
    /// Release a kill switch: what waited runs.
    Release {
        scope: String,
        #[arg(long)]
        by: String,
    },
    /// Set the executions an hour allowed for an action type (`default` to go back).
    RateLimit {
        action_type: String,
        per_hour: String,
        #[arg(long)]
        by: String,
    },
    /// Print the guardrails as their stream tells them.
    Show,
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// Print the last events in log order, then follow new ones as they commit.
    Tail {
        /// How many past events to print first.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: i64,
        /// Exit after printing instead of following.
        #[arg(long)]
        no_follow: bool,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the whole log in commit order as NDJSON (one event a line), for archives and
    /// other tools. Read only.
    Export {
        /// Only events recorded at or after this day (YYYY-MM-DD, UTC) or RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only one aggregate type (`Proposal`) or one stream (`Proposal/ID`).
        #[arg(long)]
        aggregate: Option<String>,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    match cli.command {
        Command::Serve => serve(config, None).await,
        Command::Demo { fixtures } => {
            serve(crate::demo::with_demo_secrets(config), Some(fixtures)).await
        }
        Command::Migrate => {
            // Opening the database applies the migrations.
            let db = Database::open(&config.database()).await?;
            let applied = crate::store::MIGRATOR.iter().count();
            println!("schema up to date ({applied} migrations)");
            db.close().await
        }
        Command::Send { fixture, to } => send(&config, &fixture, to).await,
        Command::Guardrails { command } => guardrails(config, command).await,
        Command::User {
            command:
                UserCli::Add {
                    email,
                    role,
                    password_stdin,
                },
        } => add_user(config, &email, &role, password_stdin).await,
        Command::User {
            command:
                UserCli::LinkSlack {
                    email,
                    slack_user_id,
                },
        } => link_slack(config, &email, Some(&slack_user_id)).await,
        Command::User {
            command: UserCli::UnlinkSlack { email },
        } => link_slack(config, &email, None).await,
        Command::Token {
            command: TokenCli::Create { email },
        } => create_token(config, &email).await,
        Command::Token {
            command: TokenCli::Revoke { email, token_id },
        } => revoke_token(config, &email, &token_id).await,
        Command::Events {
            command:
                EventsCommand::Tail {
                    lines,
                    no_follow,
                    json,
                },
        } => tail(config, lines, !no_follow, json).await,
        Command::Events {
            command: EventsCommand::Export { since, aggregate },
        } => {
            let since = since.as_deref().map(parse_since).transpose()?;
            let db = Database::open(&config.database()).await?;
            let result = export(&db.pool, since, aggregate.as_deref()).await;
            db.close().await?;
            result
        }
        Command::Audit { command } => {
            let db = Database::open(&config.database()).await?;
            let result = audit(&db.pool, command).await;
            db.close().await?;
            result
        }
        Command::Replay {
            projection,
            verify,
            yes,
        } => {
            let db = Database::open(&config.database()).await?;
            let result = replay(&db.pool, projection.as_deref(), verify, yes).await;
            db.close().await?;
            result
        }
        Command::Canvas {
            query,
            from,
            to,
            granularity,
            vendor,
            currency,
            top,
            json,
            csv,
        } => {
            let raw = crate::canvas::RawParams {
                from,
                to,
                granularity,
                vendor,
                currency,
                top,
            };
            let names: Vec<&str> = crate::canvas::QueryName::ALL
                .iter()
                .map(|q| q.as_str())
                .collect();
            let name = crate::canvas::QueryName::parse(&query).ok_or_else(|| {
                anyhow::anyhow!(
                    "no canvas query {query:?}; the queries are {}",
                    names.join(", ")
                )
            })?;
            let params = crate::canvas::Params::parse(&raw, chrono::Utc::now().date_naive())?;
            let db = Database::open(&config.database()).await?;
            let result = crate::canvas::queries::run(&db.pool, name, &params).await;
            db.close().await?;
            let answer = result?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else if csv {
                print!("{}", answer.to_csv());
            } else {
                print!("{}", canvas_text(&answer));
            }
            Ok(())
        }
        Command::Backtest {
            since,
            config: file,
            json,
        } => crate::ops::backtest::run(config, parse_since(&since)?, file.as_deref(), json).await,
    }
}

async fn serve(config: Config, demo_fixtures: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let db = Database::open(&config.database()).await?;
    let app = App::start(db.pool.clone(), &config);
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("binding {}", config.addr))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    let router = app.router();
    let stopping = app.shutdown_sender();
    if let Some(metrics_addr) = config.metrics_addr {
        let metrics_listener = tokio::net::TcpListener::bind(metrics_addr)
            .await
            .with_context(|| format!("binding EXECOPS_METRICS_ADDR {metrics_addr}"))?;
        tracing::info!(addr = %metrics_listener.local_addr()?, "metrics listening");
        let metrics = crate::web::metrics_router(app.state.clone());
        let limits = config.limits.clone();
        let mut stopped = app.state.shutdown.clone();
        tokio::spawn(async move {
            crate::web::serve::serve(metrics_listener, metrics, &limits, async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            })
            .await
        });
    }
    let limits = config.limits.clone();
    let server = tokio::spawn(async move {
        crate::web::serve::serve(listener, router, &limits, async move {
            shutdown_signal().await;
            // Live streams end now, so that HTTP can drain.
            let _ = stopping.send(true);
        })
        .await;
        Ok::<_, std::io::Error>(())
    });
    if let Some(fixtures) = demo_fixtures {
        let base = format!("http://{addr}");
        let password = crate::demo::demo_admin(&app.state.store).await?;
        crate::demo::enable_writes(&app.state.store).await?;
        let sent = crate::demo::send_fixtures(&config, &fixtures, &base).await?
            + crate::demo::send_recent_history(&config, &fixtures, &base, chrono::Utc::now())
                .await?;
        // One write, and a closed standard output is no reason to stop serving.
        let text = format!(
            "ExecOps demo: {sent} deliveries sent through the signed webhooks.\n\
             Open {base}/inbox and sign in as {} with password {password}\n\
             Ctrl-C stops it; the data stays in {}.\n",
            crate::demo::DEMO_ADMIN,
            config.data_dir.display()
        );
        let mut out = std::io::stdout().lock();
        let _ = std::io::Write::write_all(&mut out, text.as_bytes());
        let _ = std::io::Write::flush(&mut out);
    }
    let served = server.await.context("the server task")?;
    tracing::info!("HTTP drained; stopping subscriptions");
    app.stop().await;
    db.close().await?;
    served.context("serving HTTP")
}

async fn send(
    config: &Config,
    fixture: &std::path::Path,
    to: Option<String>,
) -> anyhow::Result<()> {
    let base = to.unwrap_or_else(|| format!("http://{}", config.addr));
    let base = base.trim_end_matches('/');
    let delivery = crate::send::prepare(fixture, config, base, chrono::Utc::now())?;
    let mut request = reqwest::Client::new().post(format!("{base}{}", delivery.path));
    for (name, value) in &delivery.headers {
        request = request.header(name, value);
    }
    let response = request
        .body(delivery.body)
        .send()
        .await
        .with_context(|| format!("posting to {base}{}", delivery.path))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    println!("{} {text}", status.as_u16());
    anyhow::ensure!(status.is_success(), "the server refused the delivery");
    Ok(())
}

fn parse_scope(raw: &str) -> anyhow::Result<crate::domain::guardrails::Scope> {
    crate::adapters::parse_scope(raw).ok_or_else(|| {
        anyhow::anyhow!(
            "{raw:?} is not a scope: use global, action_type:NAME or adapter:NAME with a known name"
        )
    })
}

async fn show_guardrails(config: Config) -> anyhow::Result<()> {
    let db = Database::open(&config.database()).await?;
    let store = crate::store::Store::new(db.pool.clone(), crate::telemetry::Metrics::new());
    let guardrails = store.load_guardrails().await;
    db.close().await?;
    let guardrails = guardrails?;
    for (scope, engaged) in guardrails.engaged() {
        println!(
            "kill switch for {scope}: engaged by {} ({})",
            engaged.actor, engaged.reason
        );
    }
    let mut disabled = 0;
    for (action_type, _) in crate::adapters::ACTION_TYPES {
        if let Some(reason) = guardrails.disabled_reason(action_type) {
            disabled += 1;
            println!("{action_type}: disabled ({reason})");
        }
    }
    for (action_type, limit) in guardrails.rate_limits() {
        println!("{action_type}: at most {limit} an hour");
    }
    for (adapter, until) in guardrails.circuits() {
        println!("{adapter}: circuit open, probe from {until}");
    }
    if guardrails.engaged().is_empty() && disabled == 0 {
        println!("no kill switch engaged, every action type enabled");
    }
    Ok(())
}

async fn guardrails(config: Config, command: GuardrailsCli) -> anyhow::Result<()> {
    use crate::domain::guardrails::GuardrailsCommand;
    let (command, done) = match command {
        GuardrailsCli::Disable {
            action_type,
            by,
            reason,
        } => (
            GuardrailsCommand::DisableActionType {
                action_type: action_type.clone(),
                actor: by,
                reason,
            },
            format!("{action_type} disabled"),
        ),
        GuardrailsCli::Enable { action_type, by } => (
            GuardrailsCommand::EnableActionType {
                action_type: action_type.clone(),
                actor: by,
            },
            format!("{action_type} enabled"),
        ),
        GuardrailsCli::Engage { scope, by, reason } => {
            let scope = parse_scope(&scope)?;
            let done = format!("kill switch for {scope} engaged");
            (
                GuardrailsCommand::Engage {
                    scope,
                    actor: by,
                    reason,
                },
                done,
            )
        }
        GuardrailsCli::Release { scope, by } => {
            let scope = parse_scope(&scope)?;
            let done = format!("kill switch for {scope} released");
            (GuardrailsCommand::Release { scope, actor: by }, done)
        }
        GuardrailsCli::RateLimit {
            action_type,
            per_hour,
            by,
        } => {
            if crate::adapters::adapter_of(&action_type).is_none() {
                anyhow::bail!("{action_type:?} is not an action type ExecOps executes");
            }
            let per_hour = match per_hour.as_str() {
                "default" => None,
                raw => Some(raw.parse::<u32>().map_err(|_| {
                    anyhow::anyhow!("{raw:?} is not a whole number of executions an hour")
                })?),
            };
            let done = match per_hour {
                Some(n) => format!("{action_type}: at most {n} an hour"),
                None => format!("{action_type}: back to the default rate limit"),
            };
            (
                GuardrailsCommand::SetRateLimit {
                    action_type,
                    per_hour,
                    actor: by,
                },
                done,
            )
        }
        GuardrailsCli::Show => return show_guardrails(config).await,
    };
    let db = Database::open(&config.database()).await?;
    let store = crate::store::Store::new(db.pool.clone(), crate::telemetry::Metrics::new());
    let metadata = std::collections::HashMap::from([("via".to_string(), "cli".to_string())]);
    let result = store.guardrails(command, metadata).await;
    db.close().await?;
    result?;
    println!("{done}");
    Ok(())
}

async fn add_user(
    config: Config,
    email: &str,
    role: &str,
    password_stdin: bool,
) -> anyhow::Result<()> {
    use crate::domain::user::{Email, UserCommand};
    let email = Email::parse(email)?;
    let role: crate::domain::Role = serde_json::from_value(serde_json::Value::String(role.into()))?;
    let (password, show) = if password_stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        let password = line.trim_end_matches(['\n', '\r']).to_string();
        anyhow::ensure!(
            password.chars().count() >= 12,
            "the password must have at least 12 characters"
        );
        (password, false)
    } else {
        (crate::auth::generate_password(), true)
    };
    let password_hash = crate::auth::hash_password(&password).map_err(anyhow::Error::msg)?;
    let db = Database::open(&config.database()).await?;
    let store = crate::store::Store::new(db.pool.clone(), crate::telemetry::Metrics::new());
    let result = store
        .user(
            &email,
            UserCommand::Add {
                email: email.clone(),
                role,
                password_hash,
                by: "cli".into(),
            },
            std::collections::HashMap::from([("via".to_string(), "cli".to_string())]),
        )
        .await;
    let result = match result {
        Ok(()) => applied(&db.pool, &email).await,
        Err(error) => Err(error.into()),
    };
    db.close().await?;
    result?;
    println!("added {email} as {role}");
    if show {
        println!("password: {password}");
        println!("(shown once; it is stored only as a hash)");
    }
    Ok(())
}

/// Links a person to a Slack member, or unlinks them when `member` is `None`.
async fn link_slack(config: Config, email: &str, member: Option<&str>) -> anyhow::Result<()> {
    use crate::domain::user::{Email, SlackUserId, UserCommand, UserError};
    use crate::store::CommandError;
    let email = Email::parse(email)?;
    let member = member.map(SlackUserId::parse).transpose()?;
    let db = Database::open(&config.database()).await?;
    let result = async {
        if let Some(member) = &member {
            let holder = crate::projections::users::linked_elsewhere(
                &db.pool,
                member.as_str(),
                email.as_str(),
            )
            .await?;
            if let Some(holder) = holder {
                anyhow::bail!(
                    "Slack member {member} is already linked to {holder}; \
                     unlink it first with `execops user unlink-slack {holder}`"
                );
            }
        }
        let store = crate::store::Store::new(db.pool.clone(), crate::telemetry::Metrics::new());
        let command = match &member {
            Some(member) => UserCommand::LinkSlack {
                slack_user_id: member.clone(),
                by: "cli".into(),
            },
            None => UserCommand::UnlinkSlack { by: "cli".into() },
        };
        let metadata = std::collections::HashMap::from([("via".to_string(), "cli".to_string())]);
        match store.user(&email, command, metadata).await {
            Ok(()) => applied(&db.pool, &email).await.map(|()| match &member {
                Some(member) => format!("linked {email} to Slack member {member}"),
                None => format!("unlinked {email} from Slack"),
            }),
            Err(CommandError::Refused(UserError::AlreadyLinked(member))) => {
                Ok(format!("{email} was already linked to Slack member {member}"))
            }
            Err(CommandError::Refused(UserError::NoSuchUser)) => Err(anyhow::anyhow!(
                "no ExecOps user {email}; add them first with `execops user add {email} --role approver`"
            )),
            Err(CommandError::Refused(UserError::NotLinked)) => {
                Err(anyhow::anyhow!("{email} is not linked to a Slack member"))
            }
            Err(other) => Err(other.into()),
        }
    }
    .await;
    db.close().await?;
    println!("{}", result?);
    Ok(())
}

async fn create_token(config: Config, email: &str) -> anyhow::Result<()> {
    use crate::domain::user::{Email, UserCommand};
    let email = Email::parse(email)?;
    let (token_id, token, token_hash) = crate::auth::new_token();
    let db = Database::open(&config.database()).await?;
    let store = crate::store::Store::new(db.pool.clone(), crate::telemetry::Metrics::new());
    let result = store
        .user(
            &email,
            UserCommand::IssueToken {
                token_id,
                token_hash,
                by: "cli".into(),
            },
            std::collections::HashMap::from([("via".to_string(), "cli".to_string())]),
        )
        .await;
    let result = match result {
        Ok(()) => applied(&db.pool, &email).await,
        Err(error) => Err(error.into()),
    };
    db.close().await?;
    result?;
    println!("{token}");
    Ok(())
}

async fn revoke_token(config: Config, email: &str, token_id: &str) -> anyhow::Result<()> {
    use crate::domain::user::{Email, UserCommand};
    let email = Email::parse(email)?;
    let db = Database::open(&config.database()).await?;
    let store = crate::store::Store::new(db.pool.clone(), crate::telemetry::Metrics::new());
    let result = store
        .user(
            &email,
            UserCommand::RevokeToken {
                token_id: token_id.to_string(),
                by: "cli".into(),
            },
            std::collections::HashMap::from([("via".to_string(), "cli".to_string())]),
        )
        .await;
    let result = match result {
        Ok(()) => applied(&db.pool, &email).await,
        Err(error) => Err(error.into()),
    };
    db.close().await?;
    result?;
    println!("token {token_id} revoked");
    Ok(())
}

/// Returns once the users read model, which decides who may do what, has applied every
/// change to `email`: what a command prints (a token, a role) holds on the next request.
async fn applied(pool: &sqlx::PgPool, email: &crate::domain::user::Email) -> anyhow::Result<()> {
    crate::store::subscription::wait_applied(
        pool,
        crate::projections::Users,
        "User",
        email.as_str(),
        std::time::Duration::from_secs(10),
    )
    .await
    .map_err(Into::into)
}

async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = interrupt => tracing::info!("interrupted; shutting down"),
        _ = terminate => tracing::info!("terminated; shutting down"),
    }
}

async fn tail(config: Config, lines: i64, follow: bool, json: bool) -> anyhow::Result<()> {
    let db = Database::open(&config.database()).await?;
    let result = tail_on(&db.pool, lines, follow, json).await;
    db.close().await?;
    result
}

async fn tail_on(pool: &sqlx::PgPool, lines: i64, follow: bool, json: bool) -> anyhow::Result<()> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(EVENTS_CHANNEL).await?;
    let mut last = crate::store::log::LogPosition::START;
    // A follower starts where nothing can commit behind it; a one-off shows all there is.
    let start = match follow {
        true => read_last(pool, lines.max(0)).await?,
        false => read_last_in_snapshot(pool, lines.max(0)).await?,
    };
    for event in start {
        if !print_line(&render(&event, json)) {
            return Ok(());
        }
        last = event.log;
    }
    if lines <= 0 {
        // Nothing printed: still follow from the end, not from the start.
        if let Some(event) = read_last(pool, 1).await?.pop() {
            last = event.log;
        }
    }
    if !follow {
        return Ok(());
    }
    loop {
        let batch = read_after(pool, last, 500).await?;
        for event in &batch {
            if !print_line(&render(event, json)) {
                return Ok(());
            }
            last = event.log;
        }
        if batch.is_empty() {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = listener.recv() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
    Ok(())
}

fn parse_since(raw: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(day) = chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        return Ok(day.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    chrono::DateTime::parse_from_rfc3339(raw)
        .map(|t| t.to_utc())
        .map_err(|_| anyhow::anyhow!("--since {raw:?} is neither YYYY-MM-DD nor an RFC 3339 time"))
}

/// Every readable event in commit order, filtered, as NDJSON.
async fn export(
    pool: &sqlx::PgPool,
    since: Option<chrono::DateTime<chrono::Utc>>,
    aggregate: Option<&str>,
) -> anyhow::Result<()> {
    let (kind, id) = match aggregate {
        Some(raw) => match raw.split_once('/') {
            Some((kind, id)) => (Some(kind), Some(id)),
            None => (Some(raw), None),
        },
        None => (None, None),
    };
    // One snapshot for the whole export: everything committed when it starts, nothing after.
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let mut last = crate::store::log::LogPosition::START;
    loop {
        let batch = read_in_snapshot_after(&mut *tx, last, 1_000, None).await?;
        let Some(end) = batch.last().map(|e| e.log) else {
            return Ok(());
        };
        for event in &batch {
            let wanted = since.is_none_or(|t| event.recorded_at >= t)
                && kind.is_none_or(|k| event.aggregate_type == k)
                && id.is_none_or(|i| event.aggregate_id == i);
            if wanted && !print_line(&render(event, true)) {
                return Ok(());
            }
        }
        last = end;
    }
}

async fn audit(pool: &sqlx::PgPool, command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Show { proposal_id, json } => {
            let story = crate::ops::audit::story(pool, &proposal_id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&story)?);
            } else {
                print!("{}", crate::ops::audit::render_text(&story));
            }
            Ok(())
        }
        AuditCommand::Verify => {
            let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log")
                .fetch_one(pool)
                .await?;
            eprintln!(
                "Recomputing the audit chain ({rows} rows) from the event log and comparing it \
                 row by row; nothing is written."
            );
            let verification = crate::ops::audit::verify(pool).await?;
            println!("{verification}");
            match verification.first_break {
                None => Ok(()),
                Some(_) => anyhow::bail!("the audit log does not match the events"),
            }
        }
    }
}

async fn replay(
    pool: &sqlx::PgPool,
    projection: Option<&str>,
    verify: bool,
    yes: bool,
) -> anyhow::Result<()> {
    use crate::ops::replay::{Mode, PROJECTIONS};
    use std::io::IsTerminal;
    let projections = match projection {
        Some(name) => vec![crate::ops::replay::find(name)?],
        None => PROJECTIONS.to_vec(),
    };
    let mode = if verify { Mode::Verify } else { Mode::Swap };
    eprint!(
        "{}",
        crate::ops::replay::plan(pool, &projections, mode).await?
    );
    if !verify && !yes {
        anyhow::bail!("nothing done: add --yes to rebuild and swap, or --verify to compare");
    }
    let progress = std::io::stderr().is_terminal();
    let reports = crate::ops::replay::run(pool, &projections, mode, progress).await?;
    let mut differing = 0;
    for report in &reports {
        println!("{report}");
        differing += report.differing_rows;
    }
    if differing > 0 {
        anyhow::bail!("{differing} rows differ from what the events say");
    }
    Ok(())
}

/// An answer as an aligned table with its title and notes.
fn canvas_text(answer: &crate::canvas::Answer) -> String {
    let cells: Vec<Vec<String>> = answer
        .rows
        .iter()
        .map(|row| row.iter().map(|c| c.display()).collect())
        .collect();
    let widths: Vec<usize> = answer
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .filter_map(|r| r.get(i))
                .map(|v| v.chars().count())
                .chain([c.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: &[String]| {
        values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = format!(
        "{}\n{} to {}\n\n{}\n",
        answer.title,
        answer.params.from,
        answer.params.to,
        line(&answer.columns)
    );
    for row in &cells {
        out.push_str(&line(row));
        out.push('\n');
    }
    if cells.is_empty() {
        out.push_str("(nothing recorded for this period)\n");
    }
    for note in &answer.notes {
        out.push_str(&format!("note: {note}\n"));
    }
    out
}

/// Writes one line to standard output; false once nobody reads it any more (`| head`).
fn print_line(line: &str) -> bool {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
}

fn render(event: &StoredEvent, json: bool) -> String {
    if json {
        serde_json::json!({
            "transaction_id": event.log.transaction_id,
            "position": event.log.position,
            "recorded_at": event.recorded_at,
            "aggregate_type": event.aggregate_type,
            "aggregate_id": event.aggregate_id,
            "sequence": event.sequence,
            "event_type": event.event_type,
            "event_version": event.event_version,
            "payload": event.payload,
            "metadata": event.metadata,
        })
        .to_string()
    } else {
        format!(
            "{} {} {}/{}#{} {} {}",
            event.recorded_at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
            event.log,
            event.aggregate_type,
            event.aggregate_id,
            event.sequence,
            event.event_type,
            event.payload
        )
    }
}
