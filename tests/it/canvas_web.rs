//! The canvas's three doors (the page with its question box and CSV, the JSON API, the
//! command line) give the same numbers, refuse what they cannot read, and run nothing
//! beyond the whitelist.

use std::time::Duration;

use execops::domain::Role;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::api::person;
use crate::audit::{execops, projections_idle, stderr, stdout};
use crate::common::{config, count, TestApp};
use crate::pages::{page, sign_in};
use crate::webhooks::SECRETS;

/// An expense from the bank feed, signed and delivered.
pub async fn expense(
    app: &TestApp,
    id: &str,
    vendor: &str,
    amount: i64,
    currency: &str,
    date: &str,
) {
    crate::policies::send_changed(app, "std/bank/expense.recorded.json", |json| {
        json["data"]["id"] = json!(id);
        json["data"]["vendor"] = json!(vendor);
        json["data"]["amount"] = json!(amount);
        json["data"]["currency"] = json!(currency);
        json["data"]["date"] = json!(date);
        json["timestamp"] = json!(format!("{date}T09:00:00Z"));
    })
    .await;
}

/// Three vendors in two currencies, in one month of this year.
async fn spending(app: &TestApp) {
    for (id, vendor, amount, currency) in [
        ("exp_w1", "Amazon Web Services", 482_000, "usd"),
        ("exp_w2", "Amazon Web Services", 118_000, "usd"),
        ("exp_w3", "Figma", 45_000, "usd"),
        ("exp_w4", "Hetzner", 90_000, "eur"),
    ] {
        expense(app, id, vendor, amount, currency, "2026-03-10").await;
    }
    projections_idle(app.store.pool()).await;
}

const PERIOD: &str = "from=2026-03-01&to=2026-03-31";

/// The (vendor, money) pairs of a spend_by_vendor answer in JSON.
fn vendors(answer: &Value) -> Vec<(String, i64, String)> {
    answer["rows"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|row| {
            let cells = row.as_array()?;
            let vendor = cells.iter().find(|c| c["type"] == "text")?["value"]
                .as_str()?
                .to_string();
            let money = cells.iter().find(|c| c["type"] == "money")?;
            Some((
                vendor,
                money["minor"].as_i64()?,
                money["currency"].as_str()?.to_string(),
            ))
        })
        .collect()
}

#[tokio::test]
async fn the_page_the_api_and_the_command_line_give_the_same_numbers() {
    let app = TestApp::spawn_with(crate::webhooks::configured()).await;
    spending(&app).await;
    let token = person(&app, "viewer@example.com", Role::Viewer).await;

    let api: Value = app
        .client
        .get(app.url(&format!("/api/v1/canvas/spend_by_vendor?{PERIOD}")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("JSON");
    let mut got = vendors(&api);
    got.sort();
    // Worked out by hand: AWS 4,820.00 + 1,180.00 = 6,000.00 USD; Figma 450.00 USD;
    // Hetzner 900.00 EUR, kept apart from the dollars.
    assert_eq!(
        got,
        [
            (
                "Amazon Web Services".to_string(),
                600_000,
                "usd".to_string()
            ),
            ("Figma".to_string(), 45_000, "usd".to_string()),
            ("Hetzner".to_string(), 90_000, "eur".to_string()),
        ],
        "{api:#}"
    );

    let cli = execops(
        &app.database_url,
        &[
            "canvas",
            "spend_by_vendor",
            "--from",
            "2026-03-01",
            "--to",
            "2026-03-31",
            "--json",
        ],
    );
    assert!(cli.status.success(), "{}", stderr(&cli));
    let cli: Value = serde_json::from_slice(&cli.stdout).expect("JSON");
    assert_eq!(cli["rows"], api["rows"], "the command line agrees");
    let text = execops(
        &app.database_url,
        &[
            "canvas",
            "spend_by_vendor",
            "--from",
            "2026-03-01",
            "--to",
            "2026-03-31",
        ],
    );
    assert!(stdout(&text).contains("$6,000.00"), "{}", stdout(&text));

    let cookie = sign_in(&app, "viewer@example.com").await;
    let (status, html, _) = page(
        &app,
        Some(&cookie),
        "/canvas?q=who+are+we+spending+more+on+between+2026-03-01+and+2026-03-31",
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("Understood as <code>spend_by_vendor from 2026-03-01 to 2026-03-31"),
        "{html}"
    );
    assert!(
        html.contains("$6,000.00") && html.contains("€900.00"),
        "{html}"
    );
    assert!(
        html.contains("<svg") && html.contains("<rect"),
        "a bar chart: {html}"
    );
    let (status, csv, headers) = page(
        &app,
        Some(&cookie),
        &format!("/canvas?query=spend_by_vendor&{PERIOD}&format=csv"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(headers["content-type"]
        .to_str()
        .unwrap_or_default()
        .starts_with("text/csv"));
    assert!(
        csv.contains("\"Amazon Web Services\"") && csv.contains("\"6000.00\""),
        "{csv}"
    );
    app.stop().await;
}

#[tokio::test]
async fn hostile_or_absurd_input_gets_a_clear_error_or_a_safe_answer_and_runs_nothing_else() {
    let app = TestApp::spawn_with(crate::webhooks::configured()).await;
    spending(&app).await;
    let token = person(&app, "viewer@example.com", Role::Viewer).await;
    let events = count(app.store.pool(), "SELECT count(*) FROM events").await;
    // (path, status, a phrase the answer must hold)
    let api_cases: &[(&str, u16, &str)] = &[
        ("/api/v1/canvas/users", 404, "no canvas query \\\"users\\\""),
        ("/api/v1/canvas/spend_by_vendor;DROP%20TABLE%20events", 404, "no canvas query"),
        ("/api/v1/canvas/burn?from=2026-13-01", 400, "from: \\\"2026-13-01\\\" is not a date"),
        ("/api/v1/canvas/burn?from=2026-03-01%27%3B%20DROP%20TABLE%20events%3B--", 400, "is not a date"),
        ("/api/v1/canvas/burn?from=1900-01-01", 400, "outside 2000-01-01 to 2099-12-31"),
        ("/api/v1/canvas/burn?from=2026-05-01&to=2026-01-01", 400, "is after"),
        ("/api/v1/canvas/spend_by_vendor?top=1000000000000", 400, "top:"),
        ("/api/v1/canvas/spend_by_vendor?top=-3", 400, "top:"),
        ("/api/v1/canvas/mrr?currency=US%27%20OR%201%3D1", 400, "currency:"),
        ("/api/v1/canvas/burn?granularity=minute", 400, "granularity:"),
        ("/api/v1/canvas/spend_by_vendor?vendor=%27%3B%20DROP%20TABLE%20events%3B%20--&from=2026-03-01&to=2026-03-31", 200, "\"rows\":[]"),
        ("/api/v1/canvas/spend_by_vendor?vendor=%25&from=2026-03-01&to=2026-03-31", 200, "\"rows\":[]"),
        ("/api/v1/canvas/spend_by_vendor?vendor=figma&from=2026-03-01&to=2026-03-31", 200, "Figma"),
    ];
    for (url, status, phrase) in api_cases {
        let response = app
            .client
            .get(app.url(url))
            .bearer_auth(&token)
            .send()
            .await
            .expect("answers");
        let got = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        assert_eq!(got, *status, "{url}: {body}");
        assert!(body.contains(phrase), "{url}: {phrase:?} not in {body}");
    }
    let anonymous = app
        .client
        .get(app.url("/api/v1/canvas/burn"))
        .send()
        .await
        .expect("answers");
    assert_eq!(anonymous.status(), 401);

    let cookie = sign_in(&app, "viewer@example.com").await;
    let page_cases: &[(&str, u16, &str)] = &[
        ("/canvas", 200, "What the canvas answers"),
        ("/canvas?q=", 200, "What the canvas answers"),
        (
            "/canvas?q=what+is+the+meaning+of+life",
            400,
            "not one of the questions the canvas answers",
        ),
        (
            "/canvas?q=%27%3B+DROP+TABLE+events%3B+--",
            400,
            "not one of the questions the canvas answers",
        ),
        (
            "/canvas?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E+runway",
            200,
            "Understood as <code>runway",
        ),
        (
            "/canvas?q=spend+top+999",
            400,
            "top: &#34;999&#34; is not a whole number from 1 to 50",
        ),
        ("/canvas?query=pg_sleep", 400, "there is no query"),
        (
            "/canvas?query=burn&from=yesterday",
            400,
            "from: &#34;yesterday&#34; is not a date",
        ),
    ];
    for (url, status, phrase) in page_cases {
        let (got, html, _) = page(&app, Some(&cookie), url).await;
        assert_eq!(got, *status, "{url}: {html}");
        assert!(html.contains(phrase), "{url}: {phrase:?} not in {html}");
        assert!(!html.contains("<script>alert"), "{url} echoes a script");
    }
    let long = format!("/canvas?q={}", "runway+".repeat(80));
    let (got, html, _) = page(&app, Some(&cookie), &long).await;
    assert_eq!(
        (got, html.contains("longer than 300 characters")),
        (400, true)
    );

    let cli = execops(&app.database_url, &["canvas", "users"]);
    assert!(!cli.status.success());
    assert!(
        stderr(&cli).contains("no canvas query \"users\"; the queries are runway, burn"),
        "{}",
        stderr(&cli)
    );
    let cli = execops(&app.database_url, &["canvas", "burn", "--top", "0"]);
    assert!(!cli.status.success());
    assert!(stderr(&cli).contains("top: \"0\""), "{}", stderr(&cli));

    assert_eq!(
        count(app.store.pool(), "SELECT count(*) FROM events").await,
        events,
        "nothing was written"
    );
    app.stop().await;
}

/// An OpenAI-compatible server that answers every chat completion with `content`.
async fn model_answering(content: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "choices": [{"message": {"role": "assistant", "content": content}}]
        })))
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn a_language_model_may_choose_among_the_same_queries_and_nothing_else() {
    for (reply, understood, by_model) in [
        (
            r#"{"query": "spend_by_vendor", "from": "2026-03-01", "to": "2026-03-31", "top": 1}"#,
            "spend_by_vendor from 2026-03-01 to 2026-03-31 by month, top 1",
            true,
        ),
        (
            r#"{"query": "DROP TABLE events", "sql": "DELETE FROM events"}"#,
            "spend_by_vendor from",
            false,
        ),
        (
            r#"{"query": "burn", "from": "'; DELETE FROM events; --"}"#,
            "spend_by_vendor from",
            false,
        ),
    ] {
        let model = model_answering(reply).await;
        let url = format!("{}/v1/chat/completions", model.uri());
        let mut pairs: Vec<(&str, &str)> = SECRETS.to_vec();
        pairs.push(("EXECOPS_LLM_URL", &url));
        pairs.push(("EXECOPS_LLM_TIMEOUT_MS", "10000"));
        let app = TestApp::spawn_with(config(&pairs)).await;
        spending(&app).await;
        person(&app, "viewer@example.com", Role::Viewer).await;
        let events = count(app.store.pool(), "SELECT count(*) FROM events").await;
        let cookie = sign_in(&app, "viewer@example.com").await;
        let (status, html, _) =
            page(&app, Some(&cookie), "/canvas?q=who+are+we+spending+more+on").await;
        assert_eq!(status, 200, "{reply}: {html}");
        assert!(html.contains(understood), "{reply}: {html}");
        assert_eq!(
            html.contains("read by the language model"),
            by_model,
            "{reply}"
        );
        if by_model {
            assert!(
                html.contains("Amazon Web Services") && !html.contains("Figma"),
                "top 1"
            );
        }
        let asked = model.received_requests().await.unwrap_or_default();
        assert_eq!(asked.len(), 1, "the model was asked once");
        let prompt = String::from_utf8_lossy(&asked[0].body).to_string();
        assert!(
            prompt.contains("spend_by_vendor") && prompt.contains("execution_success"),
            "it offers the whitelist"
        );
        assert_eq!(
            count(app.store.pool(), "SELECT count(*) FROM events").await,
            events
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        app.stop().await;
    }
}
