//! Browser sessions in Postgres: a random cookie (HttpOnly, SameSite=Lax, Secure unless
//! served on loopback) whose hash keys a row with the person, a CSRF token, an idle and an
//! absolute expiry. Several `serve` processes share them. Expiry is judged by the app's
//! clock, passed to every query, never by the database's.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use super::AppState;
use crate::auth::{token_hash, Actor};
use crate::domain::Role;

pub use crate::config::{SessionPolicy, COOKIE, SECURE_COOKIE};

/// A signed-in person, from the session cookie.
#[derive(Clone, Debug)]
pub struct Session {
    pub actor: Actor,
    pub csrf: String,
    id_hash: String,
}

impl Session {
    /// What tells this session from others without revealing its cookie.
    pub fn key(&self) -> &str {
        &self.id_hash
    }

    /// The token a state-changing request must echo, compared in constant time.
    pub fn check_csrf(&self, presented: Option<&str>) -> bool {
        presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(self.csrf.as_bytes())))
    }
}

fn random_secret() -> String {
    crate::auth::new_token().1
}

/// Starts a session at `now`; returns the `Set-Cookie` value. It also forgets up to a
/// hundred sessions that have ended (past their absolute or idle limit), so the table stays
/// as small as the sign-ins allow, with no timer.
pub async fn start(
    pool: &PgPool,
    email: &str,
    policy: &SessionPolicy,
    now: DateTime<Utc>,
) -> Result<String, sqlx::Error> {
    let secret = random_secret();
    let expires = now + chrono::Duration::from_std(policy.absolute).unwrap_or_default();
    sqlx::query(
        "WITH ended AS (DELETE FROM sessions WHERE ctid IN \
           (SELECT ctid FROM sessions \
            WHERE expires_at <= $5 OR last_seen_at <= $5 - make_interval(secs => $6) LIMIT 100)), \
         noted AS (INSERT INTO sign_ins (email, last_sign_in) VALUES ($2, $5) \
           ON CONFLICT (email) DO UPDATE SET last_sign_in = EXCLUDED.last_sign_in) \
         INSERT INTO sessions (id_hash, email, csrf_token, expires_at, last_seen_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(token_hash(&secret))
    .bind(email)
    .bind(random_secret())
    .bind(expires)
    .bind(now)
    .bind(policy.idle.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(format!(
        "{}={secret}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
        policy.cookie_name(),
        policy.absolute.as_secs(),
        if policy.secure_cookie { "; Secure" } else { "" }
    ))
}

pub async fn end(
    pool: &PgPool,
    session: &Session,
    policy: &SessionPolicy,
) -> Result<String, sqlx::Error> {
    sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
        .bind(&session.id_hash)
        .execute(pool)
        .await?;
    Ok(format!(
        "{}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{}",
        policy.cookie_name(),
        if policy.secure_cookie { "; Secure" } else { "" }
    ))
}

/// The value of the cookie `name` a request carries.
pub fn cookie_value(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(found, _)| *found == name)
        .map(|(_, value)| value.to_string())
}

/// The session of a request, if it has a live one. Touching it extends the idle expiry; it is
/// written at most once a minute (or a tenth of the idle limit, if that is shorter), so a
/// person paging is read, not a commit per request.
pub async fn current(state: &AppState, parts: &Parts) -> Result<Option<Session>, sqlx::Error> {
    let Some(secret) = cookie_value(&parts.headers, state.config.session.cookie_name()) else {
        return Ok(None);
    };
    let idle = state.config.session.idle.as_secs_f64();
    let touch_after = (idle / 10.0).min(60.0);
    let row: Option<(String, String, String, String)> = sqlx::query_as(
        "WITH live AS ( \
           SELECT s.id_hash, u.email, u.role, s.csrf_token, s.last_seen_at FROM sessions s \
           JOIN users u ON u.email = s.email \
           WHERE s.id_hash = $1 AND s.expires_at > $3 AND u.disabled_at IS NULL \
             AND s.last_seen_at > $3 - make_interval(secs => $2)), \
         touched AS ( \
           UPDATE sessions SET last_seen_at = $3 WHERE id_hash IN \
             (SELECT id_hash FROM live WHERE last_seen_at <= $3 - make_interval(secs => $4))) \
         SELECT id_hash, email, role, csrf_token FROM live",
    )
    .bind(token_hash(&secret))
    .bind(idle)
    .bind(state.clock.now())
    .bind(touch_after)
    .fetch_optional(state.store.pool())
    .await?;
    Ok(row.and_then(|(id_hash, email, role, csrf)| {
        let role: Role = serde_json::from_value(serde_json::Value::String(role)).ok()?;
        Some(Session {
            actor: Actor { email, role },
            csrf,
            id_hash,
        })
    }))
}

/// Pages need a session; without one the browser goes to the sign-in page.
impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match current(state, parts).await {
            Ok(Some(session)) => Ok(session),
            Ok(None) => Err(Redirect::to("/login").into_response()),
            Err(error) => {
                tracing::warn!(%error, "session lookup failed");
                Err((
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database is unreachable; try again",
                )
                    .into_response())
            }
        }
    }
}
