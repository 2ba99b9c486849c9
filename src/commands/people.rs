//! Changes to the team, whoever makes them (the command line or the people page): each is a
//! command on the person's stream, returns once the users read model that authorises every
//! request has applied it, and keeps the team with an admin who may act. Disabling someone
//! also ends their sessions.

use std::time::Duration;

use crate::domain::user::{Email, UserCommand, UserError};
use crate::domain::Role;
use crate::projections::users::other_active_admins;
use crate::store::subscription::{wait_applied, WaitError};
use crate::store::{CommandError, Metadata};

use super::Store;

/// How long a change waits for the users read model before saying it has not applied yet.
const APPLIED_WITHIN: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum PeopleError {
    #[error("{0} is the last admin who may act; make someone else an admin first")]
    LastAdmin(String),
    #[error(transparent)]
    Command(#[from] CommandError<UserError>),
    #[error(transparent)]
    NotApplied(#[from] WaitError),
    #[error("the database failed: {0}")]
    Database(#[from] sqlx::Error),
}

/// Records `command` on `email`'s stream with `metadata`, and returns once it holds for the
/// person's next request.
pub async fn change(
    store: &Store,
    email: &Email,
    command: UserCommand,
    metadata: Metadata,
) -> Result<(), PeopleError> {
    let disabling = record(store, email, command, metadata).await?;
    applied(store, email, disabling).await
}

/// Records `command` once the team keeps an admin without it; true for a disabling.
async fn record(
    store: &Store,
    email: &Email,
    command: UserCommand,
    metadata: Metadata,
) -> Result<bool, PeopleError> {
    let leaves_admins = match &command {
        UserCommand::Disable { .. } => true,
        UserCommand::GrantRole { role, .. } => *role != Role::Admin,
        _ => false,
    };
    if leaves_admins {
        keep_an_admin(store, email).await?;
    }
    let disabling = matches!(command, UserCommand::Disable { .. });
    store.user(email, command, metadata.into()).await?;
    Ok(disabling)
}

/// Returns once the users read model holds `email`'s last change (ending their sessions when
/// it disabled them).
async fn applied(store: &Store, email: &Email, disabling: bool) -> Result<(), PeopleError> {
    wait_applied(
        store.pool(),
        crate::projections::Users,
        "User",
        email.as_str(),
        APPLIED_WITHIN,
    )
    .await?;
    if disabling {
        // The read model already refuses their sessions; this forgets them too.
        sqlx::query("DELETE FROM sessions WHERE email = $1")
            .bind(email.as_str())
            .execute(store.pool())
            .await?;
    }
    Ok(())
}

/// Refuses a change that would leave no admin who may act. Two admins demoting each other
/// at the same moment could both pass; the team then has to be repaired from the command
/// line with `execops user set-role`.
async fn keep_an_admin(store: &Store, email: &Email) -> Result<(), PeopleError> {
    let is_active_admin: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM users \
                        WHERE email = $1 AND role = 'admin' AND disabled_at IS NULL)",
    )
    .bind(email.as_str())
    .fetch_one(store.pool())
    .await?;
    if is_active_admin && other_active_admins(store.pool(), email.as_str()).await? == 0 {
        return Err(PeopleError::LastAdmin(email.to_string()));
    }
    Ok(())
}

/// How long an invite may wait to be taken up.
pub const INVITE_VALID: chrono::Duration = chrono::Duration::days(7);
/// How long a password reset link works.
pub const RESET_VALID: chrono::Duration = chrono::Duration::hours(2);

/// What a link lets its holder do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Join as a new person with this role.
    Invite(Role),
    /// Set a new password for an existing person.
    Reset,
}

/// A link someone opened, as long as it may still be used.
#[derive(Clone, Debug)]
pub struct AccountLink {
    pub email: String,
    pub purpose: Purpose,
    pub created_by: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{0} is already an ExecOps user; send them a password reset instead")]
    AlreadyAPerson(String),
    #[error("{0} is not an ExecOps user who may sign in")]
    NoSuchPerson(String),
    #[error("this link is unknown, used already or expired; ask an admin for a new one")]
    Unusable,
    #[error(transparent)]
    People(#[from] PeopleError),
    #[error("the database failed: {0}")]
    Database(#[from] sqlx::Error),
}

/// Makes a single-use link for `email` and gives back its secret, which is not kept: the
/// caller shows or mails it once. A new link for the same email and purpose replaces any
/// earlier one still unused. The sending is recorded first (`InvitationSent` or
/// `PasswordResetSent` on the person's stream, with `metadata`'s actor), so the audit log
/// shows every link that ever let someone in.
pub async fn issue_link(
    store: &Store,
    email: &Email,
    purpose: Purpose,
    metadata: Metadata,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<String, LinkError> {
    let by = metadata.actor.clone().unwrap_or_else(|| "cli".into());
    let pool = store.pool();
    // `Some(true)` for a person who may sign in, `Some(false)` for a disabled one.
    let active: Option<bool> =
        sqlx::query_scalar("SELECT disabled_at IS NULL FROM users WHERE email = $1")
            .bind(email.as_str())
            .fetch_optional(pool)
            .await?;
    let (kind, role, valid) = match &purpose {
        Purpose::Invite(_) if active.is_some() => {
            return Err(LinkError::AlreadyAPerson(email.to_string()))
        }
        Purpose::Reset if active != Some(true) => {
            return Err(LinkError::NoSuchPerson(email.to_string()))
        }
        Purpose::Invite(role) => ("invite", Some(role.to_string()), INVITE_VALID),
        Purpose::Reset => ("reset", None, RESET_VALID),
    };
    let command = match &purpose {
        Purpose::Invite(role) => UserCommand::Invite {
            role: *role,
            by: by.clone(),
            expires_at: now + valid,
        },
        Purpose::Reset => UserCommand::SendPasswordReset {
            by: by.clone(),
            expires_at: now + valid,
        },
    };
    store
        .user(email, command, metadata.into())
        .await
        .map_err(PeopleError::from)?;
    let (_, secret, _) = crate::auth::new_token();
    let mut tx = pool.begin().await?;
    // An unused link for the same email and purpose gives way, and links used or expired a
    // day ago are forgotten (a hundred at a time), with no timer.
    sqlx::query(
        "DELETE FROM account_links WHERE (email = $1 AND purpose = $2 AND used_at IS NULL) \
            OR ctid IN (SELECT ctid FROM account_links \
                        WHERE coalesce(used_at, expires_at) < $3 - interval '1 day' LIMIT 100)",
    )
    .bind(email.as_str())
    .bind(kind)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO account_links \
           (token_hash, email, purpose, role, created_by, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(crate::auth::token_hash(&secret))
    .bind(email.as_str())
    .bind(kind)
    .bind(role)
    .bind(&by)
    .bind(now)
    .bind(now + valid)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(secret)
}

type LinkRow = (
    String,
    String,
    Option<String>,
    String,
    chrono::DateTime<chrono::Utc>,
);

fn link_of(row: LinkRow) -> Option<AccountLink> {
    let (email, kind, role, created_by, expires_at) = row;
    let purpose = match kind.as_str() {
        "invite" => Purpose::Invite(serde_json::from_value(serde_json::Value::String(role?)).ok()?),
        _ => Purpose::Reset,
    };
    Some(AccountLink {
        email,
        purpose,
        created_by,
        expires_at,
    })
}

/// The link for `secret`, if it may still be used at `now`. Opening it uses nothing.
pub async fn open_link(
    pool: &sqlx::PgPool,
    secret: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<AccountLink>, sqlx::Error> {
    let row: Option<LinkRow> = sqlx::query_as(
        "SELECT email, purpose, role, created_by, expires_at FROM account_links \
         WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
    )
    .bind(crate::auth::token_hash(secret))
    .bind(now)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(link_of))
}

/// Uses the link for `secret` once, setting `password_hash` as the person's password: an
/// invite adds them with the invited role (by whoever invited them), a reset sets the
/// password and ends their sessions. A second use, or one after expiry, is refused.
///
/// The link is marked used in a transaction that commits only once the change is recorded:
/// a concurrent use of the same link waits on its row and then finds it used, and a change
/// that fails (the store unreachable) leaves the link as it was, to be tried again.
pub async fn redeem_link(
    store: &Store,
    secret: &str,
    password_hash: String,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Email, LinkError> {
    let mut claim = store.pool().begin().await?;
    let row: Option<LinkRow> = sqlx::query_as(
        "UPDATE account_links SET used_at = $2 \
         WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 \
         RETURNING email, purpose, role, created_by, expires_at",
    )
    .bind(crate::auth::token_hash(secret))
    .bind(now)
    .fetch_optional(&mut *claim)
    .await?;
    let link = row.and_then(link_of).ok_or(LinkError::Unusable)?;
    let email = Email::parse(&link.email).map_err(|_| LinkError::Unusable)?;
    let (command, metadata) = match link.purpose {
        Purpose::Invite(role) => (
            UserCommand::Add {
                email: email.clone(),
                role,
                password_hash,
                by: link.created_by.clone(),
            },
            Metadata::via("invite link").actor(&link.created_by),
        ),
        Purpose::Reset => (
            UserCommand::SetPassword {
                password_hash,
                by: format!("reset link from {}", link.created_by),
            },
            Metadata::via("reset link").actor(email.as_str()),
        ),
    };
    let resetting = matches!(command, UserCommand::SetPassword { .. });
    // Committed before waiting for the read model: the subscriptions read the log only up
    // to the oldest transaction still open, which this claim would be.
    record(store, &email, command, metadata).await?;
    claim.commit().await?;
    applied(store, &email, false).await?;
    if resetting {
        sqlx::query("DELETE FROM sessions WHERE email = $1")
            .bind(email.as_str())
            .execute(store.pool())
            .await?;
    }
    Ok(email)
}

/// Who made a link, as its holder is told: the command line is "An ExecOps admin".
pub fn who(by: &str) -> &str {
    if by == "cli" {
        "An ExecOps admin"
    } else {
        by
    }
}

/// Makes a link (as [`issue_link`]) and tells its holder: by email when a mail server is
/// set, and always gives the address back for whoever made it to pass on. Returns the
/// address and whether it was mailed (with why not, when mailing failed).
pub async fn send_link(
    store: &Store,
    config: &crate::config::Config,
    email: &Email,
    purpose: Purpose,
    metadata: Metadata,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(String, Result<bool, String>), LinkError> {
    let by = metadata.actor.clone().unwrap_or_else(|| "cli".into());
    let secret = issue_link(store, email, purpose.clone(), metadata, now).await?;
    let by = who(&by);
    let address = format!("{}/account/{secret}", config.public_base());
    let (subject, text) = match purpose {
        Purpose::Invite(role) => (
            "You are invited to ExecOps".to_string(),
            format!(
                "{by} invited you to ExecOps as {role}.\n\nChoose your password here (the link \
                 works once, for {} days):\n{address}\n",
                INVITE_VALID.num_days()
            ),
        ),
        Purpose::Reset => (
            "A new ExecOps password".to_string(),
            format!(
                "{by} sent you a link to choose a new ExecOps password (it works once, for {} \
                 hours):\n{address}\n\nIf you did not expect it, tell them.\n",
                RESET_VALID.num_hours()
            ),
        ),
    };
    let mailed = crate::notify::email::send_plain(config, email.as_str(), &subject, text).await;
    Ok((address, mailed))
}
