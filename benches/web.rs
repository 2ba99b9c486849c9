//! `just bench-web`: with N pending proposals (default 10,000; BENCH_PROPOSALS), the
//! latency of `/inbox`, `/queue` and `/api/v1/proposals`, one request at a time over
//! loopback (so no queueing: what is measured is the server's time plus a loopback round
//! trip). It measures at a tenth of N too, to show that pagination keeps it flat.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use execops::app::App;
use execops::auth::{hash_password, new_token};
use execops::config::Config;
use execops::domain::user::{Email, UserCommand};
use execops::domain::{ProposalCommand, ProposalDraft, ProposalId, Role, Urgency, Vertical};
use execops::store::testing::BenchDatabase;
use execops::store::{connect, MIGRATOR};
use serde_json::json;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

async fn draft(app: &App, from: usize, to: usize) -> anyhow::Result<()> {
    let store = app.state.store.clone();
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in (from + writer..to).step_by(8) {
                let id = ProposalId::derive(&format!("bench:web:{i}"), "bench");
                let draft = ProposalDraft {
                    id,
                    title: format!("Email customer {i} a card-update link"),
                    vertical: [Vertical::Money, Vertical::Engineering, Vertical::Customer][i % 3],
                    action_type: "email.send".into(),
                    action: json!({"to": {"email": format!("c{i}@example.com")}, "template": "card_update", "body": "Please update your card."}),
                    reasoning: format!("Invoice in_{i} failed to collect."),
                    drivers: vec!["because $10.00 is unpaid".into(), "because it is one email".into()],
                    score: (i % 100) as u8,
                    urgency: [Urgency::Low, Urgency::Medium, Urgency::High, Urgency::Critical][i % 4],
                    due_by: Some(Utc::now() + chrono::Duration::hours((i % 72) as i64)),
                    owner: None,
                    inbound_ids: vec![format!("stripe:evt_{i}")],
                    subject_key: format!("bench:{i}"),
                    requested_by: None,
                    outcome_key: None,
                    terms: Default::default(),
                };
                store
                    .proposal(&id.to_string(), ProposalCommand::Draft(draft), HashMap::new())
                    .await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    // Wait for the projection.
    let pool = store.pool();
    loop {
        let projected: i64 = sqlx::query_scalar("SELECT count(*) FROM proposal_summaries")
            .fetch_one(pool)
            .await?;
        if projected as usize >= to {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn measure(
    client: &reqwest::Client,
    url: &str,
    auth: (&str, &str),
) -> anyhow::Result<(Duration, Duration, usize)> {
    let mut latencies = Vec::new();
    let mut bytes = 0;
    for round in 0..320 {
        let t = Instant::now();
        let response = client.get(url).header(auth.0, auth.1).send().await?;
        anyhow::ensure!(
            response.status().is_success(),
            "{url}: {}",
            response.status()
        );
        let body = response.bytes().await?;
        if round >= 20 {
            latencies.push(t.elapsed());
            bytes = body.len();
        }
    }
    latencies.sort();
    Ok((
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        bytes,
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let proposals: usize = std::env::var("BENCH_PROPOSALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let database = BenchDatabase::start("bench-web").await?;
    let pool = connect(&database.url, 20).await?;
    MIGRATOR.run(&pool).await?;
    let config = Config::from_lookup(|_| None)?;
    let app = App::start(pool.clone(), &config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let router = app.router();
    tokio::spawn(async move { axum::serve(listener, router).await });

    let email = Email::parse("bench@example.com")?;
    app.state
        .store
        .user(
            &email,
            UserCommand::Add {
                email: email.clone(),
                role: Role::Approver,
                password_hash: hash_password("a long enough password")
                    .map_err(anyhow::Error::msg)?,
                by: "bench".into(),
            },
            HashMap::new(),
        )
        .await?;
    let (token_id, token, token_hash) = new_token();
    app.state
        .store
        .user(
            &email,
            UserCommand::IssueToken {
                token_id,
                token_hash,
                by: "bench".into(),
            },
            HashMap::new(),
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let login = client
        .post(format!("{base}/login"))
        .form(&[
            ("email", "bench@example.com"),
            ("password", "a long enough password"),
        ])
        .send()
        .await?;
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .ok_or_else(|| anyhow::anyhow!("no session"))?
        .to_string();
    let bearer = format!("Bearer {token}");

    println!("bench-web: one request at a time over loopback, 300 measured after 20 warm-up");
    let mut drafted = 0;
    for count in [proposals / 10, proposals] {
        let started = Instant::now();
        draft(&app, drafted, count).await?;
        drafted = count;
        println!(
            "{count} pending proposals (drafted in {:.1} s)",
            started.elapsed().as_secs_f64()
        );
        for (path, auth) in [
            ("/inbox", ("cookie", cookie.as_str())),
            ("/queue", ("cookie", cookie.as_str())),
            ("/api/v1/proposals", ("authorization", bearer.as_str())),
        ] {
            let (p50, p99, bytes) = measure(&client, &format!("{base}{path}"), auth).await?;
            println!(
                "  {path:<20} p50 {:>6.2} ms  p99 {:>6.2} ms  ({} KiB a page)",
                p50.as_secs_f64() * 1000.0,
                p99.as_secs_f64() * 1000.0,
                bytes / 1024
            );
        }
    }
    app.stop().await;
    pool.close().await;
    database.close().await?;
    Ok(())
}
