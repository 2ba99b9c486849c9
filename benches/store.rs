//! `just bench-store`: appends N events (proposal drafts: load the stream, then insert in a
//! transaction) through postgres-es from C concurrent tasks, prints
//! events/s and p50/p99 append latency, then reads them back through a subscription and
//! prints events/s. Runs on DATABASE_URL if set, otherwise on a fresh embedded cluster
//! with the product's default (durable) settings.
//!
//! BENCH_EVENTS (default 20000) and BENCH_CONCURRENCY (default 8) size the run.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use execops::commands::Store;
use execops::domain::{ProposalCommand, ProposalDraft, ProposalId, Urgency, Vertical};
use execops::store::log::StoredEvent;
use execops::store::subscription::{HandlerError, Registry, Runner, RunnerOptions, Subscriber};
use execops::store::testing::BenchDatabase;
use execops::store::{connect, MIGRATOR};
use execops::telemetry::Metrics;
use serde_json::json;
use sqlx::PgConnection;
use tokio::sync::watch;

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Counter(Arc<AtomicU64>);

impl Subscriber for Counter {
    fn name(&self) -> &str {
        "bench_reader"
    }

    async fn handle(&self, _: &mut PgConnection, _: &StoredEvent) -> Result<(), HandlerError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let events = env_usize("BENCH_EVENTS", 20_000);
    let concurrency = env_usize("BENCH_CONCURRENCY", 8).max(1);

    let database = BenchDatabase::start("bench-store").await?;
    let (url, where_) = (database.url.clone(), database.description);
    let pool = connect(&url, (concurrency as u32 + 4).max(10)).await?;
    MIGRATOR.run(&pool).await?;
    let store = Store::new(pool.clone(), Metrics::new());
    let run = uuid::Uuid::new_v4().simple().to_string();

    println!("bench-store: {events} events, {concurrency} concurrent writers, on {where_}");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for writer in 0..concurrency {
        let store = store.clone();
        let run = run.clone();
        let share = events / concurrency + usize::from(writer < events % concurrency);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(share);
            for i in 0..share {
                let id = ProposalId::derive(&format!("bench:{run}:{writer}:{i}"), "bench");
                let draft = ProposalDraft {
                    id,
                    title: format!("Email customer {i} a card-update link"),
                    vertical: Vertical::Money,
                    action_type: "email.send".into(),
                    action: json!({"to": format!("c{i}@example.com"), "template": "card_update"}),
                    reasoning: "The invoice payment failed.".into(),
                    drivers: vec!["because $10.00 is at risk".into()],
                    score: 60,
                    urgency: Urgency::High,
                    due_by: Some(Utc::now()),
                    owner: None,
                    inbound_ids: vec![format!("stripe:evt_{i}")],
                    subject_key: format!("invoice:{i}"),
                    requested_by: None,
                    outcome_key: None,
                    terms: Default::default(),
                };
                let t = Instant::now();
                store
                    .proposal(
                        &id.to_string(),
                        ProposalCommand::Draft(draft),
                        HashMap::new(),
                    )
                    .await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(events);
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    println!(
        "append: {} events in {:.2} s = {:.0} events/s; latency p50 {:.2} ms, p99 {:.2} ms",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
    );

    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await?;
    let seen = Arc::new(AtomicU64::new(0));
    sqlx::query("DELETE FROM subscription_checkpoints WHERE name = 'bench_reader'")
        .execute(&pool)
        .await?;
    let runner = Runner::new(
        pool.clone(),
        Counter(seen.clone()),
        RunnerOptions::default(),
        &Registry::default(),
    );
    let (stop, stop_rx) = watch::channel(false);
    let started = Instant::now();
    let task = tokio::spawn(runner.run(stop_rx));
    while seen.load(Ordering::Relaxed) < total as u64 {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "the reader did not finish"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let _ = stop.send(true);
    task.await?;
    println!(
        "read: {total} events through a subscription in {:.2} s = {:.0} events/s (batches of {})",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        RunnerOptions::default().batch_size,
    );

    pool.close().await;
    database.close().await?;
    Ok(())
}
