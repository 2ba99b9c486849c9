//! Appending through the aggregates: duplicates, races, the append-only rule, and how an
//! unreachable database is reported.

use std::collections::HashMap;

use execops::commands::{Receipt, Store};
use execops::domain::InboundError;
use execops::store::CommandError;
use execops::telemetry::Metrics;
use sqlx::postgres::PgPoolOptions;

use crate::common::{count, receive, signal, store};

#[tokio::test]
async fn a_redelivery_is_a_duplicate_and_writes_nothing() {
    let (db, store) = store().await;
    assert_eq!(receive(&store, "evt_1").await, Receipt::Accepted);
    assert_eq!(receive(&store, "evt_1").await, Receipt::Duplicate);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 1);
}

#[tokio::test]
async fn concurrent_copies_of_one_delivery_record_exactly_one_event() {
    let (db, store) = store().await;
    let mut copies = Vec::new();
    for _ in 0..20 {
        let store = store.clone();
        copies.push(tokio::spawn(
            async move { receive(&store, "evt_race").await },
        ));
    }
    let mut accepted = 0;
    for copy in copies {
        if copy.await.expect("a copy finishes") == Receipt::Accepted {
            accepted += 1;
        }
    }
    assert_eq!(
        accepted, 1,
        "exactly one copy is accepted, the rest are duplicates"
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 1);
}

#[tokio::test]
async fn stored_events_carry_log_columns_and_metadata() {
    let (db, store) = store().await;
    let metadata = HashMap::from([("request_id".to_string(), "req-1".to_string())]);
    store
        .receive(signal("github", "delivery-1"), metadata)
        .await
        .expect("stored");
    let (aggregate_id, event_type, request_id, has_tx): (String, String, String, bool) =
        sqlx::query_as(
            "SELECT aggregate_id, event_type, metadata->>'request_id', transaction_id > '0'::xid8 FROM events",
        )
        .fetch_one(&db.pool)
        .await
        .expect("one event");
    assert_eq!(aggregate_id, "github:delivery-1");
    assert_eq!(event_type, "Received");
    assert_eq!(request_id, "req-1");
    assert!(has_tx);
}

#[tokio::test]
async fn events_cannot_be_updated_deleted_or_truncated() {
    let (db, store) = store().await;
    receive(&store, "evt_keep").await;
    for sql in [
        "UPDATE events SET payload = '{}'",
        "DELETE FROM events",
        "TRUNCATE events",
    ] {
        let error = sqlx::query(sql)
            .execute(&db.pool)
            .await
            .expect_err("the change must be refused");
        assert!(error.to_string().contains("append-only"), "{sql}: {error}");
    }
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 1);
}

#[tokio::test]
async fn an_unreachable_database_is_reported_as_unavailable() {
    // Nothing listens on port 1.
    let pool = PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_millis(500))
        .connect_lazy("postgres://nobody:nothing@127.0.0.1:1/none")
        .expect("a lazy pool");
    let store = Store::new(pool, Metrics::new());
    let result = store
        .receive(signal("stripe", "evt_lost"), HashMap::new())
        .await;
    assert!(
        matches!(result, Err(CommandError::<InboundError>::Unavailable(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn the_log_readers_walk_the_log_order_index_instead_of_sorting_the_log() {
    use execops::store::log::{READ_AFTER, READ_IN_SNAPSHOT, READ_SELECTED};
    let (db, store) = store().await;
    for i in 0..200 {
        receive(&store, &format!("evt_plan_{i}")).await;
    }
    let mut conn = db.pool.acquire().await.expect("a connection");
    // The plan every later batch gets, with the index preferred whenever it can give the
    // order: a query whose ORDER BY it cannot serve still has to sort.
    sqlx::raw_sql(
        "ANALYZE events; SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off;",
    )
    .execute(&mut *conn)
    .await
    .expect("set up");
    for (name, sql, parameters, arguments) in [
        ("read_after", READ_AFTER, "", ""),
        ("read_in_snapshot", READ_IN_SNAPSHOT, "", ""),
        ("read_selected", READ_SELECTED, ", text[]", ", NULL"),
        (
            "read_selected_of",
            READ_SELECTED,
            ", text[]",
            ", '{Inbound}'",
        ),
    ] {
        sqlx::raw_sql(&format!(
            "PREPARE {name}(bigint, bigint, bigint, text[], text[]{parameters}) AS {sql}"
        ))
        .execute(&mut *conn)
        .await
        .expect("prepared");
        let plan: serde_json::Value = sqlx::query_scalar(&format!(
            "EXPLAIN (FORMAT JSON) EXECUTE {name}(0, 0, 500, '{{Inbound}}', '{{github}}'{arguments})"
        ))
        .fetch_one(&mut *conn)
        .await
        .expect("a plan");
        let text = plan.to_string();
        assert!(text.contains("events_log_order"), "{name}: {text}");
        assert!(!text.contains("\"Sort\""), "{name} sorts: {text}");
    }
}

#[tokio::test]
async fn an_embedded_postgres_on_a_port_another_process_holds_says_so() {
    use execops::store::embedded::{EmbeddedError, EmbeddedOptions, EmbeddedPostgres};

    let dir = std::env::temp_dir().join(format!("execops-taken-port-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("a port held open");
    let port = held.local_addr().expect("its address").port();
    let start = |port: Option<u16>| {
        let options = EmbeddedOptions {
            port,
            ..EmbeddedOptions::new(&dir).throwaway()
        };
        tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&options))
    };

    let refused = start(Some(port)).await.expect("start task");
    assert!(
        matches!(refused, Err(EmbeddedError::PortTaken(p)) if p == port),
        "{:?}",
        refused.map(|c| c.port())
    );
    // Left to choose, it chooses another port, on the same cluster.
    let cluster = start(None)
        .await
        .expect("start task")
        .expect("postgres starts");
    assert_ne!(cluster.port(), port);
    let reachable: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(
            &PgPoolOptions::new()
                .connect(&cluster.url("postgres"))
                .await
                .expect("connects"),
        )
        .await
        .expect("answers");
    assert_eq!(reachable, 1);
    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .expect("stop task")
        .expect("stops");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_deadlock_is_told_apart_from_other_errors_so_it_can_be_retried() {
    let (_db, store) = store().await;
    let pool = store.pool();
    sqlx::raw_sql("CREATE TABLE locks_a (id int); CREATE TABLE locks_b (id int);")
        .execute(pool)
        .await
        .expect("tables");
    // Two transactions take the same two locks in opposite orders: Postgres fails one.
    let mut first = pool.begin().await.expect("a transaction");
    let mut second = pool.begin().await.expect("a transaction");
    sqlx::query("LOCK TABLE locks_a IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *first)
        .await
        .expect("a");
    sqlx::query("LOCK TABLE locks_b IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *second)
        .await
        .expect("b");
    // A side that is failed rolls back at once, so the other can go on.
    let then = |mut tx: sqlx::Transaction<'static, sqlx::Postgres>, table: &'static str| async move {
        let locked = sqlx::query(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
            .execute(&mut *tx)
            .await;
        let _ = tx.rollback().await;
        locked
    };
    let (one, other) = tokio::join!(then(first, "locks_b"), then(second, "locks_a"));
    let errors: Vec<sqlx::Error> = [one.err(), other.err()].into_iter().flatten().collect();
    assert_eq!(errors.len(), 1, "exactly one side is failed");
    assert!(execops::store::is_deadlock(&errors[0]), "{}", errors[0]);
    let other = sqlx::query("SELECT 1/0")
        .execute(pool)
        .await
        .expect_err("fails");
    assert!(!execops::store::is_deadlock(&other));
}
