//! The subscription runner against a real Postgres: commit-safe order across a gap,
//! exactly-once under concurrent writers, resume after a kill, and one active runner per
//! subscription.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use execops::commands::Store;
use execops::domain::{
    payload_hash, Decision, ProposalCommand, ProposalDraft, ProposalId, Role, Urgency, Vertical,
};
use execops::store::log::StoredEvent;
use execops::store::subscription::{
    HandlerError, Registry, Runner, RunnerOptions, RunnerStatus, Subscriber,
};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::common::{count, eventually, receive, store};

/// Records every event it is handed, in the order it is handed them. The primary key makes
/// a repeated delivery fail loudly instead of passing unnoticed.
struct Recorder {
    name: &'static str,
    delay: Option<Duration>,
}

impl Subscriber for Recorder {
    fn name(&self) -> &str {
        self.name
    }

    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), HandlerError> {
        if let Some(delay) = self.delay {
            tokio::time::sleep(delay).await;
        }
        sqlx::query(
            "INSERT INTO seen (subscription, position, aggregate_id, sequence) VALUES ($1, $2, $3, $4)",
        )
        .bind(self.name)
        .bind(event.log.position)
        .bind(&event.aggregate_id)
        .bind(event.sequence)
        .execute(conn)
        .await?;
        Ok(())
    }
}

async fn create_seen(pool: &PgPool) {
    sqlx::query(
        "CREATE TABLE seen (order_seen bigint GENERATED ALWAYS AS IDENTITY, subscription text NOT NULL, \
         position bigint NOT NULL, aggregate_id text NOT NULL, sequence bigint NOT NULL, \
         PRIMARY KEY (subscription, position))",
    )
    .execute(pool)
    .await
    .expect("the seen table");
}

fn fast() -> RunnerOptions {
    RunnerOptions {
        batch_size: 100,
        poll_interval: Duration::from_millis(200),
        standby_interval: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        gather: Duration::from_millis(5),
    }
}

struct Running {
    status: Arc<RunnerStatus>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

fn start(pool: &PgPool, recorder: Recorder, options: RunnerOptions) -> Running {
    let runner = Runner::new(pool.clone(), recorder, options, &Registry::default());
    let status = runner.status();
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(runner.run(stop_rx));
    Running { status, stop, task }
}

async fn seen(pool: &PgPool) -> i64 {
    count(pool, "SELECT count(*) FROM seen").await
}

/// Waits for a runner's counter to reach `expected`, then holds it to exactly that: the
/// counter moves just after the commit whose rows a test has already seen.
async fn counted(status: &RunnerStatus, expected: u64) {
    eventually(Duration::from_secs(5), "the runner's count", || async {
        status.processed() >= expected
    })
    .await;
    assert_eq!(status.processed(), expected, "events counted once each");
}

async fn seen_positions(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT position FROM seen ORDER BY order_seen")
        .fetch_all(pool)
        .await
        .expect("seen positions")
}

#[tokio::test]
async fn a_subscriber_does_not_pass_an_event_whose_transaction_is_still_open() {
    let (db, store) = store().await;
    create_seen(&db.pool).await;
    let running = start(
        &db.pool,
        Recorder {
            name: "gap",
            delay: None,
        },
        fast(),
    );

    // One append's transaction is held open...
    let mut held = db.pool.begin().await.expect("a transaction");
    let held_position: i64 = sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('Inbound', 'held:1', 1, 'Received', '1.0', '{}', '{}') RETURNING position",
    )
    .fetch_one(&mut *held)
    .await
    .expect("the held insert");
    // ...while later appends commit.
    for i in 0..5 {
        receive(&store, &format!("evt_after_{i}")).await;
    }
    let later: Vec<i64> =
        sqlx::query_scalar("SELECT position FROM events WHERE aggregate_id <> 'held:1'")
            .fetch_all(&db.pool)
            .await
            .expect("positions");
    assert!(
        later.iter().all(|p| *p > held_position),
        "the held event has the lowest position"
    );

    // Give the subscriber every chance to run ahead: notifications and several polls.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        seen(&db.pool).await,
        0,
        "nothing may be delivered past the held event"
    );

    held.commit().await.expect("commit the held append");
    eventually(Duration::from_secs(10), "all six events", || async {
        seen(&db.pool).await == 6
    })
    .await;
    let order = seen_positions(&db.pool).await;
    assert_eq!(
        order[0], held_position,
        "the held event comes first once committed"
    );
    assert_eq!(running.status.failures(), 0);
    let _ = running.stop.send(true);
    let _ = running.task.await;
}

fn draft(id: ProposalId, n: usize) -> ProposalDraft {
    ProposalDraft {
        id,
        title: format!("Proposal {n}"),
        vertical: Vertical::Ops,
        action_type: "slack.post_message".into(),
        action: json!({"channel": "C1", "text": format!("hello {n}")}),
        reasoning: "a test".into(),
        drivers: vec![],
        score: 50,
        urgency: Urgency::Medium,
        due_by: None,
        owner: None,
        inbound_ids: vec![],
        subject_key: format!("test:{n}"),
        requested_by: None,
        outcome_key: None,
        terms: Default::default(),
    }
}

/// Four events on one proposal, each its own command and transaction.
async fn run_lifecycle(store: &Store, writer: usize, n: usize) {
    let id = ProposalId::derive(&format!("test:{writer}:{n}"), "rule");
    let d = draft(id, n);
    let hash = payload_hash(&d.action);
    let key = id.to_string();
    let commands = [
        ProposalCommand::Draft(d),
        ProposalCommand::Approve(Decision {
            actor: "a@example.com".into(),
            role: Role::Approver,
            comment: None,
            payload_hash: hash,
            identities: vec![],
            at: Some(chrono::Utc::now()),
        }),
        ProposalCommand::StartExecution,
        ProposalCommand::RecordSuccess {
            attempt: 1,
            result: json!({}),
            at: chrono::Utc::now(),
        },
    ];
    for command in commands {
        store
            .proposal(&key, command, HashMap::new())
            .await
            .expect("the command is recorded");
    }
}

#[tokio::test]
async fn concurrent_writers_are_seen_exactly_once_and_in_aggregate_order() {
    let (db, store) = store().await;
    create_seen(&db.pool).await;
    let running = start(
        &db.pool,
        Recorder {
            name: "many",
            delay: None,
        },
        fast(),
    );

    const WRITERS: usize = 8;
    const PROPOSALS: usize = 500; // four events each: 2,000 events a writer
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for n in 0..PROPOSALS {
                run_lifecycle(&store, writer, n).await;
            }
        }));
    }
    for writer in writers {
        writer.await.expect("a writer finishes");
    }
    let total = (WRITERS * PROPOSALS * 4) as i64;
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, total);
    eventually(Duration::from_secs(60), "every event seen", || async {
        seen(&db.pool).await == total
    })
    .await;
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM events e WHERE NOT EXISTS \
             (SELECT 1 FROM seen s WHERE s.position = e.position)"
        )
        .await,
        0,
        "every stored event was delivered"
    );
    let out_of_order = count(
        &db.pool,
        "SELECT count(*) FROM (SELECT aggregate_id, array_agg(sequence ORDER BY order_seen) AS seqs \
         FROM seen GROUP BY aggregate_id) a WHERE seqs <> ARRAY[1,2,3,4]::bigint[]",
    )
    .await;
    assert_eq!(
        out_of_order, 0,
        "each proposal's events arrive in sequence order"
    );
    assert_eq!(running.status.failures(), 0);
    counted(&running.status, total as u64).await;
    let _ = running.stop.send(true);
    let _ = running.task.await;
}

async fn append_raw(pool: &PgPool, transactions: usize, per_transaction: usize) {
    for t in 0..transactions {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             SELECT 'Test', 'raw:' || $1 || ':' || gen_random_uuid(), 1, 'Tested', '1.0', '{}', '{}' \
             FROM generate_series(1, $2) g",
        )
        .bind(t as i64)
        .bind(per_transaction as i32)
        .execute(pool)
        .await
        .expect("raw append");
    }
}

#[tokio::test]
async fn a_subscriber_killed_mid_stream_resumes_from_its_checkpoint() {
    let (db, _store) = store().await;
    create_seen(&db.pool).await;
    append_raw(&db.pool, 30, 100).await;
    let slow = RunnerOptions {
        batch_size: 50,
        ..fast()
    };
    let first = start(
        &db.pool,
        Recorder {
            name: "resume",
            delay: Some(Duration::from_micros(500)),
        },
        slow.clone(),
    );
    eventually(Duration::from_secs(30), "some progress", || async {
        seen(&db.pool).await >= 500
    })
    .await;
    // Killed without warning, most likely in the middle of a batch.
    first.task.abort();
    let _ = first.task.await;
    // Its session ends with its connection; a commit already sent may still land first.
    eventually(
        Duration::from_secs(10),
        "the killed runner's session gone",
        || async {
            count(
                &db.pool,
                "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
             WHERE l.locktype = 'advisory' AND d.datname = current_database()",
            )
            .await
                == 0
        },
    )
    .await;
    let at_kill = seen(&db.pool).await;
    assert!(at_kill < 3000, "killed mid-stream, after {at_kill} events");
    assert_eq!(at_kill % 50, 0, "only whole batches were committed");

    let second = start(
        &db.pool,
        Recorder {
            name: "resume",
            delay: None,
        },
        slow,
    );
    eventually(Duration::from_secs(30), "the rest", || async {
        seen(&db.pool).await == 3000
    })
    .await;
    assert_eq!(second.status.failures(), 0, "no event was delivered twice");
    counted(&second.status, (3000 - at_kill) as u64).await;
    let _ = second.stop.send(true);
    let _ = second.task.await;
}

#[tokio::test]
async fn only_one_runner_of_a_subscription_is_active_and_the_other_takes_over() {
    let (db, _store) = store().await;
    create_seen(&db.pool).await;
    let first = start(
        &db.pool,
        Recorder {
            name: "single",
            delay: None,
        },
        fast(),
    );
    eventually(
        Duration::from_secs(10),
        "the first runner active",
        || async { first.status.is_active() },
    )
    .await;
    let second = start(
        &db.pool,
        Recorder {
            name: "single",
            delay: None,
        },
        fast(),
    );

    append_raw(&db.pool, 10, 20).await;
    eventually(Duration::from_secs(10), "200 events seen", || async {
        seen(&db.pool).await == 200
    })
    .await;
    counted(&first.status, 200).await;
    assert_eq!(second.status.processed(), 0);
    assert!(!second.status.is_active(), "the second runner stands by");

    let _ = first.stop.send(true);
    let _ = first.task.await;
    eventually(
        Duration::from_secs(10),
        "the second runner takes over",
        || async { second.status.is_active() },
    )
    .await;
    append_raw(&db.pool, 5, 20).await;
    eventually(Duration::from_secs(10), "300 events seen", || async {
        seen(&db.pool).await == 300
    })
    .await;
    counted(&second.status, 100).await;
    assert_eq!(second.status.failures(), 0);
    let _ = second.stop.send(true);
    let _ = second.task.await;
}
