//! Settings, read once from the environment at start-up into one typed struct and checked
//! there, so a bad value stops ExecOps with a clear message instead of failing later.
//! Every key is documented in `docs/configuration.md` and `.env.example`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

use crate::domain::policies::{PolicyConfig, PrecisionConfig};
use crate::domain::quorum::{ApprovalRules, QuorumRule, QuorumSelector, RejectionRule};
use crate::domain::user::Email;
use crate::ingest::{standard, BUILT_IN_SOURCES};

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
    /// The senders' secrets; a sender without one is disabled.
    pub webhooks: WebhookSecrets,
    /// `EXECOPS_WEBHOOK_MAX_BODY_BYTES`, default 1 MiB: larger deliveries get 413.
    pub webhook_max_body_bytes: usize,
    /// `EXECOPS_PUBLIC_URL`: the address senders call, e.g. `https://execops.example.com`.
    /// HubSpot signs the full URI it called; unset, it is rebuilt from the `Host` header.
    pub public_url: Option<String>,
    /// The policies' thresholds and targets (`EXECOPS_POLICY_*`, `EXECOPS_OWNER_SLACK`, …).
    pub policies: PolicyConfig,
    /// When an action type is switched off for low precision (`EXECOPS_PRECISION_*`).
    pub precision: PrecisionConfig,
    /// `EXECOPS_LLM_URL` and friends: optional wording by a language model.
    pub llm: Option<LlmConfig>,
    /// `EXECOPS_SESSION_IDLE_MINUTES` (720), `EXECOPS_SESSION_MAX_HOURS` (168),
    /// `EXECOPS_SECURE_COOKIES` (default: on when `EXECOPS_PUBLIC_URL` is https or serving
    /// off loopback); a secure cookie is named with the `__Host-` prefix.
    pub session: SessionPolicy,
    /// Where the execution adapters send, and with which credentials.
    pub adapters: AdapterConfig,
    /// Retries, rate limits, circuit breakers and the undo window.
    pub execution: ExecutionConfig,
    /// Signed approval links in emails (`EXECOPS_LINK_SECRET`, `EXECOPS_LINK_TTL`).
    pub links: LinkConfig,
    /// Quorums, rejections, expiry and escalation (`EXECOPS_QUORUM`, `EXECOPS_PROPOSAL_TTL`, …).
    pub approvals: ApprovalRules,
    /// `EXECOPS_SLACK_APPROVALS_CHANNEL`: where high-urgency proposals are posted with
    /// Approve and Reject buttons. Unset, each linked approver and admin gets a DM.
    pub slack_approvals_channel: Option<String>,
    /// `SLACK_TEAM_ID`: the Slack workspace whose members may decide; unset, any workspace
    /// whose requests carry the app's signature.
    pub slack_team_id: Option<String>,
    /// What a client can hold, and for how long: connections, streams, password checks,
    /// sign-in attempts, timeouts.
    pub limits: Limits,
    /// `EXECOPS_TRUSTED_PROXIES`: addresses or CIDR blocks of the proxies in front of
    /// ExecOps; only their `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `EXECOPS_METRICS_ADDR`: a listener of its own for `/metrics` and `/readyz` with its
    /// reasons; set, the main listener serves neither.
    pub metrics_addr: Option<SocketAddr>,
    /// `EXECOPS_METRICS_TOKEN`: a bearer token that may read `/metrics` and `/readyz`'s
    /// reasons on the main listener (an admin's API token may too).
    pub metrics_token: Option<SecretString>,
    /// `EXECOPS_OIDC_*`: sign-in through an OpenID Connect provider; unset, passwords only.
    pub oidc: Option<OidcConfig>,
}

/// An OpenID Connect provider people may sign in with.
#[derive(Clone, Debug)]
pub struct OidcConfig {
    /// `EXECOPS_OIDC_ISSUER`: the provider's issuer URL, e.g. `https://accounts.google.com`;
    /// its metadata is read from `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    /// `EXECOPS_OIDC_CLIENT_ID` and `EXECOPS_OIDC_CLIENT_SECRET`: the client registered at
    /// the provider, with `{public URL}/login/oidc/callback` as its redirect URI.
    pub client_id: String,
    pub client_secret: SecretString,
    /// `EXECOPS_OIDC_ALLOWED_DOMAINS`: the email domains that may sign in (required).
    pub allowed_domains: Vec<String>,
    /// `EXECOPS_OIDC_LABEL`: what the button says after "Sign in with", default `SSO`.
    pub label: String,
}

/// The bounds on what clients can hold. Every default fits a team of 50 on one instance.
#[derive(Clone, Debug)]
pub struct Limits {
    /// `EXECOPS_DB_BACKGROUND_CONNECTIONS` (8): the pool of the subscriptions' and the
    /// executor's commands and queries, apart from the request pool.
    pub db_background_connections: u32,
    /// `EXECOPS_LIVE_STREAMS` (400): open inbox streams in all.
    pub live_streams: usize,
    /// `EXECOPS_LIVE_STREAMS_PER_SESSION` (8): open inbox streams of one browser session.
    pub live_streams_per_session: usize,
    /// `EXECOPS_PASSWORD_CHECKS` (half the cores, at least one): password hashes computed at
    /// once.
    pub password_checks: usize,
    /// `EXECOPS_PASSWORD_WAIT_MS` (2000): how long a sign-in waits for a turn before 503.
    pub password_wait: Duration,
    /// `EXECOPS_SIGNIN_FAILURES` (5): failed sign-ins of one email from one address before
    /// that pair waits, doubling each time (up to 15 minutes).
    pub signin_failures: u32,
    /// `EXECOPS_SIGNIN_ADDRESS_FAILURES` (30): failed sign-ins from one address, whatever
    /// the email, before that address waits, doubling each time (up to 15 minutes).
    pub signin_address_failures: u32,
    /// `EXECOPS_SIGNIN_PER_MINUTE` (600): sign-in attempts per minute this instance takes in
    /// all; past it, 429.
    pub signin_per_minute: u32,
    /// `EXECOPS_MAX_CLIENT_CONNECTIONS` (1024): open client connections; more wait to be
    /// accepted.
    pub client_connections: usize,
    /// `EXECOPS_HEADER_TIMEOUT_SECS` (10): to send a request's headers, counted from when
    /// the server waits for them, so a kept-alive connection idle this long is closed too.
    pub header_timeout: Duration,
    /// `EXECOPS_REQUEST_TIMEOUT_SECS` (30): for a whole request but the live streams.
    pub request_timeout: Duration,
}

impl Limits {
    fn from(get: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let secs = |key, default| parse::<u64>(get, key, default).map(Duration::from_secs);
        Ok(Self {
            db_background_connections: parse(get, "EXECOPS_DB_BACKGROUND_CONNECTIONS", "8")?,
            live_streams: parse(get, "EXECOPS_LIVE_STREAMS", "400")?,
            live_streams_per_session: parse(get, "EXECOPS_LIVE_STREAMS_PER_SESSION", "8")?,
            // Half the cores: a flood of sign-ins leaves the other half to everything else.
            password_checks: parse::<usize>(
                get,
                "EXECOPS_PASSWORD_CHECKS",
                &(cores / 2).max(1).to_string(),
            )?
            .max(1),
            password_wait: Duration::from_millis(parse(get, "EXECOPS_PASSWORD_WAIT_MS", "2000")?),
            signin_failures: parse::<u32>(get, "EXECOPS_SIGNIN_FAILURES", "5")?.max(1),
            signin_address_failures: parse::<u32>(get, "EXECOPS_SIGNIN_ADDRESS_FAILURES", "30")?
                .max(1),
            signin_per_minute: parse::<u32>(get, "EXECOPS_SIGNIN_PER_MINUTE", "600")?.max(1),
            client_connections: parse::<usize>(get, "EXECOPS_MAX_CLIENT_CONNECTIONS", "1024")?
                .max(1),
            header_timeout: secs("EXECOPS_HEADER_TIMEOUT_SECS", "10")?,
            request_timeout: secs("EXECOPS_REQUEST_TIMEOUT_SECS", "30")?,
        })
    }
}

/// How approval links in emails are signed and how long they live.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// `EXECOPS_LINK_SECRET`, at least 32 bytes; unset, a key is generated at first start and
    /// kept in Postgres, so every process on the database shares it.
    pub secret: Option<SecretString>,
    /// `EXECOPS_LINK_TTL`, default `72h`: a link expires this long after its email is sent,
    /// or earlier if the proposal itself expires earlier.
    pub ttl: chrono::Duration,
}

/// The session cookie's name over plain HTTP.
pub const COOKIE: &str = "execops_session";
/// The cookie's name when it is `Secure`: the `__Host-` prefix makes browsers refuse it
/// unless it came over HTTPS from this very host, for every path, with no `Domain`.
pub const SECURE_COOKIE: &str = "__Host-execops_session";

/// How long sessions live, and whether their cookie is `Secure`.
#[derive(Clone, Debug)]
pub struct SessionPolicy {
    pub idle: Duration,
    pub absolute: Duration,
    pub secure_cookie: bool,
}

impl SessionPolicy {
    /// The session cookie's name under this policy.
    pub fn cookie_name(&self) -> &'static str {
        if self.secure_cookie {
            SECURE_COOKIE
        } else {
            COOKIE
        }
    }
}

/// Where the database is: `DATABASE_URL`, or the embedded cluster's data directory when it
/// is unset, and how many connections requests may hold.
#[derive(Clone, Debug)]
pub struct DatabaseSettings {
    pub url: Option<SecretString>,
    pub data_dir: std::path::PathBuf,
    pub max_connections: u32,
}

impl Config {
    /// The database settings alone, for what opens the database.
    pub fn database(&self) -> DatabaseSettings {
        DatabaseSettings {
            url: self.database_url.clone(),
            data_dir: self.data_dir.clone(),
            max_connections: self.db_max_connections,
        }
    }

    /// Where people reach ExecOps: `EXECOPS_PUBLIC_URL`, else `http://{EXECOPS_ADDR}`.
    /// The warning to give when Slack decisions are taken (`SLACK_SIGNING_SECRET` is set)
    /// from any workspace because `SLACK_TEAM_ID` is not.
    pub fn slack_workspace_warning(&self) -> Option<&'static str> {
        (self.webhooks.slack.is_some() && self.slack_team_id.is_none()).then_some(
            "SLACK_TEAM_ID is not set: Slack clicks and commands are taken from any workspace \
             whose requests carry the app's signature. Set it to your workspace's id (T…).",
        )
    }

    pub fn public_base(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.addr))
    }
}

/// An OpenAI-compatible chat completions endpoint that may improve a draft's wording.
#[derive(Clone, Debug)]
pub struct LlmConfig {
    /// The full URL, e.g. `http://127.0.0.1:11434/v1/chat/completions`.
    pub url: String,
    /// `EXECOPS_LLM_MODEL`, default `gpt-4o-mini`.
    pub model: String,
    /// `EXECOPS_LLM_API_KEY`, sent as a bearer token when set.
    pub api_key: Option<SecretString>,
    /// `EXECOPS_LLM_TIMEOUT_MS`, default 3000.
    pub timeout: Duration,
}

/// Each sender's signing secret. Debug output never shows them.
#[derive(Clone, Debug, Default)]
pub struct WebhookSecrets {
    /// `STRIPE_WEBHOOK_SECRET`
    pub stripe: Option<SecretString>,
    /// `GITHUB_WEBHOOK_SECRET`
    pub github: Option<SecretString>,
    /// `SLACK_SIGNING_SECRET`
    pub slack: Option<SecretString>,
    /// `HUBSPOT_CLIENT_SECRET`
    pub hubspot: Option<SecretString>,
    /// `INTERCOM_CLIENT_SECRET`
    pub intercom: Option<SecretString>,
    /// `EXECOPS_WEBHOOK_SECRETS`: Standard Webhooks sources, `source=whsec_…` pairs.
    pub standard: BTreeMap<String, SecretString>,
}

impl WebhookSecrets {
    pub fn built_in(&self, source: &str) -> Option<&SecretString> {
        match source {
            "stripe" => self.stripe.as_ref(),
            "github" => self.github.as_ref(),
            "slack" => self.slack.as_ref(),
            "hubspot" => self.hubspot.as_ref(),
            "intercom" => self.intercom.as_ref(),
            _ => None,
        }
    }

    /// The sources that can receive webhooks, and the built-in ones that cannot.
    pub fn summary(&self) -> (Vec<String>, Vec<String>) {
        let (mut enabled, mut disabled) = (Vec::new(), Vec::new());
        for source in BUILT_IN_SOURCES {
            if self.built_in(source).is_some() {
                enabled.push(source.to_string());
            } else {
                disabled.push(source.to_string());
            }
        }
        enabled.extend(self.standard.keys().map(|s| format!("std/{s}")));
        (enabled, disabled)
    }
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
        let addr: SocketAddr = parse(&get, "EXECOPS_ADDR", "127.0.0.1:8080")?;
        // Secure whenever people reach it over HTTPS, or it serves anywhere but loopback.
        let public_https = get("EXECOPS_PUBLIC_URL")
            .is_some_and(|u| u.trim().to_ascii_lowercase().starts_with("https://"));
        let secure_default = if addr.ip().is_loopback() && !public_https {
            "false"
        } else {
            "true"
        };
        Ok(Self {
            session: SessionPolicy {
                idle: Duration::from_secs(
                    60 * parse::<u64>(&get, "EXECOPS_SESSION_IDLE_MINUTES", "720")?,
                ),
                absolute: Duration::from_secs(
                    3600 * parse::<u64>(&get, "EXECOPS_SESSION_MAX_HOURS", "168")?,
                ),
                secure_cookie: parse(&get, "EXECOPS_SECURE_COOKIES", secure_default)?,
            },
            database_url: get("DATABASE_URL").map(SecretString::from),
            data_dir: get("EXECOPS_DATA_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(".execops")),
            addr,
            db_max_connections: parse(&get, "EXECOPS_DB_MAX_CONNECTIONS", "20")?,
            max_subscriber_lag: Duration::from_secs(parse(
                &get,
                "EXECOPS_MAX_SUBSCRIBER_LAG_SECS",
                "30",
            )?),
            webhooks: WebhookSecrets {
                stripe: get("STRIPE_WEBHOOK_SECRET").map(SecretString::from),
                github: get("GITHUB_WEBHOOK_SECRET").map(SecretString::from),
                slack: get("SLACK_SIGNING_SECRET").map(SecretString::from),
                hubspot: get("HUBSPOT_CLIENT_SECRET").map(SecretString::from),
                intercom: get("INTERCOM_CLIENT_SECRET").map(SecretString::from),
                standard: parse_standard_secrets(get("EXECOPS_WEBHOOK_SECRETS"))?,
            },
            webhook_max_body_bytes: parse(&get, "EXECOPS_WEBHOOK_MAX_BODY_BYTES", "1048576")?,
            public_url: get("EXECOPS_PUBLIC_URL").map(|u| u.trim_end_matches('/').to_string()),
            policies: policies(&get)?,
            adapters: adapters(&get)?,
            execution: execution(&get)?,
            slack_approvals_channel: get("EXECOPS_SLACK_APPROVALS_CHANNEL")
                .map(|c| c.trim().to_string()),
            slack_team_id: get("SLACK_TEAM_ID").map(|t| t.trim().to_string()),
            approvals: approvals(&get)?,
            precision: PrecisionConfig {
                floor_percent: parse(&get, "EXECOPS_PRECISION_FLOOR_PERCENT", "30")?,
                min_decisions: parse(&get, "EXECOPS_PRECISION_MIN_DECISIONS", "10")?,
                window: parse(&get, "EXECOPS_PRECISION_WINDOW", "20")?,
            },
            links: links(&get)?,
            limits: Limits::from(&get)?,
            trusted_proxies: list(&get("EXECOPS_TRUSTED_PROXIES").unwrap_or_default())
                .iter()
                .map(|item| {
                    item.parse::<ipnet::IpNet>()
                        .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                        .map_err(|_| ConfigError {
                            key: "EXECOPS_TRUSTED_PROXIES",
                            problem: format!("{item:?} is not an address or a CIDR block"),
                        })
                })
                .collect::<Result<_, _>>()?,
            metrics_addr: get("EXECOPS_METRICS_ADDR")
                .map(|_| parse(&get, "EXECOPS_METRICS_ADDR", ""))
                .transpose()?,
            metrics_token: get("EXECOPS_METRICS_TOKEN").map(SecretString::from),
            oidc: oidc(&get)?,
            llm: match get("EXECOPS_LLM_URL") {
                None => None,
                Some(url) => Some(LlmConfig {
                    url,
                    model: get("EXECOPS_LLM_MODEL").unwrap_or_else(|| "gpt-4o-mini".into()),
                    api_key: get("EXECOPS_LLM_API_KEY").map(SecretString::from),
                    timeout: Duration::from_millis(parse(&get, "EXECOPS_LLM_TIMEOUT_MS", "3000")?),
                }),
            },
        })
    }
}

fn oidc(get: &impl Fn(&str) -> Option<String>) -> Result<Option<OidcConfig>, ConfigError> {
    let Some(issuer) = get("EXECOPS_OIDC_ISSUER") else {
        return Ok(None);
    };
    let required = |key: &'static str| {
        get(key).ok_or(ConfigError {
            key,
            problem: "is required when EXECOPS_OIDC_ISSUER is set".into(),
        })
    };
    let issuer = issuer.trim().trim_end_matches('/').to_string();
    if url::Url::parse(&issuer).is_err() {
        return Err(ConfigError {
            key: "EXECOPS_OIDC_ISSUER",
            problem: format!("{issuer:?} is not a URL"),
        });
    }
    let allowed_domains: Vec<String> = list(&required("EXECOPS_OIDC_ALLOWED_DOMAINS")?)
        .into_iter()
        .map(|d| d.trim_start_matches('@').to_ascii_lowercase())
        .collect();
    if allowed_domains.is_empty() {
        return Err(ConfigError {
            key: "EXECOPS_OIDC_ALLOWED_DOMAINS",
            problem: "names no domain".into(),
        });
    }
    Ok(Some(OidcConfig {
        issuer,
        client_id: required("EXECOPS_OIDC_CLIENT_ID")?.trim().to_string(),
        client_secret: SecretString::from(required("EXECOPS_OIDC_CLIENT_SECRET")?),
        allowed_domains,
        label: get("EXECOPS_OIDC_LABEL").unwrap_or_else(|| "SSO".into()),
    }))
}

fn list(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(|item| item.trim().to_string())
        .filter(|item| !item.is_empty())
        .collect()
}

fn policies(get: &impl Fn(&str) -> Option<String>) -> Result<PolicyConfig, ConfigError> {
    let defaults = PolicyConfig::default();
    let mut repo_channels = std::collections::BTreeMap::new();
    for pair in list(&get("EXECOPS_REPO_CHANNELS").unwrap_or_default()) {
        let (repo, channel) = pair.split_once('=').ok_or_else(|| ConfigError {
            key: "EXECOPS_REPO_CHANNELS",
            problem: format!("{pair:?} is not owner/repo=#channel"),
        })?;
        repo_channels.insert(repo.trim().to_string(), channel.trim().to_string());
    }
    Ok(PolicyConfig {
        owner_dm_threshold_cents: parse(get, "EXECOPS_POLICY_OWNER_DM_CENTS", "50000")?,
        owner_slack: get("EXECOPS_OWNER_SLACK").unwrap_or(defaults.owner_slack),
        spend_jump_percent: parse(get, "EXECOPS_POLICY_SPEND_JUMP_PERCENT", "10")?,
        runway_floor_months: parse(get, "EXECOPS_POLICY_RUNWAY_MONTHS", "6")?,
        repo_channels,
        default_engineering_channel: get("EXECOPS_ENGINEERING_CHANNEL")
            .unwrap_or(defaults.default_engineering_channel),
        churn_keywords: get("EXECOPS_POLICY_CHURN_KEYWORDS")
            .map(|raw| list(&raw))
            .unwrap_or(defaults.churn_keywords),
        deal_stages: get("EXECOPS_POLICY_DEAL_STAGES")
            .map(|raw| list(&raw))
            .unwrap_or(defaults.deal_stages),
    })
}

/// Credentials and base URLs of the execution adapters. An adapter without its credential
/// refuses to execute and says which setting is missing.
#[derive(Clone, Debug)]
pub struct AdapterConfig {
    pub slack_bot_token: Option<SecretString>,
    /// Slack Web API base, ending without a slash (`https://slack.com/api`).
    pub slack_api_base: String,
    /// `SLACK_RESPONSE_URL_BASE` (`https://hooks.slack.com/`): a click's or command's
    /// `response_url` is answered only when it starts with this.
    pub slack_response_base: String,
    /// `smtp://host:port` (plain, for a local relay), `smtp://…?tls=required` or `smtps://…`,
    /// with optional `user:password@`.
    pub smtp_url: Option<SecretString>,
    /// The `From` of every email.
    pub email_from: String,
    pub stripe_api_key: Option<SecretString>,
    /// Stripe API base, ending with a slash (`https://api.stripe.com/`).
    pub stripe_api_base: String,
    pub github_token: Option<SecretString>,
    /// GitHub REST base, ending without a slash (`https://api.github.com`).
    pub github_api_base: String,
    /// Named outbound webhook targets: `name=https://…` pairs.
    pub outbound_webhooks: BTreeMap<String, String>,
    /// The `whsec_…` secret outbound webhooks are signed with.
    pub outbound_secret: Option<SecretString>,
    /// How long one call may take before it counts as a timeout.
    pub timeout: Duration,
}

/// How the executor paces itself.
#[derive(Clone, Debug)]
pub struct ExecutionConfig {
    /// Attempts before a transient failure becomes final.
    pub max_attempts: u32,
    /// The first back-off; it doubles with each attempt, with jitter, up to `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// Executions per hour per action type, unless a person set another on `/settings`.
    pub default_rate_per_hour: u32,
    /// Consecutive failures of an adapter that open its circuit.
    pub breaker_failures: u32,
    /// How long an open circuit waits before one probe may pass.
    pub breaker_cooldown: Duration,
    /// How long after execution "Undo" is offered.
    pub undo_window: Duration,
    /// Executions running at once.
    pub concurrency: usize,
}

fn adapters(get: &impl Fn(&str) -> Option<String>) -> Result<AdapterConfig, ConfigError> {
    let mut outbound_webhooks = BTreeMap::new();
    for pair in list(&get("EXECOPS_OUTBOUND_WEBHOOKS").unwrap_or_default()) {
        let (name, target) = pair.split_once('=').ok_or_else(|| ConfigError {
            key: "EXECOPS_OUTBOUND_WEBHOOKS",
            problem: format!("{pair:?} is not name=https://…"),
        })?;
        url::Url::parse(target.trim()).map_err(|e| ConfigError {
            key: "EXECOPS_OUTBOUND_WEBHOOKS",
            problem: format!("{target:?} is not a URL: {e}"),
        })?;
        outbound_webhooks.insert(name.trim().to_string(), target.trim().to_string());
    }
    let outbound_secret = get("EXECOPS_OUTBOUND_SECRET");
    if let Some(secret) = &outbound_secret {
        standard::decode_secret(secret).map_err(|problem| ConfigError {
            key: "EXECOPS_OUTBOUND_SECRET",
            problem,
        })?;
    }
    let mut stripe_api_base =
        get("STRIPE_API_BASE").unwrap_or_else(|| "https://api.stripe.com/".into());
    if !stripe_api_base.ends_with('/') {
        stripe_api_base.push('/');
    }
    Ok(AdapterConfig {
        slack_bot_token: get("SLACK_BOT_TOKEN").map(SecretString::from),
        slack_api_base: get("SLACK_API_BASE")
            .unwrap_or_else(|| "https://slack.com/api".into())
            .trim_end_matches('/')
            .to_string(),
        slack_response_base: {
            let mut base =
                get("SLACK_RESPONSE_URL_BASE").unwrap_or_else(|| "https://hooks.slack.com/".into());
            if !base.ends_with('/') {
                base.push('/');
            }
            base
        },
        smtp_url: get("SMTP_URL").map(SecretString::from),
        email_from: get("EXECOPS_EMAIL_FROM")
            .unwrap_or_else(|| "ExecOps <execops@localhost>".into()),
        stripe_api_key: get("STRIPE_API_KEY").map(SecretString::from),
        stripe_api_base,
        github_token: get("GITHUB_TOKEN").map(SecretString::from),
        github_api_base: get("GITHUB_API_BASE")
            .unwrap_or_else(|| "https://api.github.com".into())
            .trim_end_matches('/')
            .to_string(),
        outbound_webhooks,
        outbound_secret: outbound_secret.map(SecretString::from),
        timeout: Duration::from_millis(parse(get, "EXECOPS_ADAPTER_TIMEOUT_MS", "10000")?),
    })
}

fn links(get: &impl Fn(&str) -> Option<String>) -> Result<LinkConfig, ConfigError> {
    let secret = get("EXECOPS_LINK_SECRET");
    if secret.as_ref().is_some_and(|s| s.len() < 32) {
        return Err(ConfigError {
            key: "EXECOPS_LINK_SECRET",
            problem: "must be at least 32 bytes; leave it unset to have one generated".into(),
        });
    }
    let raw = get("EXECOPS_LINK_TTL").unwrap_or_else(|| "72h".into());
    let ttl = match parse_deadline(&raw) {
        Ok(Some(ttl)) => ttl,
        Ok(None) => {
            return Err(ConfigError {
                key: "EXECOPS_LINK_TTL",
                problem: "a link must expire; write 72h, 90m, 3d or 600s".into(),
            })
        }
        Err(problem) => {
            return Err(ConfigError {
                key: "EXECOPS_LINK_TTL",
                problem,
            })
        }
    };
    Ok(LinkConfig {
        secret: secret.map(SecretString::from),
        ttl,
    })
}

fn execution(get: &impl Fn(&str) -> Option<String>) -> Result<ExecutionConfig, ConfigError> {
    Ok(ExecutionConfig {
        max_attempts: parse(get, "EXECOPS_EXECUTION_MAX_ATTEMPTS", "5")?,
        base_backoff: Duration::from_millis(parse(get, "EXECOPS_EXECUTION_BACKOFF_MS", "2000")?),
        max_backoff: Duration::from_millis(parse(
            get,
            "EXECOPS_EXECUTION_MAX_BACKOFF_MS",
            "300000",
        )?),
        default_rate_per_hour: parse(get, "EXECOPS_RATE_LIMIT_PER_HOUR", "60")?,
        breaker_failures: parse(get, "EXECOPS_BREAKER_FAILURES", "5")?,
        breaker_cooldown: Duration::from_secs(parse(get, "EXECOPS_BREAKER_COOLDOWN_SECS", "60")?),
        undo_window: Duration::from_secs(
            60 * parse::<u64>(get, "EXECOPS_UNDO_WINDOW_MINUTES", "60")?,
        ),
        concurrency: parse(get, "EXECOPS_EXECUTION_CONCURRENCY", "4")?,
    })
}

fn approvals(get: &impl Fn(&str) -> Option<String>) -> Result<ApprovalRules, ConfigError> {
    let defaults = ApprovalRules::default();
    let quorum = match get("EXECOPS_QUORUM") {
        Some(raw) => parse_quorum(&raw).map_err(|problem| ConfigError {
            key: "EXECOPS_QUORUM",
            problem,
        })?,
        None => defaults.quorum,
    };
    let rejection = match get("EXECOPS_QUORUM_REJECTION").as_deref().map(str::trim) {
        None | Some("veto") => RejectionRule::Veto,
        Some("quorum") => RejectionRule::Quorum,
        Some(other) => {
            return Err(ConfigError {
                key: "EXECOPS_QUORUM_REJECTION",
                problem: format!("{other:?} is not veto or quorum"),
            })
        }
    };
    let duration = |key: &'static str, default: Option<chrono::Duration>| match get(key) {
        None => Ok(default),
        Some(raw) => parse_deadline(&raw).map_err(|problem| ConfigError { key, problem }),
    };
    let ladder = match get("EXECOPS_ESCALATION_LADDER") {
        Some(raw) => parse_ladder(&raw).map_err(|problem| ConfigError {
            key: "EXECOPS_ESCALATION_LADDER",
            problem,
        })?,
        None => defaults.ladder,
    };
    Ok(ApprovalRules {
        quorum,
        rejection,
        ttl: duration("EXECOPS_PROPOSAL_TTL", defaults.ttl)?,
        escalate_after: duration("EXECOPS_ESCALATE_AFTER", defaults.escalate_after)?,
        ladder,
    })
}

/// `stripe.refund:2, github.*:2, amount>=100000:3, *:2`: a selector and the approvals it
/// takes. The strictest matching rule applies.
fn parse_quorum(raw: &str) -> Result<Vec<QuorumRule>, String> {
    let mut rules = Vec::new();
    for item in list(raw) {
        let (selector, n) = item
            .rsplit_once(':')
            .ok_or_else(|| format!("{item:?} is not SELECTOR:N (e.g. stripe.refund:2)"))?;
        let approvals: u32 = n
            .trim()
            .parse()
            .ok()
            .filter(|n| (1..=20).contains(n))
            .ok_or_else(|| format!("{item:?}: the approvals must be a number from 1 to 20"))?;
        let selector = selector.trim();
        let valid_name = |name: &str| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        };
        let selector = if selector == "*" {
            QuorumSelector::Any
        } else if let Some(min) = selector.strip_prefix("amount>=") {
            let min: i64 = min.trim().parse().ok().filter(|m| *m >= 0).ok_or_else(|| {
                format!("{item:?}: the amount must be a whole number of minor units (cents)")
            })?;
            QuorumSelector::AmountAtLeast(min)
        } else if let Some(prefix) = selector.strip_suffix('*') {
            if !valid_name(prefix) {
                return Err(format!(
                    "{item:?}: {selector:?} is not an action type prefix"
                ));
            }
            QuorumSelector::Prefix(prefix.to_string())
        } else if valid_name(selector) {
            QuorumSelector::ActionType(selector.to_string())
        } else {
            return Err(format!(
                "{item:?}: {selector:?} is not an action type, a prefix ending in *, \
                 amount>=CENTS or *"
            ));
        };
        rules.push(QuorumRule {
            selector,
            approvals,
        });
    }
    Ok(rules)
}

/// `90s`, `30m`, `4h`, `3d`; `never` for no deadline.
fn parse_deadline(raw: &str) -> Result<Option<chrono::Duration>, String> {
    let raw = raw.trim();
    if raw == "never" {
        return Ok(None);
    }
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (n, unit) = raw.split_at(split);
    let n: i64 = n.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
        format!("{raw:?} is not a positive duration like 90s, 30m, 4h, 3d or never")
    })?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{raw:?} has no unit; write 90s, 30m, 4h, 3d or never"
            ))
        }
    };
    n.checked_mul(seconds)
        .filter(|s| *s <= 366 * 86_400)
        .map(|s| Some(chrono::Duration::seconds(s)))
        .ok_or_else(|| format!("{raw:?} is longer than a year"))
}

/// `lead@x.com; cfo@x.com, ceo@x.com`: levels separated by `;`, emails by `,`.
fn parse_ladder(raw: &str) -> Result<Vec<Vec<String>>, String> {
    let mut ladder = Vec::new();
    for (i, level) in raw.split(';').enumerate() {
        let emails = list(level);
        if emails.is_empty() {
            return Err(format!("level {} names nobody", i + 1));
        }
        let mut parsed = Vec::new();
        for email in emails {
            let email = Email::parse(&email)
                .map_err(|_| format!("level {}: {email:?} is not an email", i + 1))?;
            parsed.push(email.as_str().to_string());
        }
        ladder.push(parsed);
    }
    Ok(ladder)
}

/// `bank=whsec_…,spend=whsec_…` (commas or white space between pairs).
fn parse_standard_secrets(
    raw: Option<String>,
) -> Result<BTreeMap<String, SecretString>, ConfigError> {
    let error = |problem: String| ConfigError {
        key: "EXECOPS_WEBHOOK_SECRETS",
        problem,
    };
    let mut secrets = BTreeMap::new();
    let Some(raw) = raw else {
        return Ok(secrets);
    };
    for pair in raw.split(|c: char| c == ',' || c.is_whitespace()) {
        if pair.is_empty() {
            continue;
        }
        let (source, secret) = pair
            .split_once('=')
            .ok_or_else(|| error(format!("{pair:?} is not source=secret")))?;
        let valid_name = !source.is_empty()
            && source.len() <= 40
            && source
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !valid_name {
            return Err(error(format!(
                "source {source:?} must be 1 to 40 of a-z, 0-9, - and _"
            )));
        }
        if BUILT_IN_SOURCES.contains(&source) {
            return Err(error(format!(
                "source {source:?} is a built-in sender; give the feed another name"
            )));
        }
        standard::decode_secret(secret).map_err(|e| error(format!("source {source}: {e}")))?;
        secrets.insert(source.to_string(), SecretString::from(secret.to_string()));
    }
    Ok(secrets)
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
    fn a_provider_sign_in_needs_its_client_and_the_domains_it_admits() {
        let full = [
            ("EXECOPS_OIDC_ISSUER", "https://accounts.example.com/"),
            ("EXECOPS_OIDC_CLIENT_ID", "client"),
            ("EXECOPS_OIDC_CLIENT_SECRET", "secret"),
            ("EXECOPS_OIDC_ALLOWED_DOMAINS", "@Example.com, example.org"),
        ];
        let oidc = config(&full)
            .unwrap_or_else(|e| panic!("{e}"))
            .oidc
            .expect("set up");
        assert_eq!(oidc.issuer, "https://accounts.example.com");
        assert_eq!(oidc.allowed_domains, ["example.com", "example.org"]);
        assert_eq!(oidc.label, "SSO");
        for (missing, _) in &full[1..] {
            let pairs: Vec<_> = full.iter().filter(|(k, _)| k != missing).copied().collect();
            let error = config(&pairs)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(error.starts_with(&format!("{missing}:")), "{error}");
        }
        let mut bad = full.to_vec();
        bad[0].1 = "not a url";
        let error = config(&bad)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.starts_with("EXECOPS_OIDC_ISSUER:"), "{error}");
        assert!(config(&[]).unwrap_or_else(|e| panic!("{e}")).oidc.is_none());
    }

    #[test]
    fn standard_webhook_secrets_are_read_as_pairs() {
        let c = config(&[(
            "EXECOPS_WEBHOOK_SECRETS",
            "bank=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, spend=MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.webhooks.standard.keys().collect::<Vec<_>>(),
            ["bank", "spend"]
        );
        let (enabled, disabled) = c.webhooks.summary();
        assert_eq!(enabled, ["std/bank", "std/spend"]);
        assert_eq!(disabled.len(), 5);
    }

    #[test]
    fn bad_standard_webhook_secrets_are_refused_with_the_reason() {
        for (raw, expected) in [
            ("bank", "is not source=secret"),
            (
                "Bank=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "must be 1 to 40",
            ),
            (
                "stripe=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "built-in sender",
            ),
            ("bank=whsec_***", "not base64"),
        ] {
            let error = config(&[("EXECOPS_WEBHOOK_SECRETS", raw)])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(error.contains(expected), "{raw}: {error}");
        }
    }

    #[test]
    fn link_settings_default_to_three_days_and_a_generated_key() {
        let c = config(&[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.links.ttl, chrono::Duration::hours(72));
        assert!(c.links.secret.is_none());
        assert_eq!(c.public_base(), "http://127.0.0.1:8080");
        let c = config(&[
            ("EXECOPS_LINK_TTL", "90m"),
            ("EXECOPS_PUBLIC_URL", "https://ops.example.com/"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.links.ttl, chrono::Duration::minutes(90));
        assert_eq!(c.public_base(), "https://ops.example.com");
    }

    #[test]
    fn bad_link_settings_are_refused_with_the_reason() {
        for (key, raw, expected) in [
            ("EXECOPS_LINK_TTL", "72", "has no unit"),
            ("EXECOPS_LINK_TTL", "3w", "has no unit"),
            ("EXECOPS_LINK_TTL", "0h", "not a positive duration"),
            ("EXECOPS_LINK_TTL", "h", "not a positive duration"),
            ("EXECOPS_LINK_TTL", "400d", "longer than a year"),
            ("EXECOPS_LINK_TTL", "never", "a link must expire"),
            ("EXECOPS_LINK_SECRET", "short", "at least 32 bytes"),
        ] {
            let error = config(&[(key, raw)])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                error.starts_with(key) && error.contains(expected),
                "{raw}: {error}"
            );
        }
    }

    #[test]
    fn approval_rules_are_read_with_their_defaults() {
        let c = config(&[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.approvals, ApprovalRules::default());
        let c = config(&[
            (
                "EXECOPS_QUORUM",
                "stripe.refund:2, github.*:2, amount>=100000:3, *:1",
            ),
            ("EXECOPS_QUORUM_REJECTION", "quorum"),
            ("EXECOPS_PROPOSAL_TTL", "3d"),
            ("EXECOPS_ESCALATE_AFTER", "never"),
            (
                "EXECOPS_ESCALATION_LADDER",
                "Lead@x.com; cfo@x.com, ceo@x.com",
            ),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.approvals.quorum,
            vec![
                QuorumRule {
                    selector: QuorumSelector::ActionType("stripe.refund".into()),
                    approvals: 2
                },
                QuorumRule {
                    selector: QuorumSelector::Prefix("github.".into()),
                    approvals: 2
                },
                QuorumRule {
                    selector: QuorumSelector::AmountAtLeast(100_000),
                    approvals: 3
                },
                QuorumRule {
                    selector: QuorumSelector::Any,
                    approvals: 1
                },
            ]
        );
        assert_eq!(c.approvals.rejection, RejectionRule::Quorum);
        assert_eq!(c.approvals.ttl, Some(chrono::Duration::days(3)));
        assert_eq!(c.approvals.escalate_after, None);
        assert_eq!(
            c.approvals.ladder,
            vec![
                vec!["lead@x.com".to_string()],
                vec!["cfo@x.com".to_string(), "ceo@x.com".to_string()]
            ]
        );
    }

    #[test]
    fn bad_approval_rules_are_refused_naming_the_key() {
        let cases = [
            ("EXECOPS_QUORUM", "stripe.refund", "is not SELECTOR:N"),
            ("EXECOPS_QUORUM", "stripe.refund:0", "from 1 to 20"),
            ("EXECOPS_QUORUM", "stripe.refund:two", "from 1 to 20"),
            ("EXECOPS_QUORUM", "amount>=1.5:2", "minor units"),
            ("EXECOPS_QUORUM", "amount>=-5:2", "minor units"),
            ("EXECOPS_QUORUM", "Stripe Refund:2", "is not an action type"),
            (
                "EXECOPS_QUORUM_REJECTION",
                "majority",
                "is not veto or quorum",
            ),
            ("EXECOPS_PROPOSAL_TTL", "72", "has no unit"),
            ("EXECOPS_PROPOSAL_TTL", "0h", "positive duration"),
            ("EXECOPS_PROPOSAL_TTL", "-3h", "positive duration"),
            ("EXECOPS_ESCALATE_AFTER", "4 hours", "has no unit"),
            ("EXECOPS_ESCALATE_AFTER", "400d", "longer than a year"),
            (
                "EXECOPS_ESCALATION_LADDER",
                "lead@x.com;;ceo@x.com",
                "level 2 names nobody",
            ),
            ("EXECOPS_ESCALATION_LADDER", "lead", "is not an email"),
        ];
        for (key, raw, expected) in cases {
            let error = config(&[(key, raw)])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                error.starts_with(&format!("{key}:")) && error.contains(expected),
                "{key}={raw}: {error}"
            );
        }
    }

    #[test]
    fn an_empty_database_url_means_embedded() {
        let c = config(&[("DATABASE_URL", "  ")]).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.database_url.is_none());
    }
}
