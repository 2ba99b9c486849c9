//! Shared test helpers.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use execops::app::App;
use execops::clock::Clock;
use execops::commands::{Receipt, Store};
use execops::config::Config;
use execops::domain::Signal;
use execops::store::testing::TestDatabase;
use execops::telemetry::Metrics;
use serde_json::json;

pub fn config(pairs: &[(&str, &str)]) -> Config {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_lookup(|key| map.get(key).cloned()).expect("test configuration is valid")
}

/// The whole app serving HTTP on a free loopback port, on its own fresh database.
pub struct TestApp {
    pub addr: SocketAddr,
    /// The database's URL, for running the `execops` binary against it.
    pub database_url: String,
    pub store: Store,
    pub client: reqwest::Client,
    /// The app's clock: what a sender signing a delivery for it should read.
    pub clock: Clock,
    app: Option<App>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(config(&[])).await
    }

    pub async fn spawn_with(config: Config) -> Self {
        let db = TestDatabase::new().await.expect("a fresh test database");
        let mut app = Self::spawn_on(db.pool.clone(), config).await;
        app.database_url = db.url;
        app
    }

    /// The app on its own fresh database, with its clock set by the caller.
    pub async fn spawn_with_clock(config: Config, clock: Clock) -> Self {
        let db = TestDatabase::new().await.expect("a fresh test database");
        let mut app = Self::spawn_on_with_clock(db.pool.clone(), config, clock).await;
        app.database_url = db.url;
        app
    }

    /// The app on a pool of the caller's choosing.
    pub async fn spawn_on(pool: sqlx::PgPool, config: Config) -> Self {
        Self::spawn_on_with_clock(pool, config, Clock::system()).await
    }

    async fn spawn_on_with_clock(pool: sqlx::PgPool, config: Config, clock: Clock) -> Self {
        let app = App::start_with_clock(pool, &config, clock);
        let router = app.router();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let addr = listener.local_addr().expect("a bound address");
        let limits = config.limits.clone();
        let mut stopped = app.state.shutdown.clone();
        tokio::spawn(async move {
            execops::web::serve::serve(listener, router, &limits, async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            })
            .await
        });
        Self {
            addr,
            database_url: String::new(),
            store: app.state.store.clone(),
            client: reqwest::Client::new(),
            clock,
            app: Some(app),
        }
    }

    /// What every handler of this app reaches, to serve it on another listener.
    pub fn state(&self) -> execops::web::AppState {
        self.app.as_ref().expect("a running app").state.clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// GETs `path` and checks the status, as Svix's test client does.
    pub async fn get(&self, path: &str, expected: u16) -> reqwest::Response {
        let response = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("the server answers");
        assert_eq!(response.status().as_u16(), expected, "GET {path}");
        response
    }

    pub async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await;
        }
    }
}

/// A store on a fresh database, without HTTP or subscriptions.
pub async fn store() -> (TestDatabase, Store) {
    let db = TestDatabase::new().await.expect("a fresh test database");
    let store = Store::new(db.pool.clone(), Metrics::new());
    (db, store)
}

pub fn signal(source: &str, external_id: &str) -> Signal {
    Signal {
        source: source.into(),
        kind: "invoice.payment_failed".into(),
        external_id: external_id.into(),
        occurred_at: DateTime::<Utc>::from_timestamp(1_721_954_100, 0).expect("a valid time"),
        payload: json!({"id": external_id}),
    }
}

pub async fn receive(store: &Store, external_id: &str) -> Receipt {
    store
        .receive(signal("stripe", external_id), HashMap::new())
        .await
        .expect("the delivery is stored")
}

/// Polls `check` until it returns true or `timeout` passes.
/// Enables the action types that write to the outside world, as an admin would before
/// approving them runs anything.
pub async fn enable_writes(store: &Store) {
    execops::cli::demo::enable_writes(store)
        .await
        .expect("writes enabled");
}

pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn count(pool: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// A free port below Linux's ephemeral range (32768 and up), so that nothing binding port 0
/// meanwhile (the embedded Postgres, another test's server) can be handed the same one
/// before `execops` binds it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 4_000) as u16 * 3;
    for _ in 0..2_000 {
        let port = 20_000 + (base - 20_000 + NEXT.fetch_add(1, Ordering::Relaxed)) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below the ephemeral range");
}
