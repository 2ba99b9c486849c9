//! What a sign-in may cost. Password hashing is slow and large on purpose (argon2, 19 MiB
//! each), so it is bounded three ways:
//! - at most `EXECOPS_PASSWORD_CHECKS` hashes at once (half the cores); a request that waits longer than
//!   `EXECOPS_PASSWORD_WAIT_MS` for a turn gets 503 with `Retry-After`, never a thread;
//! - failures are counted per (client address, email): past `EXECOPS_SIGNIN_FAILURES` in
//!   15 minutes that pair waits, twice as long after each further failure (up to 15
//!   minutes), while the email's owner signs in from anywhere else;
//! - failures are counted per client address too: past `EXECOPS_SIGNIN_ADDRESS_FAILURES` in
//!   15 minutes, whatever the emails, that address waits the same way, so one address
//!   cannot spend the password checks on made-up emails;
//! - at most `EXECOPS_SIGNIN_PER_MINUTE` attempts a minute on this instance in all;
//! - at most [`AT_ONCE_PER_ADDRESS`] checks waiting or running for one client address: a
//!   burst from one address is refused at once (429) instead of queueing in front of
//!   everyone else's sign-ins.
//!
//! The client address is the peer's, or, for a peer named in `EXECOPS_TRUSTED_PROXIES`, the
//! nearest address in `X-Forwarded-For` that is not itself a trusted proxy.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Limits;

/// How long failures are remembered.
const WINDOW: Duration = Duration::from_secs(15 * 60);

/// Waits remembered in memory, so a throttled flood is refused without a query. Past this
/// many, expired ones are forgotten, and if none has expired nothing more is remembered
/// (the database still decides): about 1 MB at most.
const REMEMBERED_WAITS: usize = 10_000;

/// Password checks one client address may have waiting or running at once. A person signs in
/// one at a time; an office behind one address rarely has more than two at the same moment.
pub const AT_ONCE_PER_ADDRESS: u32 = 2;

/// The sign-in bounds of this instance. Cheap to clone.
#[derive(Clone)]
pub struct SignInGate {
    checks: Arc<Semaphore>,
    wait: Duration,
    failures: u32,
    address_failures: u32,
    per_minute: u32,
    minute: Arc<Mutex<(Instant, u32)>>,
    /// Until when an address (keyed by itself) or an address with an email (keyed by both)
    /// waits, as last read from the failures.
    waits: Arc<Mutex<HashMap<String, DateTime<Utc>>>>,
    /// Checks waiting or running, by client address; an address is here only while it has
    /// one, so this holds at most as many entries as sign-ins in progress.
    at_once: Arc<Mutex<HashMap<String, u32>>>,
}

/// A turn to check a password: a place among the checks running, and the client address's
/// share of them, both given back when dropped.
pub struct Turn {
    _permit: OwnedSemaphorePermit,
    _share: Share,
}

/// One of a client address's checks in progress.
struct Share {
    address: String,
    at_once: Arc<Mutex<HashMap<String, u32>>>,
}

impl Drop for Share {
    fn drop(&mut self) {
        if let Ok(mut at_once) = self.at_once.lock() {
            if let Some(count) = at_once.get_mut(&self.address) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    at_once.remove(&self.address);
                }
            }
        }
    }
}

/// Why a sign-in is not tried now, and when it may be.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Too many failures from this address, for this email or in all (429).
    Throttled { retry_after: Duration },
    /// Too many sign-ins on this instance this minute (429).
    Busy { retry_after: Duration },
    /// This address already has its checks in progress (429).
    Crowded { retry_after: Duration },
    /// No turn for a password check in time (503).
    Overloaded { retry_after: Duration },
}

impl SignInGate {
    pub fn new(limits: &Limits) -> Self {
        Self {
            checks: Arc::new(Semaphore::new(limits.password_checks)),
            wait: limits.password_wait,
            failures: limits.signin_failures,
            address_failures: limits.signin_address_failures,
            per_minute: limits.signin_per_minute,
            minute: Arc::new(Mutex::new((Instant::now(), 0))),
            waits: Arc::default(),
            at_once: Arc::default(),
        }
    }

    /// Counts an attempt against the instance's ceiling.
    pub fn admit(&self) -> Result<(), Refusal> {
        let mut minute = self.minute.lock().map_err(|_| Refusal::Busy {
            retry_after: Duration::from_secs(1),
        })?;
        let elapsed = minute.0.elapsed();
        if elapsed >= Duration::from_secs(60) {
            *minute = (Instant::now(), 0);
        }
        if minute.1 >= self.per_minute {
            let retry_after = Duration::from_secs(60).saturating_sub(minute.0.elapsed());
            return Err(Refusal::Busy {
                retry_after: retry_after.max(Duration::from_secs(1)),
            });
        }
        minute.1 += 1;
        Ok(())
    }

    /// A turn to check a password for `client`, refused at once when that address already
    /// has [`AT_ONCE_PER_ADDRESS`] in progress, and waited for at most the configured time.
    pub async fn turn(&self, client: &str) -> Result<Turn, Refusal> {
        let share = self.share(client).ok_or(Refusal::Crowded {
            retry_after: Duration::from_secs(1),
        })?;
        match tokio::time::timeout(self.wait, self.checks.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Turn {
                _permit: permit,
                _share: share,
            }),
            _ => Err(Refusal::Overloaded {
                retry_after: Duration::from_secs(1),
            }),
        }
    }

    /// One more of `client`'s checks in progress, unless it has all it may.
    fn share(&self, client: &str) -> Option<Share> {
        let mut at_once = self.at_once.lock().ok()?;
        let count = at_once.entry(client.to_string()).or_default();
        if *count >= AT_ONCE_PER_ADDRESS {
            return None;
        }
        *count += 1;
        Some(Share {
            address: client.to_string(),
            at_once: self.at_once.clone(),
        })
    }

    /// Whether `client` must wait before trying `email` again, from its recent failures
    /// with that email and with any.
    pub async fn throttled(
        &self,
        pool: &PgPool,
        email: &str,
        client: &str,
        now: DateTime<Utc>,
    ) -> Result<Result<(), Refusal>, sqlx::Error> {
        let pair = format!("{client}\n{email}");
        if let Some(until) = self.remembered(client, &pair) {
            if let Err(refusal) = wait_left(until, now) {
                return Ok(Err(refusal));
            }
        }
        let (with_email, last_with_email, in_all, last): (
            i64,
            Option<DateTime<Utc>>,
            i64,
            Option<DateTime<Utc>>,
        ) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE email = $1), max(failed_at) FILTER (WHERE email = $1), \
                    count(*), max(failed_at) \
             FROM login_failures WHERE client = $2 AND failed_at > $3",
        )
        .bind(email)
        .bind(client)
        .bind(now - chrono::Duration::from_std(WINDOW).unwrap_or_default())
        .fetch_one(pool)
        .await?;
        let wait_until = |failures: i64, allowed: u32, last: Option<DateTime<Utc>>| {
            Some(last? + chrono::Duration::from_std(backoff(failures, allowed)?).ok()?)
        };
        let for_pair = wait_until(with_email, self.failures, last_with_email);
        let for_address = wait_until(in_all, self.address_failures, last);
        self.remember(client, for_address, now);
        self.remember(&pair, for_pair, now);
        Ok(match for_pair.max(for_address) {
            Some(until) => wait_left(until, now),
            None => Ok(()),
        })
    }

    /// The later remembered wait of the address and of the address with the email.
    fn remembered(&self, address: &str, pair: &str) -> Option<DateTime<Utc>> {
        let waits = self.waits.lock().ok()?;
        waits.get(address).max(waits.get(pair)).copied()
    }

    /// Remembers a wait still to come, within the bound.
    fn remember(&self, key: &str, until: Option<DateTime<Utc>>, now: DateTime<Utc>) {
        let Some(until) = until.filter(|until| *until > now) else {
            return;
        };
        let Ok(mut waits) = self.waits.lock() else {
            return;
        };
        if waits.len() >= REMEMBERED_WAITS && !waits.contains_key(key) {
            waits.retain(|_, until| *until > now);
            if waits.len() >= REMEMBERED_WAITS {
                return;
            }
        }
        waits.insert(key.to_string(), until);
    }
}

/// A refusal while `until` is still to come.
fn wait_left(until: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), Refusal> {
    match (until - now).to_std() {
        Ok(left) if !left.is_zero() => Err(Refusal::Throttled {
            retry_after: left.max(Duration::from_secs(1)),
        }),
        _ => Ok(()),
    }
}

/// How long a client waits after `failures` recent ones when `allowed` are free: a minute
/// at the first one over, doubling each time, at most the window.
fn backoff(failures: i64, allowed: u32) -> Option<Duration> {
    let over = failures - i64::from(allowed);
    if over < 0 {
        return None;
    }
    let doublings = u32::try_from(over).unwrap_or(u32::MAX).min(10);
    Some(Duration::from_secs(60 << doublings).min(WINDOW))
}

/// Records a failed sign-in, and forgets up to a hundred failures older than the window, so
/// the table stays as small as the rate of failures allows.
pub async fn record_failure(
    pool: &PgPool,
    email: &str,
    client: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH old AS (DELETE FROM login_failures WHERE ctid IN \
           (SELECT ctid FROM login_failures WHERE failed_at < $4 LIMIT 100)) \
         INSERT INTO login_failures (email, client, failed_at) VALUES ($1, $2, $3)",
    )
    .bind(email)
    .bind(client)
    .bind(now)
    .bind(now - chrono::Duration::from_std(WINDOW).unwrap_or_default())
    .execute(pool)
    .await
    .map(|_| ())
}

/// The client's address: the peer's, or, when the peer is a trusted proxy, the nearest
/// address in `X-Forwarded-For` that is not one.
pub fn client_address(
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    trusted: &[ipnet::IpNet],
) -> Option<IpAddr> {
    let peer = peer?.ip();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|item| item.trim().parse::<IpAddr>())
        .collect::<Result<_, _>>()
        .unwrap_or_default();
    Some(
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !is_trusted(ip))
            .unwrap_or(peer),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_waits_stay_within_their_bound_and_expired_ones_make_room() {
        let limits = crate::config::Config::from_lookup(|_| None)
            .expect("the defaults")
            .limits;
        let gate = SignInGate::new(&limits);
        let now = Utc::now();
        let soon = now + chrono::Duration::seconds(5);
        for i in 0..REMEMBERED_WAITS {
            gate.remember(&format!("203.0.113.{i}"), Some(soon), now);
        }
        gate.remember("198.51.100.1", Some(soon), now);
        assert_eq!(gate.remembered("198.51.100.1", "-"), None, "full: not kept");
        assert_eq!(gate.remembered("203.0.113.7", "-"), Some(soon));
        gate.remember("198.51.100.1", None, now);
        gate.remember("198.51.100.1", Some(now), now);
        let later = soon + chrono::Duration::seconds(1);
        gate.remember(
            "198.51.100.1",
            Some(later + chrono::Duration::seconds(5)),
            later,
        );
        assert!(
            gate.remembered("198.51.100.1", "-").is_some(),
            "the expired waits were forgotten to make room"
        );
        assert_eq!(gate.waits.lock().expect("the waits").len(), 1);
    }

    fn headers(forwarded: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in forwarded {
            headers.append("x-forwarded-for", value.parse().expect("a header value"));
        }
        headers
    }

    #[test]
    fn forwarded_for_counts_only_from_a_trusted_proxy() {
        let proxy: SocketAddr = "10.0.0.5:4000".parse().expect("an address");
        let stranger: SocketAddr = "198.51.100.9:4000".parse().expect("an address");
        let trusted = vec!["10.0.0.0/8".parse().expect("a block")];
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        for (peer, forwarded, expected) in [
            // Not a proxy: its own address, whatever it claims.
            (stranger, vec!["203.0.113.1"], ip("198.51.100.9")),
            // A proxy: the nearest untrusted hop, not a spoofed first one.
            (proxy, vec!["1.2.3.4, 203.0.113.1"], ip("203.0.113.1")),
            (proxy, vec!["203.0.113.1, 10.0.0.7"], ip("203.0.113.1")),
            (proxy, vec!["1.2.3.4", "203.0.113.1"], ip("203.0.113.1")),
            // Nothing usable: the proxy itself.
            (proxy, vec![], ip("10.0.0.5")),
            (proxy, vec!["not an address"], ip("10.0.0.5")),
        ] {
            assert_eq!(
                client_address(Some(peer), &headers(&forwarded), &trusted),
                expected,
                "{peer} {forwarded:?}"
            );
        }
        assert_eq!(client_address(None, &headers(&[]), &trusted), None);
    }

    #[test]
    fn back_off_starts_past_the_allowance_and_doubles_up_to_the_window() {
        assert_eq!(backoff(4, 5), None);
        assert_eq!(backoff(5, 5), Some(Duration::from_secs(60)));
        assert_eq!(backoff(6, 5), Some(Duration::from_secs(120)));
        assert_eq!(backoff(8, 5), Some(Duration::from_secs(480)));
        assert_eq!(backoff(50, 5), Some(WINDOW));
    }

    #[test]
    fn the_instance_ceiling_refuses_past_its_count() {
        let limits = Limits {
            signin_per_minute: 3,
            ..crate::config::Config::from_lookup(|_| None)
                .expect("defaults")
                .limits
        };
        let gate = SignInGate::new(&limits);
        for _ in 0..3 {
            assert_eq!(gate.admit(), Ok(()));
        }
        assert!(matches!(gate.admit(), Err(Refusal::Busy { .. })));
    }

    #[tokio::test]
    async fn one_address_has_at_most_its_share_of_checks_in_progress() {
        let limits = Limits {
            password_checks: 8,
            ..crate::config::Config::from_lookup(|_| None)
                .expect("the defaults")
                .limits
        };
        let gate = SignInGate::new(&limits);
        let mut turns = Vec::new();
        for _ in 0..AT_ONCE_PER_ADDRESS {
            turns.push(gate.turn("203.0.113.1").await.expect("a turn"));
        }
        assert!(matches!(
            gate.turn("203.0.113.1").await,
            Err(Refusal::Crowded { .. })
        ));
        let other = gate
            .turn("198.51.100.2")
            .await
            .expect("another address waits not");
        turns.pop();
        let again = gate.turn("203.0.113.1").await.expect("a share given back");
        drop((turns, other, again));
        assert!(
            gate.at_once.lock().expect("the shares").is_empty(),
            "an address with nothing in progress is forgotten"
        );
    }
}
