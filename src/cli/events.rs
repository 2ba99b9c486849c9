//! `execops events`: the log, followed as it commits or exported whole.

use std::time::Duration;

use clap::Subcommand;
use sqlx::postgres::PgListener;

use super::{print_line, Opened};
use crate::config::Config;
use crate::store::log::{
    read_after, read_in_snapshot_after, read_last, read_last_in_snapshot, StoredEvent,
};
use crate::store::subscription::EVENTS_CHANNEL;

#[derive(Debug, Subcommand)]
pub(super) enum EventsCommand {
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

pub(super) async fn run(config: Config, command: EventsCommand) -> anyhow::Result<()> {
    match command {
        EventsCommand::Tail {
            lines,
            no_follow,
            json,
        } => {
            let opened = Opened::open(&config).await?;
            let result = tail(opened.pool(), lines, !no_follow, json).await;
            opened.close(result).await
        }
        EventsCommand::Export { since, aggregate } => {
            let since = since.as_deref().map(parse_since).transpose()?;
            let opened = Opened::open(&config).await?;
            let result = export(opened.pool(), since, aggregate.as_deref()).await;
            opened.close(result).await
        }
    }
}

async fn tail(pool: &sqlx::PgPool, lines: i64, follow: bool, json: bool) -> anyhow::Result<()> {
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

pub(super) fn parse_since(raw: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
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
