//! Read models equal what the events say.

use std::time::Duration;

use execops::projections::EventCounts;
use execops::store::subscription::{Registry, Runner, RunnerOptions};
use tokio::sync::watch;

use crate::common::{eventually, receive, store};

#[tokio::test]
async fn event_counts_equal_a_count_of_the_log() {
    let (db, store) = store().await;
    for i in 0..120 {
        receive(&store, &format!("evt_count_{i}")).await;
    }
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         SELECT 'Proposal', 'p-' || g, 1, 'Drafted', '1.0', '{}', '{}' FROM generate_series(1, 45) g",
    )
    .execute(&db.pool)
    .await
    .expect("more events");
    let options = RunnerOptions {
        batch_size: 50,
        ..RunnerOptions::default()
    };
    let runner = Runner::new(db.pool.clone(), EventCounts, options, &Registry::default());
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(runner.run(stop_rx));
    let truth = || async {
        sqlx::query_as::<_, (String, String, i64)>(
            "SELECT aggregate_type, event_type, count(*) FROM events GROUP BY 1, 2 ORDER BY 1, 2",
        )
        .fetch_all(&db.pool)
        .await
        .expect("the log's counts")
    };
    let projected = || async {
        execops::projections::event_counts::counts(&db.pool)
            .await
            .expect("the projection")
    };
    eventually(
        Duration::from_secs(10),
        "the projection caught up",
        || async { projected().await == truth().await },
    )
    .await;
    assert_eq!(
        projected().await,
        [
            ("Inbound".to_string(), "Received".to_string(), 120),
            ("Proposal".to_string(), "Drafted".to_string(), 45)
        ]
    );
    let _ = stop.send(true);
    let _ = task.await;
}

#[tokio::test]
async fn the_proposals_projection_rebuilt_from_the_log_equals_the_live_one() {
    use crate::common::TestApp;
    use crate::webhooks::{configured, fixtures, post};
    use execops::send::prepare;

    let app = TestApp::spawn_with(configured()).await;
    for path in fixtures() {
        let delivery = prepare(
            &path,
            &configured(),
            &format!("http://{}", app.addr),
            chrono::Utc::now(),
        )
        .expect("signs");
        post(&app, &delivery).await;
    }
    crate::policies::settle(&app).await;
    let pool = app.store.pool().clone();
    let snapshot = || async {
        sqlx::query_as::<_, (String, String, String, i32, serde_json::Value)>(
            "SELECT id, status, title, score, action FROM proposal_summaries ORDER BY id",
        )
        .fetch_all(&pool)
        .await
        .expect("rows")
    };
    let live = snapshot().await;
    assert!(live.len() >= 9);
    app.stop().await;

    let mut tx = pool.begin().await.expect("a transaction");
    sqlx::query("DELETE FROM proposal_summaries")
        .execute(&mut *tx)
        .await
        .expect("thrown away");
    sqlx::query("DELETE FROM subscription_checkpoints WHERE name = 'proposals'")
        .execute(&mut *tx)
        .await
        .expect("from the start");
    tx.commit().await.expect("committed");
    let app = TestApp::spawn_on(pool.clone(), configured()).await;
    crate::policies::settle(&app).await;
    assert_eq!(snapshot().await, live);
    app.stop().await;
}
