//! Settings, read once from the environment at start-up into one typed struct and checked
//! there, so a bad value stops ExecOps with a clear message instead of failing later.
//! Every key is documented in `docs/configuration.md` and `.env.example`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

#[derive(Clone, Debug)]
pub struct Config {
    /// `DATABASE_URL`; unset means: start the embedded Postgres under `data_dir`.
    pub database_url: Option<SecretString>,
    /// `EXECOPS_DATA_DIR`, default `./.execops`.
    pub data_dir: PathBuf,
    /// `EXECOPS_ADDR`, default `127.0.0.1:8080`.
    pub addr: SocketAddr,
    /// `EXECOPS_DB_MAX_CONNECTIONS`, default 20.
    pub db_max_connections: u32,
    /// `EXECOPS_MAX_SUBSCRIBER_LAG_SECS`, default 30: past it `/readyz` answers 503.
    pub max_subscriber_lag: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct ConfigError {
    key: &'static str,
    problem: String,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Reads settings through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |key: &str| lookup(key).filter(|v| !v.trim().is_empty());
        Ok(Self {
            database_url: get("DATABASE_URL").map(SecretString::from),
            data_dir: get("EXECOPS_DATA_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(".execops")),
            addr: parse(&get, "EXECOPS_ADDR", "127.0.0.1:8080")?,
            db_max_connections: parse(&get, "EXECOPS_DB_MAX_CONNECTIONS", "20")?,
            max_subscriber_lag: Duration::from_secs(parse(
                &get,
                "EXECOPS_MAX_SUBSCRIBER_LAG_SECS",
                "30",
            )?),
        })
    }
}

fn parse<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    key: &'static str,
    default: &str,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    let raw = get(key).unwrap_or_else(|| default.to_string());
    raw.trim().parse().map_err(|e: T::Err| ConfigError {
        key,
        problem: format!("{raw:?} is not valid: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|key| map.get(key).cloned())
    }

    #[test]
    fn defaults_need_nothing_set() {
        let c = config(&[]).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.database_url.is_none());
        assert_eq!(c.data_dir, PathBuf::from(".execops"));
        assert_eq!(c.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.max_subscriber_lag, Duration::from_secs(30));
    }

    #[test]
    fn a_bad_address_names_its_key() {
        let error = config(&[("EXECOPS_ADDR", "nowhere")])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.starts_with("EXECOPS_ADDR:"), "{error}");
    }

    #[test]
    fn an_empty_database_url_means_embedded() {
        let c = config(&[("DATABASE_URL", "  ")]).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.database_url.is_none());
    }
}
