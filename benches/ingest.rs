//! `just bench-ingest`: N signed Stripe `charge.succeeded` deliveries (the commonest kind,
//! which no policy turns into a proposal; a share of them redeliveries) at
//! concurrency C against a running ExecOps on its Postgres. Prints accepted/s and p50/p99
//! latency, then pgbench's one-row-per-transaction insert rate on the same Postgres at the
//! same concurrency, and the ratio of the two.
//!
//! BENCH_DELIVERIES (default 20000), BENCH_CONCURRENCY (default 16) and
//! BENCH_DUPLICATES (percent redelivered, default 20) size the run. DATABASE_URL, when set,
//! names the Postgres; otherwise a fresh embedded cluster with durable defaults is used.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use execops::app::App;
use execops::config::Config;
use execops::send::{sign, Delivery, Sender};
use execops::store::embedded::find_binaries;
use execops::store::testing::BenchDatabase;
use execops::store::{connect, MIGRATOR};

const SECRET: &str = "whsec_bench_secret";

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

/// pgbench: one INSERT per transaction, `clients` connections, for `seconds`.
fn pgbench(url: &str, clients: usize, seconds: u64) -> anyhow::Result<f64> {
    let bin = find_binaries().ok_or_else(|| anyhow::anyhow!("no PostgreSQL binaries found"))?;
    let parsed = url::Url::parse(url)?;
    let script = std::env::temp_dir().join(format!("execops-pgbench-{}.sql", std::process::id()));
    std::fs::write(
        &script,
        "INSERT INTO bench_pgbench_rows (payload) VALUES ('{\"id\": \"evt\", \"type\": \"invoice.payment_failed\"}');\n",
    )?;
    let output = std::process::Command::new(bin.join("pgbench"))
        .args([
            "-n",
            "-c",
            &clients.to_string(),
            "-j",
            "2",
            "-T",
            &seconds.to_string(),
        ])
        .args(["-h", parsed.host_str().unwrap_or("127.0.0.1")])
        .args(["-p", &parsed.port().unwrap_or(5432).to_string()])
        .args(["-U", parsed.username()])
        .arg("-f")
        .arg(&script)
        .arg(parsed.path().trim_start_matches('/'))
        .env("PGPASSWORD", parsed.password().unwrap_or_default())
        .output()?;
    let _ = std::fs::remove_file(&script);
    let text = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "pgbench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix("tps = ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .ok_or_else(|| anyhow::anyhow!("no tps in pgbench's output:\n{text}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let deliveries = env_usize("BENCH_DELIVERIES", 20_000);
    let concurrency = env_usize("BENCH_CONCURRENCY", 16).max(1);
    let duplicates = env_usize("BENCH_DUPLICATES", 20).min(100);

    let database = BenchDatabase::start("bench-ingest").await?;
    let (url, where_) = (database.url.clone(), database.description);
    let config = Config::from_lookup(|key| match key {
        "STRIPE_WEBHOOK_SECRET" => Some(SECRET.to_string()),
        "EXECOPS_DB_MAX_CONNECTIONS" => Some((concurrency + 4).to_string()),
        _ => None,
    })?;
    let pool = connect(&url, config.db_max_connections).await?;
    MIGRATOR.run(&pool).await?;
    let app = App::start(pool.clone(), &config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let router = app.router();
    tokio::spawn(async move { axum::serve(listener, router).await });

    // Signed up front, so the figures are the server's, not the signing's.
    let run = uuid::Uuid::new_v4().simple().to_string();
    let fresh = deliveries - deliveries * duplicates / 100;
    let signed: Vec<Delivery> = (0..deliveries)
        .map(|i| {
            let n = if i < fresh { i } else { i % fresh.max(1) };
            let body = format!(
                r#"{{"id":"evt_{run}_{n}","object":"event","type":"charge.succeeded","created":1721954100,"data":{{"object":{{"id":"ch_{n}","object":"charge","amount":1000,"currency":"usd","paid":true}}}}}}"#
            );
            sign(&Sender::Stripe, body.into_bytes(), &config, &base, Utc::now())
        })
        .collect::<Result<_, _>>()?;
    let signed = Arc::new(signed);

    println!(
        "bench-ingest: {deliveries} signed Stripe deliveries ({duplicates}% redeliveries), concurrency {concurrency}, on {where_}"
    );
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, next, signed, base) =
            (client.clone(), next.clone(), signed.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let (mut accepted, mut duplicate) = (0usize, 0usize);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(delivery) = signed.get(i) else { break };
                let mut request = client.post(format!("{base}{}", delivery.path));
                for (name, value) in &delivery.headers {
                    request = request.header(name, value);
                }
                let t = Instant::now();
                let response = request.body(delivery.body.clone()).send().await?;
                let status = response.status();
                let text = response.text().await?;
                latencies.push(t.elapsed());
                anyhow::ensure!(status.is_success(), "{status}: {text}");
                if text.contains("\"accepted\"") {
                    accepted += 1;
                } else {
                    duplicate += 1;
                }
            }
            Ok::<_, anyhow::Error>((latencies, accepted, duplicate))
        }));
    }
    let (mut latencies, mut accepted, mut duplicate) = (Vec::new(), 0, 0);
    for task in tasks {
        let (l, a, d) = task.await??;
        latencies.extend(l);
        accepted += a;
        duplicate += d;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let answered_per_s = latencies.len() as f64 / elapsed.as_secs_f64();
    let accepted_per_s = accepted as f64 / elapsed.as_secs_f64();
    println!(
        "ingest: {} answered in {:.2} s = {answered_per_s:.0}/s ({accepted} accepted = {accepted_per_s:.0} accepted/s, {duplicate} duplicates); latency p50 {:.2} ms, p99 {:.2} ms",
        latencies.len(),
        elapsed.as_secs_f64(),
        percentile(&latencies, 0.50).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
    );
    for status in app.state.subscriptions.statuses() {
        println!(
            "subscriber {}: applied {} events meanwhile, {} failures",
            status.name,
            status.processed(),
            status.failures()
        );
    }
    app.stop().await;

    sqlx::query("CREATE TABLE IF NOT EXISTS bench_pgbench_rows (id bigserial PRIMARY KEY, payload json NOT NULL)")
        .execute(&pool)
        .await?;
    let url_for_pgbench = url.clone();
    let tps =
        tokio::task::spawn_blocking(move || pgbench(&url_for_pgbench, concurrency, 10)).await??;
    sqlx::query("DROP TABLE bench_pgbench_rows")
        .execute(&pool)
        .await?;
    println!("pgbench: one-row INSERT per transaction, {concurrency} clients, 10 s: {tps:.0} tps");
    println!(
        "ratio: accepted/s ÷ pgbench tps = {:.2}; answered/s ÷ pgbench tps = {:.2}",
        accepted_per_s / tps,
        answered_per_s / tps
    );

    pool.close().await;
    database.close().await?;
    Ok(())
}
