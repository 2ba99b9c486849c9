//! The pages in a real browser: headless Chromium driven over WebDriver (Debian's
//! `chromium` and `chromium-driver`, which `.ci/run` installs). Screenshots of every page
//! are saved under `target/screenshots/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use execops::domain::Role;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::api::person;
use crate::common::{count, eventually, TestApp};
use crate::policies::settle;
use crate::webhooks::{configured, send_fixture};

const PASSWORD: &str = "a long enough password";

/// A chromedriver of our own, stopped when dropped.
struct Driver {
    child: Child,
    port: u16,
    profile: PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn driver() -> Driver {
    let chromedriver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("chromedriver is not installed: apt-get install chromium chromium-driver (.ci/run does)");
    let port = crate::common::free_port();
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let profile =
        std::env::temp_dir().join(format!("execops-chromium-{}-{port}", std::process::id()));
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Driver {
        child,
        port,
        profile,
    }
}

async fn browser(driver: &Driver, name: &str) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1200,900",
                format!("--user-data-dir={}-{name}", driver.profile.display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a browser session")
}

async fn sign_in(client: &Client, app: &TestApp, email: &str) {
    client
        .goto(&app.url("/login"))
        .await
        .expect("the sign-in page");
    client
        .find(Locator::Css("input[name=email]"))
        .await
        .expect("email")
        .send_keys(email)
        .await
        .expect("typed");
    client
        .find(Locator::Css("input[name=password]"))
        .await
        .expect("password")
        .send_keys(PASSWORD)
        .await
        .expect("typed");
    client
        .find(Locator::Css("form button[type=submit]"))
        .await
        .expect("button")
        .click()
        .await
        .expect("clicked");
    client
        .wait()
        .for_url(&url::Url::parse(&app.url("/inbox")).expect("url"))
        .await
        .expect("the inbox");
    live(client).await;
}

/// Waits until the inbox's script has caught its list up and follows the stream: from then
/// on, whatever is recorded reaches the list, and only the stream's events replace it.
async fn live(client: &Client) {
    client
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("body[data-live]"))
        .await
        .expect("the inbox goes live");
}

/// Clicks the first element matching `css`, found afresh if the live list replaced it
/// between finding and clicking.
async fn click(client: &Client, css: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let element = client.find(Locator::Css(css)).await.expect(css);
        match element.click().await {
            Ok(_) => return,
            Err(e) if e.is_stale_element_reference() && Instant::now() < deadline => {}
            Err(e) => panic!("clicking {css}: {e}"),
        }
    }
}

/// The text of the first element matching `css` once it contains `wanted`. The inbox's
/// list is replaced whenever proposals change, so each try finds the element afresh.
async fn text_of(client: &Client, css: &str, wanted: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(element) = client.find(Locator::Css(css)).await {
            if let Ok(text) = element.text().await {
                if text.contains(wanted) {
                    return text;
                }
                last = text;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css} never showed {wanted:?}; last: {last:?}");
}

async fn screenshot(client: &Client, name: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).expect("a screenshot directory");
    let png = client.screenshot().await.expect("a screenshot");
    std::fs::write(dir.join(format!("{name}.png")), png).expect("saved");
}

#[tokio::test]
async fn an_approver_sees_a_proposal_arrive_live_and_approves_it_with_the_keyboard() {
    let app = TestApp::spawn_with(configured()).await;
    person(&app, "approver@example.com", Role::Approver).await;
    let driver = driver();
    let client = browser(&driver, "approver").await;
    sign_in(&client, &app, "approver@example.com").await;
    let empty = client
        .find(Locator::Css("#list"))
        .await
        .expect("the list")
        .text()
        .await
        .expect("text");
    assert!(empty.contains("Nothing is waiting"), "{empty}");

    // A dispute arrives while the page is open: it appears without a reload.
    send_fixture(&app, "stripe/charge.dispute.created.json").await;
    let title = text_of(&client, "#list article.card h2", "Prepare dispute").await;
    assert_eq!(
        title, "Prepare dispute evidence for $10.00",
        "the proposal arrived live"
    );
    // The card shows whom the action reaches and its first lines without a click.
    for (css, expected) in [
        ("#list article.card .glance .to", "Slack "),
        ("#list article.card .action .lines", "Dispute "),
    ] {
        let element = client.find(Locator::Css(css)).await.expect(css);
        assert!(
            element.is_displayed().await.expect("displayed?"),
            "{css} shows"
        );
        let text = element.text().await.expect("text");
        assert!(text.starts_with(expected), "{css}: {text}");
    }
    screenshot(&client, "inbox").await;

    // `a` approves the selected card.
    client
        .find(Locator::Css("body"))
        .await
        .expect("the page")
        .send_keys("a")
        .await
        .expect("a pressed");
    // The card goes: swapped for a confirmation, then the live list catches up.
    text_of(&client, "#list", "Nothing is waiting").await;
    // htmx did it in place: no navigation to the no-JavaScript redirect.
    let loaded = client
        .execute("return typeof htmx", vec![])
        .await
        .expect("a script");
    assert_eq!(loaded, json!("object"), "htmx is loaded");
    let url = client.current_url().await.expect("a url");
    assert_eq!(url.path(), "/inbox");
    assert_eq!(
        url.query(),
        None,
        "the card was swapped in place, not the page reloaded"
    );
    settle(&app).await;
    client.refresh().await.expect("reloaded");
    live(&client).await;
    let list = client
        .find(Locator::Css("#list"))
        .await
        .expect("the list")
        .text()
        .await
        .expect("text");
    assert!(
        list.contains("Nothing is waiting"),
        "it left the inbox: {list}"
    );

    crate::policies::settle(&app).await;
    client
        .goto(&app.url("/audit"))
        .await
        .expect("the audit page");
    let audit = client
        .find(Locator::Css("table.audit"))
        .await
        .expect("a table")
        .text()
        .await
        .expect("text");
    assert!(audit.contains("approver@example.com Approved"), "{audit}");
    screenshot(&client, "audit").await;

    send_fixture(&app, "stripe/invoice.payment_failed.json").await;
    send_fixture(&app, "github/workflow_run.completed.failure.json").await;
    settle(&app).await;
    client.goto(&app.url("/queue")).await.expect("the queue");
    screenshot(&client, "queue").await;
    let id: String =
        sqlx::query_scalar("SELECT aggregate_id FROM events WHERE event_type = 'Approved'")
            .fetch_one(app.store.pool())
            .await
            .expect("the approved proposal");
    client
        .goto(&app.url(&format!("/proposals/{id}")))
        .await
        .expect("the proposal");
    let timeline = client
        .find(Locator::Css(".timeline"))
        .await
        .expect("a timeline")
        .text()
        .await
        .expect("text");
    assert!(
        timeline.contains("Approved by approver@example.com"),
        "{timeline}"
    );
    screenshot(&client, "proposal").await;

    // `?` shows the help; `j` moves the selection.
    client.goto(&app.url("/inbox")).await.expect("the inbox");
    live(&client).await;
    client
        .find(Locator::Css("body"))
        .await
        .expect("body")
        .send_keys("j?")
        .await
        .expect("keys");
    let help = client.find(Locator::Css("#help")).await.expect("help");
    assert!(
        help.is_displayed().await.expect("visible?"),
        "help is shown"
    );
    let focused = client
        .find_all(Locator::Css("article.card.focused"))
        .await
        .expect("cards");
    assert_eq!(focused.len(), 1);
    client.close().await.expect("closed");
    app.stop().await;
}

#[tokio::test]
async fn a_viewer_sees_no_approve_button_and_forged_or_tokenless_posts_are_refused() {
    let app = TestApp::spawn_with(configured()).await;
    send_fixture(&app, "stripe/invoice.payment_failed.json").await;
    settle(&app).await;
    person(&app, "viewer@example.com", Role::Viewer).await;
    person(&app, "approver@example.com", Role::Approver).await;
    let driver = driver();

    let viewer = browser(&driver, "viewer").await;
    sign_in(&viewer, &app, "viewer@example.com").await;
    assert_eq!(
        viewer
            .find_all(Locator::Css("article.card"))
            .await
            .expect("cards")
            .len(),
        2
    );
    assert!(viewer
        .find_all(Locator::Css("button.approve"))
        .await
        .expect("buttons")
        .is_empty());
    let id: String = sqlx::query_scalar("SELECT id FROM proposal_summaries LIMIT 1")
        .fetch_one(app.store.pool())
        .await
        .expect("a proposal");
    // The viewer forges the approve form the page never showed them, with their own token.
    let status = viewer
        .execute_async(
            "const [id, done] = arguments; \
             const csrf = document.querySelector('input[name=csrf]').value; \
             fetch('/proposals/' + id + '/approve', {method: 'POST', credentials: 'same-origin', \
               headers: {'Content-Type': 'application/x-www-form-urlencoded'}, body: 'csrf=' + encodeURIComponent(csrf)}) \
             .then(r => done(r.status));",
            vec![json!(id)],
        )
        .await
        .expect("a forged post");
    assert_eq!(status, json!(403));
    viewer.close().await.expect("closed");

    let approver = browser(&driver, "approver").await;
    sign_in(&approver, &app, "approver@example.com").await;
    let status = approver
        .execute_async(
            "const [id, done] = arguments; \
             fetch('/proposals/' + id + '/approve', {method: 'POST', credentials: 'same-origin', \
               headers: {'Content-Type': 'application/x-www-form-urlencoded'}, body: 'comment=no+token'}) \
             .then(r => done(r.status));",
            vec![json!(id)],
        )
        .await
        .expect("a post without a token");
    assert_eq!(status, json!(403));
    approver.close().await.expect("closed");
    settle(&app).await;
    let still: String = sqlx::query_scalar("SELECT status FROM proposal_summaries WHERE id = $1")
        .bind(&id)
        .fetch_one(app.store.pool())
        .await
        .expect("a status");
    assert_eq!(still, "pending");
    app.stop().await;
}

#[tokio::test]
async fn a_failed_payment_approved_in_the_browser_emails_dms_and_records_the_recovery() {
    use crate::execution::{events_of, payload_of, wait_for, Fakes};
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, ResponseTemplate};

    let fakes = Fakes::start().await;
    fakes.slack_accepts().await;
    // The failed invoice names no address: the email adapter asks Stripe for the customer's.
    Mock::given(method("GET"))
        .and(path("/v1/customers/cus_QXg1o8vcGmoR32"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "cus_QXg1o8vcGmoR32",
            "object": "customer",
            "email": "jenny.rosen@example.com",
            "name": "Jenny Rosen",
            "created": 1722200000,
            "livemode": false,
        })))
        .mount(&fakes.stripe)
        .await;
    let smtp = crate::adapters::Smtp::start();
    let smtp_url = format!("smtp://{}", smtp.addr);
    let mut settings = fakes.settings(Some(&smtp_url));
    settings.push((
        "EXECOPS_EMAIL_FROM".into(),
        "Acme <billing@acme.test>".into(),
    ));
    let borrowed: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let app = TestApp::spawn_with(crate::common::config(&borrowed)).await;
    crate::common::enable_writes(&app.store).await;
    person(&app, "approver@example.com", Role::Approver).await;

    send_fixture(&app, "stripe/invoice.payment_failed.json").await;
    settle(&app).await;
    let driver = driver();
    let client = browser(&driver, "execution").await;
    sign_in(&client, &app, "approver@example.com").await;
    for approved in 1..=2 {
        text_of(&client, "#list article.card h2", "").await;
        click(&client, "#list article.card button.approve").await;
        // Reload once the approval is recorded and the list would no longer show it.
        eventually(Duration::from_secs(20), "the approval recorded", || async {
            count(
                app.store.pool(),
                "SELECT count(*) FROM events WHERE event_type = 'Approved'",
            )
            .await
                >= approved
        })
        .await;
        settle(&app).await;
        client.refresh().await.expect("reloaded");
        live(&client).await;
    }
    text_of(&client, "#list", "Nothing is waiting").await;
    let ids: Vec<(String, String)> =
        sqlx::query_as("SELECT id, action_type FROM proposal_summaries ORDER BY action_type")
            .fetch_all(app.store.pool())
            .await
            .expect("proposals");
    assert_eq!(
        ids.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>(),
        ["email.send", "slack.post_message"]
    );
    for (id, _) in &ids {
        wait_for(&app, id, "ExecutionSucceeded").await;
    }
    // The customer got exactly one email; any other is an approval email to an approver.
    let (mails, told): (Vec<_>, Vec<_>) = smtp
        .messages()
        .into_iter()
        .partition(|m| m.to == ["jenny.rosen@example.com"]);
    assert_eq!(mails.len(), 1, "one email to the customer");
    assert!(
        told.iter().all(|m| m.data.contains("/links/")),
        "only approval emails besides"
    );
    assert!(mails[0]
        .data
        .contains("Subject: Your payment didn't go through"));
    assert!(mails[0].data.contains("in_1Pgc6tB7WZ01zgkWu9fdqL6I"));
    let posts = fakes.slack_posts().await;
    assert_eq!(posts.len(), 1, "one DM");
    assert_eq!(posts[0]["channel"], "#founders");

    // The invoice is paid: both executed proposals get their outcome.
    send_fixture(&app, "stripe/invoice.paid.json").await;
    for (id, _) in &ids {
        wait_for(&app, id, "OutcomeRecorded").await;
        let outcome = payload_of(&app, id, "OutcomeRecorded").await;
        assert_eq!(outcome["kind"], "recovered");
        assert_eq!(outcome["summary"], "recovered $10.00");
        assert_eq!(outcome["value_cents"], 1000);
    }
    assert_eq!(
        events_of(&app, &ids[0].0).await,
        [
            "Drafted",
            "Approved",
            "ExecutionStarted",
            "ExecutionSucceeded",
            "OutcomeRecorded"
        ]
    );
    settle(&app).await;
    client
        .goto(&app.url(&format!("/proposals/{}", ids[0].0)))
        .await
        .expect("the proposal");
    let execution = text_of(&client, "#execution", "recovered").await;
    assert!(
        execution.contains("Outcome: recovered $10.00"),
        "{execution}"
    );
    assert!(
        execution.contains("This cannot be undone: an email cannot be unsent"),
        "{execution}"
    );
    screenshot(&client, "executed").await;
    client.goto(&app.url("/settings")).await.expect("settings");
    text_of(&client, "#kill-switches", "everything").await;
    screenshot(&client, "settings").await;
    client.close().await.expect("closed");
}

#[tokio::test]
async fn a_founder_asks_the_canvas_in_words_and_sees_a_table_and_a_chart() {
    use chrono::{Datelike, Months, Utc};
    let driver = driver();
    let app = TestApp::spawn_with(configured()).await;
    // Four months of spend, the last with a jump at AWS.
    let this_month = Utc::now()
        .date_naive()
        .with_day(1)
        .expect("a first of the month");
    for back in 0..4u32 {
        let month = this_month
            .checked_sub_months(Months::new(back))
            .expect("a month");
        let day = month.with_day(3).expect("a day").to_string();
        let aws = if back == 0 { 612_000 } else { 480_000 };
        for (vendor, amount) in [
            ("Amazon Web Services", aws),
            ("Figma", 45_000),
            ("Google Workspace", 14_400),
            ("Linear", 8_000),
        ] {
            let id = format!("exp_{back}_{}", vendor.len());
            crate::canvas_web::expense(&app, &id, vendor, amount, "usd", &day).await;
        }
    }
    settle(&app).await;
    // The canvas answers from a projection of its own, which `settle` does not wait for.
    crate::audit::projections_idle(app.store.pool()).await;
    person(&app, "founder@example.com", Role::Admin).await;
    let client = browser(&driver, "canvas").await;
    sign_in(&client, &app, "founder@example.com").await;
    client.goto(&app.url("/canvas")).await.expect("the canvas");
    client
        .find(Locator::Css("input#q"))
        .await
        .expect("the question box")
        .send_keys("who are we spending more on this month?")
        .await
        .expect("typed");
    client
        .find(Locator::Css("form.ask button[type=submit]"))
        .await
        .expect("the button")
        .click()
        .await
        .expect("clicked");
    let table = text_of(&client, "table.canvas", "Amazon Web Services").await;
    assert!(table.contains("$6,120.00"), "{table}");
    let understood = text_of(&client, "p.understood", "spend_by_vendor").await;
    assert!(understood.contains("Download CSV"), "{understood}");
    let bars = client
        .find_all(Locator::Css("figure.chart svg rect title"))
        .await
        .expect("bars");
    assert!(bars.len() >= 4, "a bar per vendor");
    screenshot(&client, "canvas").await;
    client.close().await.expect("closed");
}

#[tokio::test]
async fn a_page_over_the_bound_on_live_pages_says_it_is_not_live() {
    let mut pairs: Vec<(&str, &str)> = crate::webhooks::SECRETS.to_vec();
    pairs.push(("EXECOPS_LIVE_STREAMS_PER_SESSION", "0"));
    let app = TestApp::spawn_with(crate::common::config(&pairs)).await;
    person(&app, "approver@example.com", Role::Approver).await;
    let driver = driver();
    let client = browser(&driver, "paused").await;
    sign_in(&client, &app, "approver@example.com").await;
    client
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("body[data-live='0']"))
        .await
        .expect("the page knows it is not live");
    let note = client
        .find(Locator::Css("#live-note"))
        .await
        .expect("the note");
    assert!(
        note.is_displayed().await.expect("visible"),
        "the note is shown"
    );
    let text = note.text().await.expect("text");
    assert!(
        text.contains("live updates are paused") && text.contains("reload"),
        "{text}"
    );
    client.close().await.expect("closed");
    app.stop().await;
}

async fn type_into(client: &Client, css: &str, text: &str) {
    client
        .find(Locator::Css(css))
        .await
        .expect(css)
        .send_keys(text)
        .await
        .expect("typed");
}

#[tokio::test]
async fn an_admin_invites_someone_in_the_browser_and_they_join_with_the_link() {
    let app = TestApp::spawn_with(configured()).await;
    person(&app, "boss@example.com", Role::Admin).await;
    let driver = driver();
    let client = browser(&driver, "invite").await;
    sign_in(&client, &app, "boss@example.com").await;
    client
        .goto(&app.url("/settings/people"))
        .await
        .expect("the people page");
    type_into(&client, "#invite input[name=email]", "new@example.com").await;
    client
        .find(Locator::Css("#invite select[name=role]"))
        .await
        .expect("the role")
        .select_by_value("viewer")
        .await
        .expect("chosen");
    click(&client, "#invite button[type=submit]").await;
    let link = text_of(&client, "#account-link", "/account/").await;
    screenshot(&client, "people-invite").await;
    // The link names the public address; this server answers on loopback.
    let path = &link[link.find("/account/").expect("an account path")..];
    let guest = browser(&driver, "invited").await;
    guest.goto(&app.url(path)).await.expect("the invite");
    let heading = text_of(&guest, "h1", "Join ExecOps").await;
    assert_eq!(heading, "Join ExecOps");
    type_into(&guest, "input[name=password]", PASSWORD).await;
    type_into(&guest, "input[name=confirm]", PASSWORD).await;
    click(&guest, "#account-link button[type=submit]").await;
    text_of(&guest, "h1", "Your password is set").await;
    sign_in(&guest, &app, "new@example.com").await;
    let role: String = sqlx::query_scalar("SELECT role FROM users WHERE email = 'new@example.com'")
        .fetch_one(app.store.pool())
        .await
        .expect("the person");
    assert_eq!(role, "viewer");
    guest.close().await.expect("closed");
    client.close().await.expect("closed");
    app.stop().await;
}
