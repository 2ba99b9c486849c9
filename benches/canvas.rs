//! `just bench-canvas`: each canvas query's latency over a log of realistic shape
//! (BENCH_EVENTS, default 1,000,000; see `history.rs`). The canvas projection is built with
//! `execops replay --yes`, then every query runs BENCH_RUNS times (default 30) over the
//! whole history, by month, and over its last month, by day; p50 and p90 are printed.
//! Runs on DATABASE_URL if set, otherwise on a fresh embedded cluster.

#[path = "history.rs"]
mod history;

use std::time::{Duration, Instant};

use chrono::NaiveDate;
use execops::canvas::{queries, Params, QueryName, RawParams};
use execops::store::testing::BenchDatabase;
use execops::store::{connect, MIGRATOR};

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let wanted = env_usize("BENCH_EVENTS", 1_000_000);
    let runs = env_usize("BENCH_RUNS", 30).max(1);
    let database = BenchDatabase::start("bench-canvas").await?;
    let pool = connect(&database.url, 10).await?;
    MIGRATOR.run(&pool).await?;
    let (written, signals) = history::write(&pool, wanted, database.description).await?;

    let started = Instant::now();
    let built = std::process::Command::new(env!("CARGO_BIN_EXE_execops"))
        .args(["replay", "--yes"])
        .env("DATABASE_URL", &database.url)
        .stderr(std::process::Stdio::null())
        .output()?;
    anyhow::ensure!(
        built.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&built.stdout)
    );
    sqlx::query("ANALYZE").execute(&pool).await?;
    println!(
        "projections built from {written} events in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // A signal every 20 seconds from 2026-01-01.
    let start = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap_or_default();
    let end = start + chrono::Duration::seconds(20 * signals as i64);
    let last_month = end - chrono::Duration::days(30);
    let periods = [
        ("whole history by month", start, end, "month"),
        ("last 30 days by day", last_month, end, "day"),
    ];
    println!(
        "{:<18} {:<24} {:>9} {:>9} {:>6}",
        "query", "period", "p50", "p90", "rows"
    );
    for (label, from, to, granularity) in periods {
        for query in QueryName::ALL {
            let raw = RawParams {
                from: Some(from.to_string()),
                to: Some(to.to_string()),
                granularity: Some(granularity.into()),
                ..RawParams::default()
            };
            let params = Params::parse(&raw, to)?;
            let mut times = Vec::with_capacity(runs);
            let mut rows = 0;
            for _ in 0..runs {
                let started = Instant::now();
                let answer = queries::run(&pool, query, &params).await?;
                times.push(started.elapsed());
                rows = answer.rows.len();
            }
            times.sort();
            println!(
                "{:<18} {:<24} {:>7.1}ms {:>7.1}ms {:>6}",
                query.as_str(),
                label,
                percentile(&times, 0.5).as_secs_f64() * 1000.0,
                percentile(&times, 0.9).as_secs_f64() * 1000.0,
                rows
            );
        }
    }
    pool.close().await;
    database.close().await?;
    Ok(())
}
