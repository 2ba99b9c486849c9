//! `just bench-execute`: the time from a recorded approval to the recorded
//! `ExecutionSucceeded`, through the whole path (the `executor` subscription, the worker's
//! re-read of the proposal and the guardrails, the Slack adapter against a local Slack,
//! the result's append). First one approval at a time (BENCH_SEQUENTIAL, default 200), then
//! a burst of approvals from 8 writers at once (BENCH_APPROVALS, default 2,000). Times are
//! the events' own `recorded_at`, so the benchmark's waiting does not count.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use execops::app::App;
use execops::commands::Store;
use execops::config::Config;
use execops::domain::{
    payload_hash, Decision, ProposalCommand, ProposalDraft, ProposalId, Role, Urgency, Vertical,
};
use execops::store::testing::BenchDatabase;
use execops::store::{connect, MIGRATOR};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

async fn draft_and_approve(store: &Store, name: &str) -> anyhow::Result<String> {
    let id = ProposalId::derive(name, "bench.execute");
    let action = json!({"channel": "#bench", "text": format!("proposal {name}")});
    let draft = ProposalDraft {
        id,
        title: name.into(),
        vertical: Vertical::Ops,
        action_type: "slack.post_message".into(),
        action: action.clone(),
        reasoning: "a benchmark".into(),
        drivers: vec![],
        score: 50,
        urgency: Urgency::High,
        due_by: None,
        owner: None,
        inbound_ids: vec![],
        subject_key: name.into(),
        requested_by: None,
        outcome_key: None,
        terms: Default::default(),
    };
    let id = id.to_string();
    store
        .proposal(&id, ProposalCommand::Draft(draft), HashMap::new())
        .await?;
    let decision = Decision {
        actor: "bench@example.com".into(),
        role: Role::Approver,
        comment: None,
        payload_hash: payload_hash(&action),
        identities: vec![],
        at: Some(chrono::Utc::now()),
    };
    store
        .proposal(&id, ProposalCommand::Approve(decision), HashMap::new())
        .await?;
    Ok(id)
}

/// Approval-to-success latencies in milliseconds, once every one of `ids` has succeeded.
async fn latencies(pool: &sqlx::PgPool, ids: &[String]) -> anyhow::Result<Vec<f64>> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE event_type = 'ExecutionSucceeded' \
             AND aggregate_id = ANY($1)",
        )
        .bind(ids)
        .fetch_one(pool)
        .await?;
        if done as usize == ids.len() {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {done} of {} ran",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut ms: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM s.recorded_at - a.recorded_at)::float8 * 1000 \
         FROM events a JOIN events s ON s.aggregate_id = a.aggregate_id \
         WHERE a.event_type = 'Approved' AND s.event_type = 'ExecutionSucceeded' \
           AND a.aggregate_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    ms.sort_by(|a, b| a.total_cmp(b));
    Ok(ms)
}

fn report(label: &str, ms: &[f64], elapsed: Option<Duration>) {
    let rate = elapsed
        .map(|e| format!(", {:.0} executions/s", ms.len() as f64 / e.as_secs_f64()))
        .unwrap_or_default();
    println!(
        "{label}: {} executions, approval to ExecutionSucceeded p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms{rate}",
        ms.len(),
        percentile(ms, 0.50),
        percentile(ms, 0.90),
        percentile(ms, 0.99),
        percentile(ms, 1.0),
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = |key: &str, default: usize| {
        std::env::var(key)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let sequential = env("BENCH_SEQUENTIAL", 200);
    let burst = env("BENCH_APPROVALS", 2_000);
    let slack = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/chat.postMessage"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"ok": true, "channel": "C1", "ts": "1.1"})),
        )
        .mount(&slack)
        .await;
    let database = BenchDatabase::start("bench-execute").await?;
    println!("Postgres: {}", database.description);
    let pool = connect(&database.url, 20).await?;
    MIGRATOR.run(&pool).await?;
    let settings = HashMap::from([
        ("SLACK_BOT_TOKEN", "xoxb-bench".to_string()),
        ("SLACK_API_BASE", slack.uri()),
        ("EXECOPS_RATE_LIMIT_PER_HOUR", "100000000".to_string()),
    ]);
    let config = Config::from_lookup(|key| settings.get(key).cloned())?;
    let app = App::start(pool.clone(), &config);
    let store = app.state.store.clone();

    let mut ids = Vec::new();
    for i in 0..sequential {
        let id = draft_and_approve(&store, &format!("bench:seq:{i}")).await?;
        latencies(&pool, std::slice::from_ref(&id)).await?;
        ids.push(id);
    }
    report("one at a time", &latencies(&pool, &ids).await?, None);

    let started = Instant::now();
    let mut writers = Vec::new();
    for writer in 0..8 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in (writer..burst).step_by(8) {
                ids.push(draft_and_approve(&store, &format!("bench:burst:{i}")).await?);
            }
            anyhow::Ok(ids)
        }));
    }
    let mut ids = Vec::new();
    for writer in writers {
        ids.extend(writer.await??);
    }
    let ms = latencies(&pool, &ids).await?;
    report("burst from 8 writers", &ms, Some(started.elapsed()));
    app.stop().await;
    pool.close().await;
    database.close().await?;
    Ok(())
}
