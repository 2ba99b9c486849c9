//! `just bench-replay`: writes a log of realistic shape (BENCH_EVENTS, default 1,000,000),
//! then runs `execops replay --yes` on it (every projection rebuilt and swapped in) and
//! prints events/s and the command's peak resident memory; then `execops replay --verify`
//! likewise. The log's shape is described in `history.rs`. Runs on DATABASE_URL if set,
//! otherwise on a fresh embedded cluster.

#[path = "history.rs"]
mod history;

use std::time::Instant;

use execops::store::testing::BenchDatabase;
use execops::store::{connect, MIGRATOR};

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The high-water mark of a process's resident memory, in KiB, while it runs.
fn peak_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Runs `execops ARGS` on `url`; its standard output, wall time and peak RSS in MiB. The
/// peak is the child's own `VmHWM`, read every 10 ms until it exits (`ru_maxrss` would
/// count the parent's memory it was forked from).
fn execops(url: &str, args: &[&str]) -> anyhow::Result<(String, std::time::Duration, f64)> {
    use std::io::Read;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let started = Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_execops"))
        .args(args)
        .env("DATABASE_URL", url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let pid = child.id();
    let peak = Arc::new(AtomicU64::new(0));
    let watcher = std::thread::spawn({
        let peak = peak.clone();
        move || {
            while let Some(kib) = peak_kib(pid) {
                peak.fetch_max(kib, Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    });
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout.read_to_string(&mut out)?;
    }
    let status = child.wait()?;
    let elapsed = started.elapsed();
    let _ = watcher.join();
    anyhow::ensure!(status.success(), "execops {args:?} failed:\n{out}");
    Ok((out, elapsed, peak.load(Ordering::Relaxed) as f64 / 1024.0))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let wanted = env_usize("BENCH_EVENTS", 1_000_000);
    let database = BenchDatabase::start("bench-replay").await?;
    let pool = connect(&database.url, 10).await?;
    MIGRATOR.run(&pool).await?;

    let (written, _) = history::write(&pool, wanted, database.description).await?;
    let (out, elapsed, peak) = execops(&database.url, &["replay", "--yes"])?;
    print!("{out}");
    println!(
        "execops replay --yes: every projection rebuilt from {written} events and swapped in \
         in {:.1}s: {:.0} events/s; peak RSS {peak:.0} MiB",
        elapsed.as_secs_f64(),
        written as f64 / elapsed.as_secs_f64()
    );
    let (out, elapsed, peak) = execops(&database.url, &["replay", "--verify"])?;
    print!("{out}");
    println!(
        "execops replay --verify: {:.1}s, {:.0} events/s; peak RSS {peak:.0} MiB",
        elapsed.as_secs_f64(),
        written as f64 / elapsed.as_secs_f64()
    );
    pool.close().await;
    database.close().await?;
    Ok(())
}
