//! The database side of the test harness, shared by the tests and the benchmarks: one
//! Postgres per test process (the embedded one, unless `DATABASE_URL` names another server),
//! and a fresh, migrated database for every test.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use sqlx::{Connection, PgConnection, PgPool};

use super::embedded::{EmbeddedOptions, EmbeddedPostgres};
use super::{connect, quote_ident, MIGRATOR};

const PREFIX: &str = "execops_test_";

struct Server {
    /// A URL for the server's maintenance database; test databases are created beside it.
    admin_url: String,
    _embedded: Option<EmbeddedPostgres>,
}

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
static COUNTER: AtomicU32 = AtomicU32::new(0);

fn server() -> anyhow::Result<&'static Server> {
    SERVER
        .get_or_init(|| start_server().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("the test Postgres could not start: {e}"))
}

fn start_server() -> anyhow::Result<Server> {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        return Ok(Server {
            admin_url: url,
            _embedded: None,
        });
    }
    let base = std::env::temp_dir();
    remove_stale_clusters(&base);
    let dir = base.join(format!("execops-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cluster = EmbeddedPostgres::start(&EmbeddedOptions::new(dir).throwaway())?;
    Ok(Server {
        admin_url: cluster.url("postgres"),
        _embedded: Some(cluster),
    })
}

/// Clusters left by earlier test processes that have ended.
fn remove_stale_clusters(base: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("execops-test-") else {
            continue;
        };
        if !std::path::Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A fresh database with the schema applied, for one test.
pub struct TestDatabase {
    pub pool: PgPool,
    pub url: String,
    pub name: String,
}

impl TestDatabase {
    pub async fn new() -> anyhow::Result<Self> {
        let server = server()?;
        let name = format!(
            "{PREFIX}{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = PgConnection::connect(&server.admin_url).await?;
        if COUNTER.load(Ordering::Relaxed) == 1 {
            drop_stale_databases(&mut admin).await;
        }
        sqlx::query(&format!("CREATE DATABASE {}", quote_ident(&name)))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        let url = with_database(&server.admin_url, &name)?;
        let pool = connect(&url, 20).await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool, url, name })
    }
}

/// Test databases whose test process has ended, on a server that outlives test runs.
async fn drop_stale_databases(admin: &mut PgConnection) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE $1")
            .bind(format!("{PREFIX}%"))
            .fetch_all(&mut *admin)
            .await
            .unwrap_or_default();
    for name in names {
        let pid = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('_').next())
            .unwrap_or_default();
        if !pid.is_empty() && !std::path::Path::new("/proc").join(pid).exists() {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {}", quote_ident(&name)))
                .execute(&mut *admin)
                .await;
        }
    }
}

fn with_database(url: &str, database: &str) -> anyhow::Result<String> {
    let mut parsed = url::Url::parse(url)?;
    parsed.set_path(&format!("/{database}"));
    Ok(parsed.to_string())
}

/// The database a benchmark runs on: `DATABASE_URL` if set, otherwise a fresh embedded
/// cluster with the product's durable defaults, removed again by [`BenchDatabase::close`].
pub struct BenchDatabase {
    pub url: String,
    /// Where it runs, for the benchmark's report.
    pub description: &'static str,
    embedded: Option<(EmbeddedPostgres, std::path::PathBuf)>,
}

impl BenchDatabase {
    pub async fn start(name: &str) -> anyhow::Result<Self> {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            return Ok(Self {
                url,
                description: "DATABASE_URL",
                embedded: None,
            });
        }
        let dir = std::env::temp_dir().join(format!("execops-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let options = EmbeddedOptions::new(&dir);
        let cluster =
            tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&options)).await??;
        super::create_database_if_missing(&cluster.url("postgres"), "execops").await?;
        Ok(Self {
            url: cluster.url("execops"),
            description: "embedded postgres, durable defaults",
            embedded: Some((cluster, dir)),
        })
    }

    pub async fn close(self) -> anyhow::Result<()> {
        if let Some((cluster, dir)) = self.embedded {
            tokio::task::spawn_blocking(move || cluster.stop()).await??;
            let _ = std::fs::remove_dir_all(dir);
        }
        Ok(())
    }
}
