//! `execops backtest` against signals sent through the real webhooks: what a changed
//! threshold would have proposed, set beside what the router proposed, with nothing written.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use execops::store::testing::TestDatabase;
use serde_json::{json, Value};

use crate::common::TestApp;
use crate::policies::{feed, fixture, month_ago, send, send_changed, settle};
use crate::webhooks::configured;

/// The tables the router, the projections and the executor keep, and the log itself.
const TABLES: [&str; 12] = [
    "events",
    "proposal_summaries",
    "facts_vendor_spend",
    "facts_monthly",
    "facts_cash",
    "facts_deals",
    "router_subjects",
    "router_proposals",
    "router_decisions",
    "router_action_types",
    "outcome_rates",
    "subscription_checkpoints",
];

/// Each table's row count and a checksum of its rows.
async fn snapshot(pool: &sqlx::PgPool) -> Vec<(String, i64, String)> {
    let mut tables = Vec::new();
    for table in TABLES {
        let (rows, sum): (i64, String) = sqlx::query_as(&format!(
            "SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {table} t"
        ))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{table}: {e}"));
        tables.push((table.to_string(), rows, sum));
    }
    tables
}

/// A settings file of this test's own.
fn settings_file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "execops-backtest-{}-{name}.env",
        std::process::id()
    ));
    std::fs::write(&path, text).expect("the settings file is written");
    path
}

async fn execops(database_url: &str, args: &[&str]) -> Output {
    let url = database_url.to_string();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_execops"))
            .args(&args)
            .env("DATABASE_URL", url)
            .env("RUST_LOG", "warn")
            .output()
    })
    .await
    .expect("the command's task")
    .expect("execops runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Signal, class, rule (or action type when gone), score now, score then.
type Row = (String, String, String, Option<i64>, Option<i64>);

/// A row for each proposal of the report.
fn classified(report: &Value) -> Vec<Row> {
    report["proposals"]
        .as_array()
        .expect("a list of proposals")
        .iter()
        .map(|p| {
            (
                p["signal"].as_str().unwrap_or_default().to_string(),
                p["class"].as_str().unwrap_or_default().to_string(),
                p["rule"]
                    .as_str()
                    .or_else(|| p["action_type"].as_str())
                    .unwrap_or_default()
                    .to_string(),
                p["would"]["score"].as_i64(),
                p["was"]["score"].as_i64(),
            )
        })
        .collect()
}

fn row(signal: &str, class: &str, what: &str, would: Option<i64>, was: Option<i64>) -> Row {
    (signal.into(), class.into(), what.into(), would, was)
}

#[tokio::test]
async fn a_changed_threshold_shows_what_would_be_new_gone_and_rescored_and_writes_nothing() {
    let app = TestApp::spawn_with(configured()).await;
    let pool = app.store.pool().clone();

    // Before the date: three months of spend with a vendor, and a dispute. They only
    // rebuild the facts; the dispute's proposal is not in the report.
    for months in 1..=3 {
        feed(
            &app,
            "expense.recorded",
            &format!("exp_{months}"),
            json!({"vendor": "Acme Cloud", "amount": 100_000, "currency": "usd", "date": month_ago(months)}),
        )
        .await;
    }
    send(&app, &fixture("stripe/charge.dispute.created.json")).await;
    settle(&app).await;
    let since: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&pool)
        .await
        .expect("the database's clock");
    tokio::time::sleep(Duration::from_millis(20)).await;

    // Since the date, in this order:
    // 1. spend 5% over its average: under the live 10%, over the tried 2%;
    feed(
        &app,
        "expense.recorded",
        "exp_now",
        json!({"vendor": "Acme Cloud", "amount": 105_000, "currency": "usd", "date": month_ago(0)}),
    )
    .await;
    // 2. a first failed payment of $300: under the live $500 owner-DM threshold, over $200;
    send_changed(&app, "stripe/invoice.payment_failed.json", |e| {
        e["id"] = "evt_dm_new".into();
        e["data"]["object"]["id"] = "in_dm_new".into();
        e["data"]["object"]["attempt_count"] = 1.into();
        e["data"]["object"]["amount_due"] = 30_000.into();
        e["data"]["object"]["amount_remaining"] = 30_000.into();
    })
    .await;
    // 3. a deal reaching contractsent, a stage the tried configuration no longer follows;
    let deal = send(&app, &fixture("hubspot/deal.propertyChange.json")).await;
    let deal = deal["id"]
        .as_str()
        .expect("the deal's inbound id")
        .to_string();
    // 4. a second failed payment of $10: the owner is told whatever the amount;
    send(&app, &fixture("stripe/invoice.payment_failed.json")).await;
    settle(&app).await;
    // 5. a third one on the same invoice, which revised those two proposals;
    send_changed(&app, "stripe/invoice.payment_failed.json", |e| {
        e["id"] = "evt_third_failure".into();
        e["data"]["object"]["attempt_count"] = 3.into();
    })
    .await;
    settle(&app).await;
    // 6. the invoice paid, which superseded them.
    send(&app, &fixture("stripe/invoice.paid.json")).await;
    settle(&app).await;

    // Emails have always worked since: the track record raises their scores today.
    sqlx::query("INSERT INTO outcome_rates (action_type, executed, with_outcome) VALUES ('email.send', 10, 10)")
        .execute(&pool)
        .await
        .expect("a track record");
    let database_url = app.database_url.clone();
    app.stop().await;
    let before = snapshot(&pool).await;

    let file = settings_file(
        "tuned",
        "# Tuning the money and growth rules\n\
         EXECOPS_POLICY_OWNER_DM_CENTS=20000\n\
         \n\
         EXECOPS_POLICY_SPEND_JUMP_PERCENT=\"2\"\n\
         EXECOPS_POLICY_DEAL_STAGES='decisionmakerboughtin'\n",
    );
    let since_arg = since.to_rfc3339_opts(SecondsFormat::Micros, true);
    let file_arg = file.display().to_string();
    let args = [
        "backtest", "--since", &since_arg, "--config", &file_arg, "--json",
    ];
    let out = execops(&database_url, &args).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("replaying 6 signals recorded since")
            && stderr.contains("from 4 earlier signals")
            && stderr.contains("Nothing is written"),
        "{stderr}"
    );
    assert!(!stderr.contains("warning"), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let failed = "stripe:evt_1PgcE0B7WZ01zgkWInvPFail";
    let third = "stripe:evt_third_failure";
    assert_eq!(
        classified(&report),
        [
            row("bank:exp_now", "new", "money.spend_review", Some(45), None),
            row(
                "stripe:evt_dm_new",
                "same",
                "money.card_update_email",
                Some(63),
                Some(60)
            ),
            row("stripe:evt_dm_new", "new", "money.owner_dm", Some(64), None),
            row(&deal, "gone", "email.send", None, Some(61)),
            row(
                failed,
                "same",
                "money.card_update_email",
                Some(59),
                Some(56)
            ),
            row(failed, "same", "money.owner_dm", Some(53), Some(53)),
            row(third, "same", "money.card_update_email", Some(59), Some(56)),
            row(third, "same", "money.owner_dm", Some(53), Some(53)),
        ],
        "{report:#}"
    );
    for (field, expected) in [
        ("signals_replayed", 6),
        ("earlier_signals", 4),
        ("would_propose", 7),
        ("was_proposed", 6),
        ("same", 5),
        ("score_changed", 3),
        ("new", 2),
        ("gone", 1),
    ] {
        assert_eq!(report[field], expected, "{field}");
    }
    assert_eq!(report["configuration"], file_arg);
    let proposals = &report["proposals"];
    assert_eq!(proposals[3]["was"]["status"], "pending");
    // The revisions are the proposals drafted from the second failure, superseded since.
    for (revised, drafted) in [(6, 4), (7, 5)] {
        assert_eq!(
            proposals[revised]["was"]["proposal_id"],
            proposals[drafted]["was"]["proposal_id"]
        );
        assert_eq!(proposals[revised]["was"]["status"], "superseded");
    }
    let supersedes: Vec<(&str, usize)> = report["supersedes"]
        .as_array()
        .expect("supersedes")
        .iter()
        .map(|s| {
            (
                s["subject_key"].as_str().unwrap_or_default(),
                s["superseded_then"].as_array().map_or(0, Vec::len),
            )
        })
        .collect();
    let invoice = "stripe:invoice:in_1Pgc6tB7WZ01zgkWu9fdqL6I";
    assert_eq!(
        supersedes,
        [
            (&*format!("{invoice}:card_update_email"), 1),
            (&*format!("{invoice}:owner_dm"), 1),
            (&*format!("{invoice}:retry"), 0),
        ]
    );

    // The same, for people: a line per difference, then the counts.
    let out = execops(&database_url, &args[..5]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with(
            "new   bank:exp_now expense.recorded: money.spend_review (slack.post_message) \
             would propose \"Review spend with Acme Cloud\", score 45; was not proposed"
        ),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with(
            "score stripe:evt_dm_new invoice.payment_failed: money.card_update_email (email.send) score 60 -> 63"
        ),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with("new   stripe:evt_dm_new invoice.payment_failed: money.owner_dm"),
        "{stdout}"
    );
    assert!(
        lines[3].starts_with(&format!(
            "gone  {deal} deal.propertyChange: email.send on hubspot:deal:"
        )) && lines[3].ends_with("score 61; would not be now"),
        "{stdout}"
    );
    assert!(
        lines[4].starts_with(&format!(
            "score {failed} invoice.payment_failed: money.card_update_email (email.send) score 56 -> 59"
        )),
        "{stdout}"
    );
    assert!(
        lines[5].starts_with(&format!(
            "score {third} invoice.payment_failed: money.card_update_email (email.send) score 56 -> 59"
        )) && lines[5].ends_with(", superseded)"),
        "{stdout}"
    );
    assert_eq!(lines[6], "", "{stdout}");
    assert!(
        stdout.contains("6 signals replayed")
            && stdout.contains("proposals: 7 would be made, 6 were\n")
            && stdout.contains("same 5 (3 with another score), new 2, gone 1\n")
            && stdout.contains("supersedes: 3 called for, 2 superseded a pending proposal then"),
        "{stdout}"
    );

    // The configuration in force reproduces what was proposed; only scores moved.
    let out = execops(
        &database_url,
        &["backtest", "--since", &since_arg, "--json"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let current: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(
        (&current["same"], &current["new"], &current["gone"]),
        (&json!(6), &json!(0), &json!(0)),
        "{current:#}"
    );

    assert_eq!(
        snapshot(&pool).await,
        before,
        "the backtest changed a table"
    );
    let _ = std::fs::remove_file(file);
}

#[tokio::test]
async fn bad_backtest_inputs_are_refused_with_a_clear_error_and_unknown_keys_are_named() {
    let db = TestDatabase::new().await.expect("a database");
    let missing = std::env::temp_dir().join("execops-backtest-nowhere/tuning.env");
    let missing = missing.display().to_string();
    let bad_value = settings_file("bad-value", "EXECOPS_POLICY_OWNER_DM_CENTS=lots\n");
    let bad_value = bad_value.display().to_string();
    let bad_line = settings_file("bad-line", "# tuning\nnot a setting\n");
    let bad_line = bad_line.display().to_string();
    let typo = settings_file("typo", "EXECOPS_POLICY_OWNER_DM_CENT=20000\n");
    let typo = typo.display().to_string();
    let cases: [(&[&str], bool, &[&str]); 7] = [
        (&["backtest"], false, &["--since"]),
        (
            &["backtest", "--since", "yesterday"],
            false,
            &["--since \"yesterday\" is neither YYYY-MM-DD nor an RFC 3339 time"],
        ),
        (
            &["backtest", "--since", "2024-02-30"],
            false,
            &["neither YYYY-MM-DD nor"],
        ),
        (
            &["backtest", "--since", "2024-01-01", "--config", &missing],
            false,
            &[&format!("reading {missing}"), "No such file"],
        ),
        (
            &["backtest", "--since", "2024-01-01", "--config", &bad_value],
            false,
            &[
                &format!("in {bad_value}"),
                "EXECOPS_POLICY_OWNER_DM_CENTS: \"lots\" is not valid",
            ],
        ),
        (
            &["backtest", "--since", "2024-01-01", "--config", &bad_line],
            false,
            &[&format!("reading {bad_line}"), "not a setting"],
        ),
        (
            &["backtest", "--since", "2024-01-01", "--config", &typo],
            true,
            &[&format!(
                "warning: {typo} sets EXECOPS_POLICY_OWNER_DM_CENT, which ExecOps does not read"
            )],
        ),
    ];
    for (args, succeeds, expected) in cases {
        let out = execops(&db.url, args).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.success(), succeeds, "{args:?}: {stderr}");
        for needle in expected {
            assert!(stderr.contains(needle), "{args:?}: {stderr}");
        }
        if succeeds {
            assert!(
                text(&out.stdout).contains("no differences\n\n0 signals replayed"),
                "{args:?}: {}",
                text(&out.stdout)
            );
        } else {
            assert!(out.stdout.is_empty(), "{args:?} printed a report");
        }
    }
    for file in [bad_value, bad_line, typo] {
        let _ = std::fs::remove_file(file);
    }
}
