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
        match serde_json::from_value::<UserEvent>(event.payload.clone())? {
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
        }
        Ok(())
    }
}

fn parse_role(role: &str) -> Option<Role> {
    serde_json::from_value(serde_json::Value::String(role.to_string())).ok()
}

/// The person a live API token belongs to.
pub async fn actor_for_token(pool: &PgPool, token: &str) -> Result<Option<Actor>, sqlx::Error> {
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT u.email, u.role FROM api_tokens t JOIN users u ON u.email = t.email \
         WHERE t.token_hash = $1 AND t.revoked_at IS NULL",
    )
    .bind(token_hash(token))
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|(email, role)| {
        Some(Actor {
            email,
            role: parse_role(&role)?,
        })
    }))
}

/// The person and their password hash, for signing in.
pub async fn credentials(
    pool: &PgPool,
    email: &str,
) -> Result<Option<(Actor, String)>, sqlx::Error> {
    let row: Option<(String, String, String)> =
        sqlx::query_as("SELECT email, role, password_hash FROM users WHERE email = $1")
            .bind(email.trim().to_lowercase())
            .fetch_optional(pool)
            .await?;
    Ok(row.and_then(|(email, role, hash)| {
        Some((
            Actor {
                email,
                role: parse_role(&role)?,
            },
            hash,
        ))
    }))
}

/// The accounts `email` has linked outside ExecOps, for the self-approval check. No link can
/// be recorded yet, so there are none; each kind of link is read here once people can make
/// it (the Slack member id beside the user's row, for one).
pub async fn linked_accounts(
    _pool: &PgPool,
    _email: &str,
) -> Result<crate::domain::user::LinkedAccounts, sqlx::Error> {
    Ok(crate::domain::user::LinkedAccounts::default())
}
