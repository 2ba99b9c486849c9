//! `execops replay` against a serving app: a rebuild matches the live projections, lists
//! every row someone changed behind the subscribers' backs, and swaps in without stopping
//! the server or losing its indexes, views and foreign keys.

use std::time::Duration;

use execops::domain::Role;
use serde_json::Value;

use crate::api::person;
use crate::audit::{execops, projections_idle, stderr, stdout};
use crate::common::{count, eventually, TestApp};
use crate::execution::{approve, wait_for, Fakes};
use crate::webhooks::{configured, fixtures, post};

/// Sends every fixture, signed, and decides a few of the proposals they draft.
async fn busy_day(app: &TestApp) {
    use crate::pages::sign_in;
    crate::common::enable_writes(&app.store).await;
    for path in fixtures() {
        let delivery = execops::send::prepare(
            &path,
            &configured(),
            &format!("http://{}", app.addr),
            chrono::Utc::now(),
        )
        .expect("signs");
        let (status, body) = post(app, &delivery).await;
        assert_eq!(status, 200, "{}: {body}", path.display());
    }
    crate::policies::settle(app).await;
    let token = person(app, "ada@example.com", Role::Approver).await;
    sign_in(app, "ada@example.com").await;
    let pending: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM proposal_summaries WHERE status = 'pending' ORDER BY id LIMIT 2",
    )
    .fetch_all(app.store.pool())
    .await
    .expect("pending proposals");
    assert_eq!(pending.len(), 2, "the fixtures draft proposals");
    for id in &pending {
        approve(app, &token, id).await;
        wait_for(app, id, "ExecutionStarted").await;
    }
    projections_idle(app.store.pool()).await;
}

/// Every index of the projections' tables, by table and name.
async fn index_names(pool: &sqlx::PgPool) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT tablename::text, indexname::text FROM pg_indexes WHERE schemaname = 'public' \
           AND tablename IN ('event_counts', 'proposal_summaries', 'users', 'api_tokens', 'audit_log') \
         ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .expect("indexes")
}

/// Foreign keys that name the projections' tables: (table, constraint, referenced table).
async fn foreign_keys(pool: &sqlx::PgPool) -> Vec<(String, String, String)> {
    sqlx::query_as(
        "SELECT conrelid::regclass::text, conname::text, confrelid::regclass::text \
         FROM pg_constraint WHERE contype = 'f' \
           AND confrelid::regclass::text IN ('users', 'api_tokens', 'proposal_summaries') \
         ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .expect("foreign keys")
}

#[tokio::test]
async fn replay_verify_lists_every_tampered_row_and_a_swap_while_serving_mends_them() {
    let fakes = Fakes::start().await;
    fakes.slack_accepts().await;
    let app = TestApp::spawn_with(fakes.config(&[])).await;
    busy_day(&app).await;
    let pool = app.store.pool().clone();
    let url = app.database_url.clone();
    let indexes = index_names(&pool).await;
    let keys = foreign_keys(&pool).await;
    assert_eq!(
        keys.iter().map(|k| k.0.as_str()).collect::<Vec<_>>(),
        ["api_tokens", "sessions"],
        "{keys:?}"
    );

    let clean = execops(&url, &["replay", "--verify"]);
    assert!(
        clean.status.success(),
        "{}{}",
        stdout(&clean),
        stderr(&clean)
    );
    for projection in ["event_counts", "proposals", "users", "audit_log", "canvas"] {
        assert!(
            stdout(&clean).contains(&format!("{projection}: no difference")),
            "{projection}: {}",
            stdout(&clean)
        );
    }
    assert!(
        stderr(&clean).contains("Nothing is changed"),
        "it explains first: {}",
        stderr(&clean)
    );

    let victim: String =
        sqlx::query_scalar("SELECT id FROM proposal_summaries ORDER BY id LIMIT 1")
            .fetch_one(&pool)
            .await
            .expect("a proposal");
    sqlx::raw_sql(&format!(
        "UPDATE proposal_summaries SET title = 'tampered', score = 1 WHERE id = '{victim}'; \
         DELETE FROM event_counts WHERE event_type = 'Received'; \
         INSERT INTO users (email, role, password_hash, created_at, updated_at) \
           VALUES ('eve@example.com', 'admin', 'x', now(), now()); \
         UPDATE audit_log SET actor = 'eve@example.com' WHERE seq = 2"
    ))
    .execute(&pool)
    .await
    .expect("tampered");

    let dirty = execops(&url, &["replay", "--verify"]);
    assert!(!dirty.status.success(), "tampering went unnoticed");
    let report = stdout(&dirty);
    for expected in [
        format!("proposal_summaries {{\"id\":\"{victim}\"}}:"),
        "score is 1 live".to_string(),
        "title is \"tampered\" live".to_string(),
        "event_counts {\"aggregate_type\":\"Inbound\",\"event_type\":\"Received\"}: missing from the live table".to_string(),
        "users {\"email\":\"eve@example.com\"}: only in the live table".to_string(),
        "audit_log {\"seq\":2}: actor is \"eve@example.com\" live".to_string(),
        "proposals: 1 rows differ".to_string(),
    ] {
        assert!(report.contains(&expected), "{expected:?} missing from:\n{report}");
    }
    assert!(stderr(&dirty).contains("rows differ from what the events say"));

    // Without --yes it only explains.
    let refused = execops(&url, &["replay", "--projection", "proposals"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("proposals: rebuild proposal_summaries from")
            && stderr(&refused).contains("nothing done: add --yes"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(
        count(
            &pool,
            &format!("SELECT count(*) FROM proposal_summaries WHERE id = '{victim}' AND title = 'tampered'")
        )
        .await,
        1
    );

    // The swap, while the app serves and keeps taking deliveries.
    let swap = execops(&url, &["replay", "--yes"]);
    assert!(swap.status.success(), "{}{}", stdout(&swap), stderr(&swap));
    assert_eq!(
        stdout(&swap).matches("swapped in").count(),
        execops::ops::replay::PROJECTIONS.len(),
        "{}",
        stdout(&swap)
    );
    let after = execops(&url, &["replay", "--verify"]);
    assert!(after.status.success(), "{}", stdout(&after));
    assert_eq!(index_names(&pool).await, indexes, "index names survive");
    assert_eq!(foreign_keys(&pool).await, keys, "foreign keys survive");
    assert_eq!(
        count(&pool, "SELECT count(*) FROM inbox").await,
        count(
            &pool,
            "SELECT count(*) FROM proposal_summaries WHERE status = 'pending'"
        )
        .await,
        "the inbox view reads the new table"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'execops_re%'"
        )
        .await,
        0,
        "nothing left behind"
    );
    let audit = execops(&url, &["audit", "verify"]);
    assert!(audit.status.success(), "{}", stdout(&audit));

    // The live subscribers carry on from where the swap left them.
    let delivery =
        crate::policies::send_changed(&app, "stripe/invoice.payment_failed.json", |json| {
            json["id"] = Value::from("evt_after_the_swap");
        })
        .await;
    let inbound = delivery["id"].as_str().expect("an id").to_string();
    eventually(
        Duration::from_secs(20),
        "the proposals projection to follow again",
        || async {
            count(
                &pool,
                &format!("SELECT count(*) FROM proposal_summaries WHERE inbound_ids ? '{inbound}'"),
            )
            .await
                > 0
        },
    )
    .await;
    projections_idle(&pool).await;
    let last = execops(&url, &["replay", "--verify"]);
    assert!(last.status.success(), "{}", stdout(&last));
    app.stop().await;
}

#[tokio::test]
async fn replay_refuses_bad_requests_with_a_clear_error_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let url = app.database_url.clone();
    projections_idle(app.store.pool()).await;
    let cases: &[(&[&str], &str)] = &[
        (
            &["replay", "--projection", "router", "--verify"],
            "no projection \"router\"; the projections are event_counts, proposals, users, audit_log, canvas",
        ),
        (
            &["replay", "--verify", "--yes"],
            "cannot be used with",
        ),
        (&["replay"], "nothing done: add --yes to rebuild and swap, or --verify to compare"),
        (&["audit", "show"], "required arguments were not provided"),
        (&["audit", "frobnicate"], "unrecognized subcommand"),
    ];
    for (args, expected) in cases {
        let out = execops(&url, args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            stderr(&out).contains(expected),
            "{args:?}: expected {expected:?} in {}",
            stderr(&out)
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_replay_that_fails_for_one_projection_says_why_and_leaves_no_rebuild_behind() {
    let app = TestApp::spawn().await;
    let url = app.database_url.clone();
    projections_idle(app.store.pool()).await;
    // Another replay of the proposals holds their lock.
    let mut holder = app.store.pool().acquire().await.expect("a connection");
    sqlx::query("SELECT pg_advisory_lock(hashtextextended('execops.replay.proposals', 0))")
        .execute(&mut *holder)
        .await
        .expect("locked");
    let out = tokio::task::spawn_blocking(move || execops(&url, &["replay", "--yes"]))
        .await
        .expect("ran");
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("another replay of proposals is running"),
        "{}",
        stderr(&out)
    );
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'execops_replay_%' \
            OR nspname LIKE 'execops_retired_%'",
    )
    .fetch_one(app.store.pool())
    .await
    .expect("schemas");
    assert_eq!(left, 0, "every other projection finished and cleaned up");
    drop(holder);
    app.stop().await;
}

/// A failed-invoice delivery for invoice `n`, signed: one Stripe retry proposal each.
fn failed_invoice(n: usize) -> execops::send::Delivery {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/stripe/invoice.payment_failed.json");
    let mut json: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("fixture")).expect("json");
    json["id"] = Value::from(format!("evt_chaos_{n}"));
    json["data"]["object"]["id"] = Value::from(format!("in_chaos_{n}"));
    json["data"]["object"]["next_payment_attempt"] = Value::Null;
    let sender = execops::send::sender_of(&path).expect("a sender");
    execops::send::sign(
        &sender,
        serde_json::to_vec(&json).expect("bytes"),
        &configured(),
        "http://127.0.0.1",
        chrono::Utc::now(),
    )
    .expect("signs")
}

/// Posts `delivery` to the server on `port`; the status, or `None` when nothing answered.
async fn deliver(
    client: &reqwest::Client,
    port: u16,
    delivery: &execops::send::Delivery,
) -> Option<u16> {
    let mut request = client.post(format!("http://127.0.0.1:{port}{}", delivery.path));
    for (name, value) in &delivery.headers {
        request = request.header(name, value);
    }
    let response = request.body(delivery.body.clone()).send().await.ok()?;
    Some(response.status().as_u16())
}

/// Posts every delivery, four at a time; statuses in order (`None`: no answer).
async fn deliver_all(port: u16, deliveries: &[execops::send::Delivery]) -> Vec<Option<u16>> {
    use futures::StreamExt;
    let client = reqwest::Client::new();
    futures::stream::iter(deliveries)
        .map(|d| deliver(&client, port, d))
        .buffered(4)
        .collect()
        .await
}

/// Posts the first ten deliveries four at a time, then the rest one by one, 100 ms apart:
/// the stream goes on for seconds after the first ten have landed.
async fn deliver_paced(port: u16, deliveries: &[execops::send::Delivery]) -> Vec<Option<u16>> {
    let (burst, rest) = deliveries.split_at(deliveries.len().min(10));
    let mut statuses = deliver_all(port, burst).await;
    let client = reqwest::Client::new();
    for delivery in rest {
        tokio::time::sleep(Duration::from_millis(100)).await;
        statuses.push(deliver(&client, port, delivery).await);
    }
    statuses
}

/// Drafted retry proposals.
async fn retries(pool: &sqlx::PgPool) -> i64 {
    count(
        pool,
        "SELECT count(*) FROM proposal_summaries WHERE action_type = 'stripe.retry_invoice'",
    )
    .await
}

#[tokio::test]
async fn after_sigkills_in_ingestion_and_execution_and_redeliveries_a_replay_finds_no_difference() {
    use crate::execution::{FakeStripe, Serve};
    use execops::domain::{payload_hash, Decision, ProposalCommand};
    const INVOICES: usize = 40;

    let fakes = Fakes::start().await;
    fakes.slack_accepts().await;
    // The first charge is answered only after a minute: the process dies waiting for it.
    fakes
        .stripe_answers(FakeStripe::holding_first_answer(Duration::from_secs(60)))
        .await;
    let db = execops::store::testing::TestDatabase::new()
        .await
        .expect("a database");
    execops::store::MIGRATOR
        .run(&db.pool)
        .await
        .expect("migrated");
    let pool = db.pool.clone();
    crate::common::enable_writes(&execops::commands::Store::new(
        pool.clone(),
        execops::telemetry::Metrics::new(),
    ))
    .await;
    let settings = fakes.settings(None);
    let deliveries: Vec<_> = (0..INVOICES).map(failed_invoice).collect();

    // 1. Killed while deliveries pour in.
    let mut first = Serve::start(&db.url, &settings);
    let port = first.1;
    eventually(Duration::from_secs(30), "the server to listen", || async {
        reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .is_ok()
    })
    .await;
    let killing = async {
        eventually(
            Duration::from_secs(30),
            "some deliveries to land",
            || async {
                count(
                    &pool,
                    "SELECT count(*) FROM events WHERE aggregate_type = 'Inbound'",
                )
                .await
                    >= 10
            },
        )
        .await;
        first.kill();
    };
    let (statuses, ()) = tokio::join!(deliver_paced(port, &deliveries), killing);
    assert!(
        statuses.iter().any(Option::is_none),
        "the kill happened mid-stream: {statuses:?}"
    );

    // 2. The senders retry everything, some twice at once.
    let mut second = Serve::start(&db.url, &settings);
    let port = second.1;
    eventually(Duration::from_secs(30), "the server to listen", || async {
        reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .is_ok()
    })
    .await;
    let (again, twice) = tokio::join!(
        deliver_all(port, &deliveries),
        deliver_all(port, &deliveries[..10])
    );
    assert!(
        again.iter().chain(&twice).all(|s| *s == Some(200)),
        "{again:?} {twice:?}"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM events WHERE aggregate_type = 'Inbound'"
        )
        .await,
        INVOICES as i64,
        "each delivery recorded once"
    );
    eventually(
        Duration::from_secs(60),
        "a retry drafted per invoice",
        || async { retries(&pool).await == INVOICES as i64 },
    )
    .await;

    // 3. Killed while executing: approve six retries; the first charge hangs.
    let store = execops::commands::Store::new(pool.clone(), execops::telemetry::Metrics::new());
    let approved: Vec<(String, Value)> = sqlx::query_as(
        "SELECT id, action FROM proposal_summaries WHERE action_type = 'stripe.retry_invoice' \
         ORDER BY id LIMIT 6",
    )
    .fetch_all(&pool)
    .await
    .expect("retries");
    for (id, action) in &approved {
        let decision = Decision {
            actor: "ada@example.com".into(),
            role: Role::Approver,
            comment: None,
            payload_hash: payload_hash(action),
            identities: vec![],
            at: Some(chrono::Utc::now()),
        };
        store
            .proposal(id, ProposalCommand::Approve(decision), Default::default())
            .await
            .expect("approved");
    }
    eventually(Duration::from_secs(30), "a charge in flight", || async {
        !fakes
            .stripe
            .received_requests()
            .await
            .unwrap_or_default()
            .is_empty()
    })
    .await;
    second.kill();
    let open = count(
        &pool,
        "SELECT count(*) FROM proposal_summaries p WHERE action_type = 'stripe.retry_invoice' \
           AND (SELECT event_type FROM events e WHERE e.aggregate_id = p.id \
                ORDER BY sequence DESC LIMIT 1) = 'ExecutionStarted'",
    )
    .await;
    assert!(open >= 1, "an attempt was open when the process died");

    // 4. Back up; a replay swaps while more deliveries arrive; then everything settles.
    let third = Serve::start(&db.url, &settings);
    let port = third.1;
    eventually(Duration::from_secs(30), "the server to listen", || async {
        reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .is_ok()
    })
    .await;
    let more: Vec<_> = (INVOICES..INVOICES + 20).map(failed_invoice).collect();
    let url = db.url.clone();
    let (late, swap) = tokio::join!(
        deliver_all(port, &more),
        tokio::task::spawn_blocking(move || execops(&url, &["replay", "--yes"]))
    );
    assert!(late.iter().all(|s| *s == Some(200)), "{late:?}");
    let swap = swap.expect("replay ran");
    assert!(swap.status.success(), "{}{}", stdout(&swap), stderr(&swap));
    let settled = |id: String| {
        let pool = pool.clone();
        async move {
            let last: Option<String> = sqlx::query_scalar(
                "SELECT event_type FROM events WHERE aggregate_id = $1 ORDER BY sequence DESC LIMIT 1",
            )
            .bind(id)
            .fetch_optional(&pool)
            .await
            .expect("events");
            matches!(
                last.as_deref(),
                Some("ExecutionSucceeded" | "ExecutionUncertain" | "ExecutionFailed")
            )
        }
    };
    eventually(
        Duration::from_secs(60),
        "every approval settled",
        || async {
            for (id, _) in &approved {
                if !settled(id.clone()).await {
                    return false;
                }
            }
            true
        },
    )
    .await;
    eventually(Duration::from_secs(60), "every retry drafted", || async {
        retries(&pool).await == (INVOICES + 20) as i64
    })
    .await;
    projections_idle(&pool).await;

    let verify = execops(&db.url, &["replay", "--verify"]);
    assert!(
        verify.status.success(),
        "{}{}",
        stdout(&verify),
        stderr(&verify)
    );
    assert_eq!(
        stdout(&verify).matches("no difference").count(),
        execops::ops::replay::PROJECTIONS.len()
    );
    let audit = execops(&db.url, &["audit", "verify"]);
    assert!(audit.status.success(), "{}", stdout(&audit));
    drop(third);
}
