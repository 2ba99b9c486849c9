//! The `execops` command line against a test database.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use execops::commands::Store;
use execops::store::testing::TestDatabase;
use execops::telemetry::Metrics;
use serde_json::Value;

use crate::common::receive;

fn execops(db: &TestDatabase) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_execops"));
    command.env("DATABASE_URL", &db.url);
    command
}

#[tokio::test]
async fn migrate_reports_the_schema_up_to_date() {
    let db = TestDatabase::new().await.expect("a database");
    let out = execops(&db).arg("migrate").output().expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("schema up to date"));
}

#[tokio::test]
async fn events_tail_prints_the_last_events_in_log_order() {
    let db = TestDatabase::new().await.expect("a database");
    let store = Store::new(db.pool.clone(), Metrics::new());
    // Shown though a transaction that began before them is still open.
    let mut open = db.pool.begin().await.expect("a transaction");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *open)
        .await
        .expect("an xid");
    for i in 0..5 {
        receive(&store, &format!("evt_tail_{i}")).await;
    }
    let out = execops(&db)
        .args(["events", "tail", "-n", "3", "--no-follow", "--json"])
        .output()
        .expect("runs");
    open.rollback().await.expect("rolled back");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let event: Value = serde_json::from_str(line).expect("a JSON line");
            event["aggregate_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(
        ids,
        [
            "stripe:evt_tail_2",
            "stripe:evt_tail_3",
            "stripe:evt_tail_4"
        ]
    );
}

#[tokio::test]
async fn events_tail_follows_new_events_as_they_commit() {
    let db = TestDatabase::new().await.expect("a database");
    let store = Store::new(db.pool.clone(), Metrics::new());
    receive(&store, "evt_before").await;
    let mut child = execops(&db)
        .args(["events", "tail", "-n", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("runs");
    let stdout = child.stdout.take().expect("stdout");
    let (line_tx, mut line_rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = line_tx.send(line);
        }
    });
    // It starts following from whatever is last when it gets going, which it does not say:
    // keep appending until one of the appended events comes through.
    let mut appended = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let line = loop {
        let id = format!("evt_followed_{}", appended.len());
        receive(&store, &id).await;
        appended.push(format!("Inbound/stripe:{id}#1 Received"));
        if let Ok(line) = tokio::time::timeout(Duration::from_millis(250), line_rx.recv()).await {
            break line;
        }
        if Instant::now() > deadline {
            break None;
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("a followed event is printed");
    assert!(
        appended.iter().any(|event| line.contains(event.as_str())),
        "{line}"
    );
}

#[tokio::test]
async fn events_tail_ends_quietly_when_its_reader_goes_away() {
    let db = TestDatabase::new().await.expect("a database");
    let store = Store::new(db.pool.clone(), Metrics::new());
    let mut child = execops(&db)
        .args(["events", "tail", "-n", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("runs");
    drop(child.stdout.take()); // like `| head` closing its end
                               // Whatever it follows from, one of these appended events is the write that fails.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut appended = 0;
    let status = loop {
        if let Some(status) = child.try_wait().expect("its status") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        receive(&store, &format!("evt_nobody_reads_{appended}")).await;
        appended += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    .expect("it ends by itself");
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn guardrails_commands_engage_and_release_kill_switches_and_refuse_bad_scopes() {
    let db = TestDatabase::new().await.expect("a database");
    let run = |args: &[&str]| {
        let out = execops(&db).args(args).output().expect("runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, out, err) = run(&[
        "guardrails",
        "engage",
        "adapter:slack",
        "--by",
        "admin@example.com",
        "--reason",
        "incident",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("kill switch for adapter slack engaged"),
        "{out}"
    );
    let (ok, out, _) = run(&["guardrails", "show"]);
    assert!(ok);
    assert!(
        out.contains("kill switch for adapter slack: engaged by admin@example.com (incident)"),
        "{out}"
    );
    let (ok, out, err) = run(&[
        "guardrails",
        "rate-limit",
        "email.send",
        "10",
        "--by",
        "admin@example.com",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("email.send: at most 10 an hour"), "{out}");
    for bad in [
        vec![
            "guardrails",
            "engage",
            "adapter:fax",
            "--by",
            "a@b.c",
            "--reason",
            "x",
        ],
        vec![
            "guardrails",
            "engage",
            "everything",
            "--by",
            "a@b.c",
            "--reason",
            "x",
        ],
        vec!["guardrails", "release", "global", "--by", "a@b.c"],
        vec![
            "guardrails",
            "rate-limit",
            "email.send",
            "0",
            "--by",
            "a@b.c",
        ],
        vec!["guardrails", "rate-limit", "fax.send", "3", "--by", "a@b.c"],
    ] {
        let (ok, _, err) = run(&bad);
        assert!(!ok, "{bad:?} was accepted");
        assert!(!err.trim().is_empty(), "{bad:?} said nothing");
    }
    let (ok, out, err) = run(&[
        "guardrails",
        "release",
        "adapter:slack",
        "--by",
        "admin@example.com",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("released"), "{out}");
    let types: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE aggregate_type = 'Guardrails' ORDER BY sequence",
    )
    .fetch_all(&db.pool)
    .await
    .expect("events");
    assert_eq!(
        types,
        ["KillSwitchEngaged", "RateLimitSet", "KillSwitchReleased"]
    );
}

#[tokio::test]
async fn events_export_prints_the_log_as_ndjson_filtered_by_time_and_aggregate() {
    let db = TestDatabase::new().await.expect("a database");
    let store = Store::new(db.pool.clone(), Metrics::new());
    // A transaction left open (here, or in any database of the cluster) does not hide
    // what commits after it began.
    let mut open = db.pool.begin().await.expect("a transaction");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *open)
        .await
        .expect("an xid");
    for i in 0..3 {
        receive(&store, &format!("evt_export_{i}")).await;
    }
    let run = |args: &[&str]| {
        let out = execops(&db).args(args).output().expect("runs");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).expect("a JSON line"))
            .collect::<Vec<_>>()
    };
    let all = run(&["events", "export"]);
    // Held no longer than needed: it holds back the other tests' readers too.
    open.rollback().await.expect("rolled back");
    let ids: Vec<&str> = all
        .iter()
        .filter_map(|e| e["aggregate_id"].as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "stripe:evt_export_0",
            "stripe:evt_export_1",
            "stripe:evt_export_2"
        ]
    );
    assert_eq!(all[0]["event_type"], "Received");
    assert!(all[0]["payload"]["Received"].is_object());
    let one = run(&[
        "events",
        "export",
        "--aggregate",
        "Inbound/stripe:evt_export_1",
    ]);
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["aggregate_id"], "stripe:evt_export_1");
    assert!(run(&["events", "export", "--aggregate", "Proposal"]).is_empty());
    assert!(run(&["events", "export", "--since", "2999-01-01"]).is_empty());
    assert_eq!(
        run(&["events", "export", "--since", "2000-01-01T00:00:00Z"]).len(),
        3
    );
    let bad = execops(&db)
        .args(["events", "export", "--since", "yesterday"])
        .output()
        .expect("runs");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("neither YYYY-MM-DD nor"));
}
