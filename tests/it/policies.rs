//! Signals to proposals, end to end: each fixture is sent signed through the webhook, the
//! router drafts what the policies call for, and the projections show it.

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use execops::projections::proposals::{from_signal, todays_moves, Summary};
use execops::send::prepare;
use execops::store::subscription::backlog;
use serde_json::Value;

use crate::common::{eventually, TestApp};
use crate::webhooks::{configured, fixtures, post};

/// Waits until the router and the projections have applied everything in the log.
pub async fn settle(app: &TestApp) {
    let pool = app.store.pool();
    let idle = || async {
        for name in ["router", "proposals"] {
            match backlog(pool, name).await {
                Ok(b) if b.events == 0 => {}
                _ => return false,
            }
        }
        true
    };
    eventually(Duration::from_secs(20), "the router and projections idle", || async {
        idle().await && {
            tokio::time::sleep(Duration::from_millis(50)).await;
            idle().await
        }
    })
    .await;
}

async fn send(app: &TestApp, path: &Path) -> Value {
    let delivery = prepare(path, &configured(), &format!("http://{}", app.addr), Utc::now())
        .expect("signs");
    let (status, body) = post(app, &delivery).await;
    assert_eq!(status, 200, "{}: {body}", path.display());
    body
}

fn describe(p: &Summary) -> String {
    format!(
        "{} | {} | {} | {} | {}",
        p.title,
        p.action_type,
        p.score,
        p.urgency,
        p.drivers
            .as_array()
            .map(|d| d.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "))
            .unwrap_or_default()
    )
}

#[tokio::test]
async fn every_fixture_drafts_exactly_the_proposals_its_policies_call_for() {
    let app = TestApp::spawn_with(configured()).await;
    let mut got = Vec::new();
    for path in fixtures() {
        let body = send(&app, &path).await;
        settle(&app).await;
        let id = body["id"]
            .as_str()
            .map(str::to_string)
            .or_else(|| body["events"][0]["id"].as_str().map(str::to_string))
            .expect("an inbound id");
        let name = path
            .strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures"))
            .unwrap_or(&path)
            .display()
            .to_string();
        for proposal in from_signal(app.store.pool(), &id).await.expect("proposals") {
            got.push(format!("{name} => {}", describe(&proposal)));
        }
    }
    let expected = include_str!("policies.expected.txt")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>();
    assert_eq!(got, expected, "\n--- got ---\n{}\n", got.join("\n"));
    app.stop().await;
}
