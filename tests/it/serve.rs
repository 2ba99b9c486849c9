//! `execops serve` as a process on its embedded Postgres: it starts from nothing, stops
//! cleanly on Ctrl-C, and a SIGKILL leaves no server behind and loses nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use execops::commands::Store;
use execops::store::connect;
use execops::store::embedded::{EmbeddedOptions, EmbeddedPostgres};
use execops::telemetry::Metrics;

use crate::common::{count, eventually, free_port, receive};

struct DataDir(PathBuf);

impl DataDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("execops-serve-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Self(dir)
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn spawn_serve(data_dir: &Path, port: u16) -> Child {
    serve_command(port)
        .env_remove("DATABASE_URL")
        .env("EXECOPS_DATA_DIR", data_dir)
        .spawn()
        .expect("execops starts")
}

fn serve_command(port: u16) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_execops"));
    command
        .arg("serve")
        .env("EXECOPS_ADDR", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

async fn wait_ready(port: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("execops serve exited early: {status}");
        }
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await {
            if r.status() == 200 {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "execops serve never became ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Postgres processes whose command line names this data directory.
fn postgres_processes(data_dir: &Path) -> usize {
    let needle = data_dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| {
            std::fs::read(entry.path().join("cmdline"))
                .map(|raw| {
                    let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
                    cmdline.contains("postgres") && cmdline.contains(&needle)
                })
                .unwrap_or(false)
        })
        .count()
}

async fn wait_no_postgres(data_dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while postgres_processes(data_dir) > 0 {
        assert!(Instant::now() < deadline, "postgres is still running");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([name, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// Attaches to the embedded cluster a running `serve` started, as a CLI command would.
async fn attached_store(data_dir: &Path) -> (EmbeddedPostgres, Store) {
    let options = EmbeddedOptions::new(data_dir);
    let cluster = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&options))
        .await
        .expect("attach task")
        .expect("attaches to the running cluster");
    let pool = connect(&cluster.url("execops"), 4).await.expect("connects");
    (cluster, Store::new(pool, Metrics::new()))
}

#[tokio::test]
async fn serve_on_embedded_postgres_stops_cleanly_on_ctrl_c() {
    let dir = DataDir::new("ctrlc");
    let port = free_port();
    let mut child = spawn_serve(&dir.0, port);
    wait_ready(port, &mut child).await;
    assert_eq!(
        postgres_processes(&dir.0),
        1,
        "one postmaster, plus its children"
    );

    signal(&child, "-INT");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("wait task")
        .expect("exit status");
    assert!(status.success(), "exit: {status}");
    wait_no_postgres(&dir.0).await;
}

#[tokio::test]
async fn sigkill_leaves_no_postgres_behind_and_a_restart_loses_nothing() {
    let dir = DataDir::new("kill");
    let port = free_port();
    let mut child = spawn_serve(&dir.0, port);
    wait_ready(port, &mut child).await;

    let (cluster, store) = attached_store(&dir.0).await;
    for i in 0..10 {
        receive(&store, &format!("evt_kept_{i}")).await;
    }
    store.pool().close().await;
    drop(cluster); // attached, not owned: dropping it leaves the server running
    assert!(postgres_processes(&dir.0) > 0);

    child.kill().expect("SIGKILL");
    let _ = child.wait();
    wait_no_postgres(&dir.0).await;

    let mut child = spawn_serve(&dir.0, port);
    wait_ready(port, &mut child).await;
    let (_cluster, store) = attached_store(&dir.0).await;
    assert_eq!(
        count(
            store.pool(),
            "SELECT count(*) FROM events WHERE aggregate_type = 'Inbound'"
        )
        .await,
        10
    );
    eventually(
        Duration::from_secs(10),
        "the projection caught up",
        || async {
            let counted: HashMap<String, i64> =
                sqlx::query_as::<_, (String, i64)>("SELECT event_type, events FROM event_counts")
                    .fetch_all(store.pool())
                    .await
                    .expect("counts")
                    .into_iter()
                    .collect();
            counted.get("Received") == Some(&10)
        },
    )
    .await;
    store.pool().close().await;
    signal(&child, "-TERM");
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    wait_no_postgres(&dir.0).await;
}

#[tokio::test]
async fn serve_as_root_starts_even_when_postgres_cannot_enter_the_data_dir() {
    let private = DataDir::new("private");
    std::fs::create_dir_all(&private.0).expect("a private directory");
    std::fs::set_permissions(
        &private.0,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .expect("private permissions");
    let data_dir = private.0.join("data");
    let port = free_port();
    let mut child = spawn_serve(&data_dir, port);
    wait_ready(port, &mut child).await;
    signal(&child, "-INT");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("wait task")
        .expect("exit status");
    assert!(status.success(), "exit: {status}");
    let fallback = execops::store::embedded::fallback_home(&data_dir);
    let _ = std::fs::remove_dir_all(&fallback);
}

/// Posts `count` new signed Stripe deliveries from `writers` tasks; returns the ids that got
/// a 2xx. Stops early, without error, once the server is gone.
async fn stream_deliveries(port: u16, run: &str, count: usize, writers: usize) -> Vec<String> {
    use execops::send::{sign, Sender};
    let config = crate::webhooks::configured();
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let (config, client, run) = (config.clone(), client.clone(), run.to_string());
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in (writer..count).step_by(writers) {
                let id = format!("evt_{run}_{i}");
                let body = format!(
                    r#"{{"id":"{id}","object":"event","type":"invoice.payment_failed","created":1721954100,"data":{{"object":{{"amount_due":1000}}}}}}"#
                );
                let base = format!("http://127.0.0.1:{port}");
                let delivery = sign(&Sender::Stripe, body.into_bytes(), &config, &base, chrono::Utc::now())
                    .expect("signs");
                let mut request = client.post(format!("{base}{}", delivery.path));
                for (name, value) in &delivery.headers {
                    request = request.header(name, value);
                }
                match request.body(delivery.body).send().await {
                    Ok(response) if response.status().is_success() => acknowledged.push(id),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            acknowledged
        }));
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.expect("a writer finishes"));
    }
    acknowledged
}

#[tokio::test]
async fn every_acknowledged_delivery_survives_a_sigkill_mid_stream() {
    let db = execops::store::testing::TestDatabase::new()
        .await
        .expect("a database");
    let port = free_port();
    let start = || {
        let mut command = serve_command(port);
        command.env("DATABASE_URL", &db.url);
        for (key, value) in crate::webhooks::SECRETS {
            command.env(key, value);
        }
        command.spawn().expect("execops starts")
    };
    let mut child = start();
    wait_ready(port, &mut child).await;

    let stream = tokio::spawn(async move { stream_deliveries(port, "kill", 2000, 8).await });
    // Kill it once deliveries are flowing.
    eventually(Duration::from_secs(30), "deliveries flowing", || async {
        count(
            &db.pool,
            "SELECT count(*) FROM events WHERE aggregate_type = 'Inbound'",
        )
        .await
            >= 100
    })
    .await;
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let acknowledged = stream.await.expect("the stream ends");
    assert!(
        !acknowledged.is_empty() && acknowledged.len() < 2000,
        "{} acknowledged",
        acknowledged.len()
    );

    let mut child = start();
    wait_ready(port, &mut child).await;
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT aggregate_id FROM events WHERE aggregate_type = 'Inbound'")
            .fetch_all(&db.pool)
            .await
            .expect("stored ids");
    let stored: std::collections::HashSet<String> = stored.into_iter().collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !stored.contains(&format!("stripe:{id}")))
        .collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");

    // The sender retries everything: each is taken once, whatever happened before.
    let retried = stream_deliveries(port, "kill", 2000, 8).await;
    assert_eq!(retried.len(), 2000);
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM events WHERE aggregate_type = 'Inbound'"
        )
        .await,
        2000
    );
    child.kill().expect("SIGKILL");
    let _ = child.wait();
}

#[tokio::test]
async fn the_demo_fills_an_inbox_a_newcomer_can_sign_in_to() {
    use std::io::{BufRead, BufReader};
    let dir = DataDir::new("demo");
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_execops"))
        .args(["demo", "--fixtures"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures"))
        .env_remove("DATABASE_URL")
        .env("EXECOPS_DATA_DIR", &dir.0)
        .env("EXECOPS_ADDR", format!("127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the demo starts");
    let stdout = child.stdout.take().expect("stdout");
    // Read on to the end, so the demo never writes into a closed pipe.
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("Open ") {
                let _ = line_tx.send(line);
            }
        }
    });
    let line = tokio::task::spawn_blocking(move || line_rx.recv_timeout(Duration::from_secs(120)))
        .await
        .expect("reader")
        .expect("the demo prints where to sign in");
    let password = line.rsplit(' ').next().expect("a password").to_string();
    assert!(
        line.contains(&format!("http://127.0.0.1:{port}/inbox")),
        "{line}"
    );
    assert!(line.contains("demo@execops.local"), "{line}");

    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client");
    let base = format!("http://127.0.0.1:{port}");
    let mut cookie = String::new();
    let mut last = String::new();
    for _ in 0..300 {
        let response = browser
            .post(format!("{base}/login"))
            .form(&[
                ("email", "demo@execops.local"),
                ("password", password.as_str()),
            ])
            .send()
            .await;
        if let Ok(r) = response {
            last = r.status().to_string();
            if r.status() == 303 {
                cookie = r.headers()["set-cookie"]
                    .to_str()
                    .unwrap_or_default()
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !cookie.is_empty(),
        "the demo admin could not sign in: {last}"
    );
    eventually(Duration::from_secs(60), "a populated inbox", || async {
        let Ok(response) = browser
            .get(format!("{base}/inbox"))
            .header("cookie", &cookie)
            .send()
            .await
        else {
            return false;
        };
        let html = response.text().await.unwrap_or_default();
        html.matches("class=\"card ").count() >= 7 && html.contains("Prepare dispute evidence")
    })
    .await;
    // The demo shows writes running: it enabled them, as an admin would.
    let settings = browser
        .get(format!("{base}/settings"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("the settings")
        .text()
        .await
        .unwrap_or_default();
    assert!(
        settings.contains("<code>stripe.retry_invoice</code>")
            && !settings.contains("not enabled yet"),
        "the demo enabled the writes it shows"
    );
    // The canvas has recent figures: cash in Stripe, and four months of spend.
    eventually(Duration::from_secs(60), "the canvas's figures", || async {
        let page = |url: String| {
            let request = browser.get(url).header("cookie", &cookie);
            async move {
                match request.send().await {
                    Ok(r) => r.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                }
            }
        };
        let runway = page(format!("{base}/canvas?q=what%27s+our+runway")).await;
        let spend = page(format!("{base}/canvas?q=who+are+we+spending+more+on")).await;
        // This month against the three before: Figma's $450.00 each month, 0 % up.
        runway.contains("$182,400.00")
            && spend.contains(
                "<td>Figma</td><td>usd</td><td>$450.00</td><td>$450.00</td><td>0.0 %</td>",
            )
    })
    .await;
    signal(&child, "-INT");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("wait task")
        .expect("exit status");
    assert!(status.success(), "exit: {status}");
    wait_no_postgres(&dir.0).await;
}
