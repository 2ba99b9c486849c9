//! `just bench-load`: a real team's day at once, on one `execops serve` process with the
//! default settings, for BENCH_SECONDS (60): 200 open inbox streams (20 people, 10 tabs
//! each), the 20 paging the inbox, the queue and the API, approvals through the API,
//! BENCH_WEBHOOK_RATE (500) signed Stripe deliveries a second, and a flood of
//! BENCH_SIGNIN_RATE (100) sign-ins a second with made-up emails. Prints p50/p99 per route, errors (5xx and failed requests), the server's
//! peak RSS and the most database connections it held.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use execops::config::Config;
use execops::send::{sign, Sender};
use execops::store::testing::BenchDatabase;
use tokio::io::AsyncWriteExt;

const SECRET: &str = "whsec_bench_load";
const PASSWORD: &str = "a long enough password";
const PEOPLE: usize = 20;
const TABS: usize = 10;

#[derive(Default)]
struct Figures {
    latencies: BTreeMap<&'static str, Vec<Duration>>,
    statuses: BTreeMap<&'static str, BTreeMap<u16, u64>>,
    failures: BTreeMap<&'static str, u64>,
}

type Shared = Arc<Mutex<Figures>>;

fn note(
    figures: &Shared,
    route: &'static str,
    started: Instant,
    result: Result<u16, reqwest::Error>,
) {
    let Ok(mut figures) = figures.lock() else {
        return;
    };
    match result {
        Ok(status) => {
            figures
                .latencies
                .entry(route)
                .or_default()
                .push(started.elapsed());
            *figures
                .statuses
                .entry(route)
                .or_default()
                .entry(status)
                .or_default() += 1;
        }
        Err(_) => *figures.failures.entry(route).or_default() += 1,
    }
}

fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The machine's CPU time so far, in clock ticks: (busy, stolen by the host, all).
fn machine_ticks() -> (u64, u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let at = |i: usize| ticks.get(i).copied().unwrap_or(0);
    let all: u64 = ticks.iter().take(8).sum();
    (all - at(3) - at(4) - at(7), at(7), all)
}

/// CPU ticks (user and system) a process has used.
fn process_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command's closing parenthesis; utime and stime are 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let at = |i: usize| {
        fields
            .get(i)
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(0)
    };
    at(11) + at(12)
}

fn peak_rss_mb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        / 1024
}

async fn execops(url: &str, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_execops"))
        .args(args)
        .env("DATABASE_URL", url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        input.write_all(text.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    anyhow::ensure!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds = env_u64("BENCH_SECONDS", 60);
    let rate = env_u64("BENCH_WEBHOOK_RATE", 500).max(1);
    let signin_rate = env_u64("BENCH_SIGNIN_RATE", 100).max(1);
    let database = BenchDatabase::start("bench-load").await?;
    let url = database.url.clone();
    execops(&url, &["migrate"], None).await?;
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?.port()
    };
    let base = format!("http://127.0.0.1:{port}");
    let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_execops"))
        .arg("serve")
        .env("DATABASE_URL", &url)
        .env("EXECOPS_ADDR", format!("127.0.0.1:{port}"))
        .env("STRIPE_WEBHOOK_SECRET", SECRET)
        .env("EXECOPS_LIVE_STREAMS_PER_SESSION", TABS.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = server.id().unwrap_or_default();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()?;
    let ready_by = Instant::now() + Duration::from_secs(120);
    while !matches!(client.get(format!("{base}/readyz")).send().await, Ok(r) if r.status() == 200) {
        anyhow::ensure!(
            Instant::now() < ready_by,
            "execops serve never became ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The team: each person with a session and an API token.
    let mut people = Vec::new();
    for i in 0..PEOPLE {
        let email = format!("person{i}@example.com");
        execops(
            &url,
            &[
                "user",
                "add",
                &email,
                "--role",
                "approver",
                "--password-stdin",
            ],
            Some(&format!("{PASSWORD}\n")),
        )
        .await?;
        let token = execops(&url, &["token", "create", &email], None).await?;
        let response = client
            .post(format!("{base}/login"))
            .form(&[("email", email.as_str()), ("password", PASSWORD)])
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == 303,
            "{email} signs in: {}",
            response.status()
        );
        let cookie = response.headers()["set-cookie"]
            .to_str()?
            .split(';')
            .next()
            .unwrap_or_default()
            .to_string();
        people.push((email, token, cookie));
    }
    let config =
        Config::from_lookup(|key| (key == "STRIPE_WEBHOOK_SECRET").then(|| SECRET.to_string()))?;
    let figures: Shared = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();

    // 200 open streams, read as a browser would.
    let streams = reqwest::Client::new();
    for (_, _, cookie) in &people {
        for _ in 0..TABS {
            let request = streams
                .get(format!("{base}/inbox/stream"))
                .header("cookie", cookie.as_str());
            let (figures, stop) = (figures.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let started = Instant::now();
                let mut response = match request.send().await {
                    Ok(response) => {
                        note(
                            &figures,
                            "GET /inbox/stream (open)",
                            started,
                            Ok(response.status().as_u16()),
                        );
                        response
                    }
                    Err(error) => {
                        return note(&figures, "GET /inbox/stream (open)", started, Err(error))
                    }
                };
                while !stop.load(Ordering::Relaxed) {
                    match tokio::time::timeout(Duration::from_millis(500), response.chunk()).await {
                        Ok(Ok(Some(_))) | Err(_) => {}
                        _ => break,
                    }
                }
            }));
        }
    }
    // Twenty people paging and approving.
    for (_, token, cookie) in people.clone() {
        let (client, base, figures, stop) =
            (client.clone(), base.clone(), figures.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for (route, path) in [("GET /inbox", "/inbox"), ("GET /queue", "/queue")] {
                    let started = Instant::now();
                    let result = client
                        .get(format!("{base}{path}"))
                        .header("cookie", cookie.as_str())
                        .send()
                        .await;
                    note(
                        &figures,
                        route,
                        started,
                        result.map(|r| r.status().as_u16()),
                    );
                }
                let started = Instant::now();
                let listed = client
                    .get(format!("{base}/api/v1/proposals?status=pending&limit=20"))
                    .bearer_auth(&token)
                    .send()
                    .await;
                let body: serde_json::Value = match listed {
                    Ok(response) => {
                        note(
                            &figures,
                            "GET /api/v1/proposals",
                            started,
                            Ok(response.status().as_u16()),
                        );
                        response.json().await.unwrap_or_default()
                    }
                    Err(error) => {
                        note(&figures, "GET /api/v1/proposals", started, Err(error));
                        continue;
                    }
                };
                let first = body["items"].as_array().and_then(|items| items.first());
                if let Some((id, hash)) =
                    first.and_then(|p| Some((p["id"].as_str()?, p["payload_hash"].as_str()?)))
                {
                    let started = Instant::now();
                    let result = client
                        .post(format!("{base}/api/v1/proposals/{id}/approve"))
                        .bearer_auth(&token)
                        .json(&serde_json::json!({"comment": "load", "payload_hash": hash}))
                        .send()
                        .await;
                    note(
                        &figures,
                        "POST /api/v1/proposals/{id}/approve",
                        started,
                        result.map(|r| r.status().as_u16()),
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }
    // Signed deliveries at the rate asked, each a failed payment of its own invoice.
    {
        let (client, base, figures, stop, config) = (
            client.clone(),
            base.clone(),
            figures.clone(),
            stop.clone(),
            config.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let run = uuid::Uuid::new_v4().simple().to_string();
            let mut tick = tokio::time::interval(Duration::from_secs(1) / rate as u32);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                n += 1;
                let body = format!(
                    r#"{{"id":"evt_{run}_{n}","object":"event","type":"invoice.payment_failed","created":1721954100,"data":{{"object":{{"id":"in_{run}_{n}","object":"invoice","customer":"cus_{n}","customer_email":"c{n}@example.com","amount_due":1000,"amount_remaining":1000,"currency":"usd","attempt_count":1}}}}}}"#
                );
                let Ok(delivery) = sign(&Sender::Stripe, body.into_bytes(), &config, &base, Utc::now()) else { continue };
                let mut request = client.post(format!("{base}{}", delivery.path));
                for (name, value) in &delivery.headers {
                    request = request.header(name, value);
                }
                let request = request.body(delivery.body);
                let figures = figures.clone();
                tokio::spawn(async move {
                    let started = Instant::now();
                    let result = request.send().await;
                    note(&figures, "POST /webhooks/stripe", started, result.map(|r| r.status().as_u16()));
                });
            }
        }));
    }
    // A sign-in flood: made-up emails from one address, BENCH_SIGNIN_RATE a second
    // whatever the answers take, as a script would send them.
    {
        let (client, base, figures, stop) =
            (client.clone(), base.clone(), figures.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / signin_rate));
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                n += 1;
                let email = format!("nobody-{n}@example.com");
                let request = client
                    .post(format!("{base}/login"))
                    .form(&[("email", email.as_str()), ("password", "guess")]);
                let figures = figures.clone();
                tokio::spawn(async move {
                    let started = Instant::now();
                    let result = request.send().await;
                    note(
                        &figures,
                        "POST /login (flood)",
                        started,
                        result.map(|r| r.status().as_u16()),
                    );
                });
            }
        }));
    }
    // Connections held by the server, sampled each second.
    let watcher = {
        let (url, stop) = (url.clone(), stop.clone());
        tokio::spawn(async move {
            let Ok(pool) = execops::store::connect(&url, 1).await else {
                return 0i64;
            };
            let mut most = 0;
            while !stop.load(Ordering::Relaxed) {
                let held: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
                )
                .fetch_one(&pool)
                .await
                .unwrap_or(0);
                most = most.max(held);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            most
        })
    };

    println!("bench-load: {seconds} s, {} streams, {PEOPLE} people paging and approving, {rate} webhooks/s, {signin_rate} sign-ins/s, on {}", PEOPLE * TABS, database.description);
    let machine_before = machine_ticks();
    let (server_before, generator_before) =
        (process_ticks(&pid.to_string()), process_ticks("self"));
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let machine_after = machine_ticks();
    let (server_after, generator_after) = (process_ticks(&pid.to_string()), process_ticks("self"));
    stop.store(true, Ordering::Relaxed);
    let connections = watcher.await.unwrap_or(0);
    let rss = peak_rss_mb(pid);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(35), task).await;
    }
    let _ = server.kill().await;

    let figures = figures
        .lock()
        .map_err(|_| anyhow::anyhow!("figures poisoned"))?;
    let mut errors = 0;
    println!(
        "{:<38} {:>8} {:>9} {:>9}  statuses",
        "route", "requests", "p50 ms", "p99 ms"
    );
    for (route, latencies) in &figures.latencies {
        let mut sorted = latencies.clone();
        sorted.sort();
        let at = |p: f64| {
            sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
        };
        let statuses = &figures.statuses[route];
        errors += statuses
            .iter()
            .filter(|(s, _)| **s >= 500)
            .map(|(_, n)| n)
            .sum::<u64>();
        println!(
            "{route:<38} {:>8} {:>9.1} {:>9.1}  {statuses:?}",
            sorted.len(),
            at(0.5),
            at(0.99)
        );
    }
    let failed: u64 = figures.failures.values().sum();
    println!(
        "5xx answers: {errors}; requests with no answer: {failed} {:?}",
        figures.failures
    );
    println!("peak RSS of execops serve: {rss} MB; most database connections held: {connections}");
    // Where the machine's time went: the generator shares it, and a virtual machine's host
    // may take some (steal), so read the latencies beside these.
    let all = (machine_after.2 - machine_before.2).max(1) as f64;
    let share = |ticks: u64| 100.0 * ticks as f64 / all;
    println!(
        "CPU of the machine ({} cores): busy {:.0}%, stolen by the host {:.0}%; execops serve {:.0}%, this generator {:.0}%, the rest (Postgres, kernel) {:.0}%",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        share(machine_after.0 - machine_before.0),
        share(machine_after.1 - machine_before.1),
        share(server_after - server_before),
        share(generator_after - generator_before),
        share(
            (machine_after.0 - machine_before.0)
                .saturating_sub(server_after - server_before)
                .saturating_sub(generator_after - generator_before)
        ),
    );
    Ok(())
}
