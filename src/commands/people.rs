//! Changes to the team, whoever makes them (the command line or the people page): each is a
//! command on the person's stream, returns once the users read model that authorises every
//! request has applied it, and keeps the team with an admin who may act. Disabling someone
//! also ends their sessions.

use std::time::Duration;

use crate::domain::user::{Email, UserCommand, UserError};
use crate::domain::Role;
use crate::projections::users::{other_active_admins, people};
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
    let is_active_admin = people(store.pool())
        .await?
        .into_iter()
        .any(|p| p.email == email.as_str() && p.role == "admin" && p.disabled_at.is_none());
    if is_active_admin && other_active_admins(store.pool(), email.as_str()).await? == 0 {
        return Err(PeopleError::LastAdmin(email.to_string()));
    }
    Ok(())
}
