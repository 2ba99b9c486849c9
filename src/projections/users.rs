//! People, their roles and their API tokens, for signing in and authorising.

use sqlx::{PgConnection, PgPool};

use crate::auth::{token_hash, Actor};
use crate::domain::user::UserEvent;
use crate::domain::Role;
use crate::store::log::StoredEvent;
use crate::store::subscription::{HandlerError, Subscriber};

#[derive(Debug, Default)]
pub struct Users;

fn role_text(role: Role) -> String {
    role.to_string()
}

impl Subscriber for Users {
    fn name(&self) -> &str {
        "users"
    }

    fn payload_types(&self) -> Option<&'static [&'static str]> {
        Some(&["User"])
    }

    fn ignores_other_types(&self) -> bool {
        true
    }

    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), HandlerError> {
        if event.aggregate_type != "User" {
            return Ok(());
        }
        let email = event.aggregate_id.as_str();
        let at = event.recorded_at;
        match event.decode::<UserEvent>()? {
            UserEvent::UserAdded {
                role,
                password_hash,
                ..
            } => {
                sqlx::query(
                    "INSERT INTO users (email, role, password_hash, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $4) ON CONFLICT (email) DO NOTHING",
                )
                .bind(email)
                .bind(role_text(role))
                .bind(password_hash)
                .bind(at)
                .execute(conn)
                .await?;
            }
            UserEvent::RoleGranted { role, .. } => {
                sqlx::query("UPDATE users SET role = $2, updated_at = $3 WHERE email = $1")
                    .bind(email)
                    .bind(role_text(role))
                    .bind(at)
                    .execute(conn)
                    .await?;
            }
            UserEvent::PasswordSet { password_hash, .. } => {
                sqlx::query(
                    "UPDATE users SET password_hash = $2, updated_at = $3 WHERE email = $1",
                )
                .bind(email)
                .bind(password_hash)
                .bind(at)
                .execute(conn)
                .await?;
            }
            UserEvent::TokenIssued {
                token_id,
                token_hash,
                ..
            } => {
                sqlx::query(
                    "INSERT INTO api_tokens (token_id, email, token_hash, issued_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (token_id) DO NOTHING",
                )
                .bind(token_id)
                .bind(email)
                .bind(token_hash)
                .bind(at)
                .execute(conn)
                .await?;
            }
            UserEvent::TokenRevoked { token_id, .. } => {
                sqlx::query("UPDATE api_tokens SET revoked_at = $2 WHERE token_id = $1")
                    .bind(token_id)
                    .bind(at)
                    .execute(conn)
                    .await?;
            }
            UserEvent::SlackLinked { slack_user_id, .. } => {
                // The commands check that nobody else holds the member; should two links
                // race, the later one wins here rather than stopping the projection.
                sqlx::query(
                    "UPDATE users SET slack_user_id = NULL, updated_at = $3 \
                     WHERE slack_user_id = $2 AND email <> $1",
                )
                .bind(email)
                .bind(slack_user_id.as_str())
                .bind(at)
                .execute(&mut *conn)
                .await?;
                sqlx::query(
                    "UPDATE users SET slack_user_id = $2, updated_at = $3 WHERE email = $1",
                )
                .bind(email)
                .bind(slack_user_id.as_str())
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
            UserEvent::UserDisabled { .. } => {
                sqlx::query("UPDATE users SET disabled_at = $2, updated_at = $2 WHERE email = $1")
                    .bind(email)
                    .bind(at)
                    .execute(conn)
                    .await?;
            }
            UserEvent::UserEnabled { .. } => {
                sqlx::query(
                    "UPDATE users SET disabled_at = NULL, updated_at = $2 WHERE email = $1",
                )
                .bind(email)
                .bind(at)
                .execute(conn)
                .await?;
            }
            // Links are operational state (`account_links`); the events are for the audit log.
            UserEvent::InvitationSent { .. } | UserEvent::PasswordResetSent { .. } => {}
            UserEvent::SlackUnlinked { slack_user_id, .. } => {
                sqlx::query(
                    "UPDATE users SET slack_user_id = NULL, updated_at = $3 \
                     WHERE email = $1 AND slack_user_id = $2",
                )
                .bind(email)
                .bind(slack_user_id.as_str())
                .bind(at)
                .execute(conn)
                .await?;
            }
        }
        Ok(())
    }
}

fn parse_role(role: &str) -> Option<Role> {
    serde_json::from_value(serde_json::Value::String(role.to_string())).ok()
}

/// A `users` row's email and role as an actor; `None` for a role this build does not know.
fn actor((email, role): (String, String)) -> Option<Actor> {
    Some(Actor {
        email,
        role: parse_role(&role)?,
    })
}

/// The person a live API token belongs to.
///
/// The token's last use is noted at `now`, written at most once a minute, so a script
/// calling the API is a read per request, not a commit.
pub async fn actor_for_token(
    pool: &PgPool,
    token: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<Actor>, sqlx::Error> {
    let row: Option<(String, String)> = sqlx::query_as(
        "WITH found AS ( \
           SELECT t.token_id, u.email, u.role FROM api_tokens t JOIN users u ON u.email = t.email \
           WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND u.disabled_at IS NULL), \
         touched AS ( \
           INSERT INTO token_uses (token_id, last_used_at) SELECT token_id, $2 FROM found \
           ON CONFLICT (token_id) DO UPDATE SET last_used_at = EXCLUDED.last_used_at \
           WHERE token_uses.last_used_at < EXCLUDED.last_used_at - interval '1 minute') \
         SELECT email, role FROM found",
    )
    .bind(token_hash(token))
    .bind(now)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(actor))
}

/// The person and their password hash, for signing in.
pub async fn credentials(
    pool: &PgPool,
    email: &str,
) -> Result<Option<(Actor, String)>, sqlx::Error> {
    let row: Option<(String, String, String)> = sqlx::query_as(
        "SELECT email, role, password_hash FROM users WHERE email = $1 AND disabled_at IS NULL",
    )
    .bind(email.trim().to_lowercase())
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|(email, role, hash)| Some((actor((email, role))?, hash))))
}

/// The person linked to a Slack member, if any.
pub async fn actor_for_slack(
    pool: &PgPool,
    slack_user_id: &str,
) -> Result<Option<Actor>, sqlx::Error> {
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT email, role FROM users WHERE slack_user_id = $1 AND disabled_at IS NULL",
    )
    .bind(slack_user_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(actor))
}

/// A person by email, with the Slack member they are linked to.
pub async fn person_with_slack(
    pool: &PgPool,
    email: &str,
) -> Result<Option<(Actor, Option<String>)>, sqlx::Error> {
    let row: Option<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT email, role, slack_user_id FROM users WHERE email = $1 AND disabled_at IS NULL",
    )
    .bind(email.trim().to_lowercase())
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|(email, role, slack)| Some((actor((email, role))?, slack))))
}

/// The Slack members of the people who may decide, with their emails, in email order.
/// Whether `requested_by` (an email, or `slack:MEMBER`) names the person with `email` and
/// Slack member `member`: the one a proposal is not put to for approval, as the decision
/// rule refuses them.
pub fn is_requester(requested_by: Option<&str>, email: &str, member: Option<&str>) -> bool {
    let Some(who) = requested_by.map(str::trim) else {
        return false;
    };
    who.eq_ignore_ascii_case(email)
        || member.is_some_and(|member| who.strip_prefix("slack:") == Some(member))
}

pub async fn slack_deciders<'e, E: sqlx::PgExecutor<'e>>(
    executor: E,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT email, slack_user_id FROM users \
         WHERE slack_user_id IS NOT NULL AND role IN ('admin', 'approver') \
         AND disabled_at IS NULL ORDER BY email",
    )
    .fetch_all(executor)
    .await
}

/// Who else the event log says is linked to a Slack member: read from the `User` streams
/// rather than the `users` table, so the command line sees links a server has not projected
/// yet.
pub async fn linked_elsewhere(
    pool: &PgPool,
    slack_user_id: &str,
    email: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT aggregate_id FROM ( \
             SELECT DISTINCT ON (aggregate_id) aggregate_id, event_type, payload FROM events \
             WHERE aggregate_type = 'User' AND event_type IN ('SlackLinked', 'SlackUnlinked') \
             ORDER BY aggregate_id, sequence DESC \
         ) last \
         WHERE event_type = 'SlackLinked' AND payload -> 'SlackLinked' ->> 'slack_user_id' = $1 \
           AND aggregate_id <> $2 \
         ORDER BY aggregate_id LIMIT 1",
    )
    .bind(slack_user_id)
    .bind(email)
    .fetch_optional(pool)
    .await
}

/// The accounts `email` has linked outside ExecOps, for the self-approval check.
pub async fn linked_accounts(
    pool: &PgPool,
    email: &str,
) -> Result<crate::domain::user::LinkedAccounts, sqlx::Error> {
    let slack_user_id: Option<Option<String>> =
        sqlx::query_scalar("SELECT slack_user_id FROM users WHERE email = $1")
            .bind(email.trim().to_lowercase())
            .fetch_optional(pool)
            .await?;
    Ok(crate::domain::user::LinkedAccounts {
        slack_user_id: slack_user_id.flatten(),
        github_login: None,
    })
}

/// One person as `execops user list` and the people page show them: never a secret.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct Person {
    pub email: String,
    pub role: String,
    /// When they were disabled; `None` while they may act.
    pub disabled_at: Option<chrono::DateTime<chrono::Utc>>,
    pub slack_user_id: Option<String>,
    /// Their tokens not revoked.
    pub live_tokens: i64,
    /// When they last signed in, if ever.
    pub signed_in_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Everyone, by email.
pub async fn people(pool: &PgPool) -> Result<Vec<Person>, sqlx::Error> {
    sqlx::query_as(
        "SELECT u.email, u.role, u.disabled_at, u.slack_user_id, \
                (SELECT count(*) FROM api_tokens t \
                 WHERE t.email = u.email AND t.revoked_at IS NULL) AS live_tokens, \
                s.last_sign_in AS signed_in_at \
         FROM users u LEFT JOIN sign_ins s USING (email) ORDER BY u.email",
    )
    .fetch_all(pool)
    .await
}

/// How many admins other than `email` may act: disabling or demoting the last one would
/// leave nobody able to manage the team.
pub async fn other_active_admins(pool: &PgPool, email: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM users WHERE role = 'admin' AND disabled_at IS NULL AND email <> $1",
    )
    .bind(email)
    .fetch_one(pool)
    .await
}

/// One of a person's API tokens: never its secret or hash.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct TokenRow {
    pub token_id: String,
    pub issued_at: chrono::DateTime<chrono::Utc>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
    /// To the minute; `None` for a token never used.
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// `email`'s tokens, newest first.
pub async fn tokens(pool: &PgPool, email: &str) -> Result<Vec<TokenRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t.token_id, t.issued_at, t.revoked_at, u.last_used_at \
         FROM api_tokens t LEFT JOIN token_uses u USING (token_id) WHERE t.email = $1 \
         ORDER BY t.issued_at DESC, t.token_id",
    )
    .bind(email)
    .fetch_all(pool)
    .await
}
