//! Every decision path in one place. The inbox, the API, Slack's buttons, email links and
//! the bulk approval all decide through [`decide`], so the same rules hold on each: the
//! decider's role, a requester approving their own proposal under any name they go by, the
//! hash of the action the person was shown, a proposal past its expiry (settled first, and
//! refused by the aggregate itself), and a person deciding twice. The refusals are a
//! [`DecisionError`] of their own, which each channel words in its own way and `web::error`
//! turns into HTTP once.

use std::collections::HashMap;

use crate::auth::{Actor, Permission};
use crate::clock::Clock;
use crate::commands::Store;
use crate::domain::user::{identities_of, Email};
use crate::domain::{Decision, Proposal, ProposalCommand, ProposalError, Status};
use crate::projections::proposals::{by_id, Summary};
use crate::projections::users::linked_accounts;
use crate::store::CommandError;

/// A person's decision on a proposal, from any channel.
#[derive(Debug, Clone)]
pub struct DecisionRequest {
    pub approve: bool,
    pub comment: Option<String>,
    pub reason: Option<String>,
    /// The hash of the payload the person was shown; `None` takes the current one.
    pub shown_hash: Option<String>,
    pub metadata: HashMap<String, String>,
}

/// What a decision did, for the channel to say: "approved, 1 of 2".
#[derive(Clone, Debug, PartialEq)]
pub struct DecisionOutcome {
    /// `Pending` while approvals short of the quorum gather.
    pub status: Status,
    pub approved_by: Vec<String>,
    pub approvals_needed: u32,
    pub rejected_by: Vec<String>,
    pub rejections_needed: u32,
}

impl DecisionOutcome {
    fn of(proposal: &Proposal) -> Self {
        Self {
            status: proposal.status(),
            approved_by: proposal.approved_by().to_vec(),
            approvals_needed: proposal.terms().approvals_needed,
            rejected_by: proposal.rejected_by().to_vec(),
            rejections_needed: proposal.terms().rejections_needed,
        }
    }

    /// "approved", "approved, 1 of 2 approvals", "rejected", "rejected, 1 of 2 rejections".
    pub fn summary(&self) -> String {
        match self.status {
            Status::Pending if self.rejected_by.len() > self.approved_by.len() => format!(
                "rejection recorded, {} of {} rejections",
                self.rejected_by.len(),
                self.rejections_needed
            ),
            Status::Pending => format!(
                "approval recorded, {} of {} approvals",
                self.approved_by.len(),
                self.approvals_needed
            ),
            status => status.to_string(),
        }
    }
}

/// Why a decision, or another person's command on a proposal, was not recorded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecisionError {
    #[error("no proposal {0}")]
    NotFound(String),
    /// The person's role, or their having asked for it, rules them out.
    #[error("{0}")]
    Forbidden(String),
    #[error("the proposal expired undecided; nothing was decided")]
    Expired,
    #[error("{0}")]
    AlreadyDecided(String),
    #[error("{0}")]
    AlreadyApproved(String),
    #[error("{0}")]
    AlreadyRejected(String),
    /// The action changed since the person saw it.
    #[error("{0}")]
    PayloadChanged(String),
    #[error("the proposal changed at the same moment; reload it")]
    Raced,
    /// Any other state that does not allow the command now (not executed, window closed…).
    #[error("{0}")]
    NotNow(String),
    #[error("the database cannot be reached: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl DecisionError {
    /// A refused proposal command, sorted.
    pub fn of_command(id: &str, error: CommandError<ProposalError>) -> Self {
        use ProposalError as P;
        match error {
            CommandError::Refused(P::NotDrafted) => DecisionError::NotFound(id.to_string()),
            CommandError::Refused(e @ (P::RoleMayNotDecide(_) | P::SelfApproval)) => {
                DecisionError::Forbidden(e.to_string())
            }
            CommandError::Refused(e @ P::PayloadChanged) => {
                DecisionError::PayloadChanged(e.to_string())
            }
            CommandError::Refused(P::NotPending(Status::Expired) | P::PastExpiry(_)) => {
                DecisionError::Expired
            }
            CommandError::Refused(e @ P::NotPending(_)) => {
                DecisionError::AlreadyDecided(e.to_string())
            }
            CommandError::Refused(e @ P::AlreadyApprovedBy(_)) => {
                DecisionError::AlreadyApproved(e.to_string())
            }
            CommandError::Refused(e @ P::AlreadyRejectedBy(_)) => {
                DecisionError::AlreadyRejected(e.to_string())
            }
            CommandError::Refused(e) => DecisionError::NotNow(e.to_string()),
            CommandError::Conflict => DecisionError::Raced,
            CommandError::Unavailable(cause) => DecisionError::Unavailable(cause),
            other => DecisionError::Internal(other.to_string()),
        }
    }
}

impl From<sqlx::Error> for DecisionError {
    fn from(error: sqlx::Error) -> Self {
        if crate::store::is_unavailable(&error) {
            DecisionError::Unavailable(error.to_string())
        } else {
            DecisionError::Internal(error.to_string())
        }
    }
}

impl<E: std::error::Error> From<CommandError<E>> for DecisionError {
    fn from(error: CommandError<E>) -> Self {
        match error {
            CommandError::Unavailable(cause) => DecisionError::Unavailable(cause),
            other => DecisionError::Internal(other.to_string()),
        }
    }
}

/// Settles the overdue deadlines of rows about to be shown or decided.
pub async fn settle(
    store: &Store,
    clock: &Clock,
    rows: &mut [Summary],
    via: &str,
) -> Result<(), DecisionError> {
    crate::deadlines::settle_rows(store, rows, clock.now(), via)
        .await
        .map_err(DecisionError::from)
}

/// Runs a decision for `actor`: the one path every channel uses. Overdue deadlines are
/// settled first, so a proposal past its expiry is refused as expired, never approved; the
/// command carries the time, so the aggregate refuses it past expiry by itself too.
pub async fn decide(
    store: &Store,
    clock: &Clock,
    actor: &Actor,
    id: &str,
    request: DecisionRequest,
) -> Result<DecisionOutcome, DecisionError> {
    actor
        .may(Permission::Decide)
        .map_err(|forbidden| DecisionError::Forbidden(forbidden.to_string()))?;
    let mut proposal = by_id(store.pool(), id)
        .await?
        .ok_or_else(|| DecisionError::NotFound(id.to_string()))?;
    settle(
        store,
        clock,
        std::slice::from_mut(&mut proposal),
        "decision",
    )
    .await?;
    let identities = match Email::parse(&actor.email) {
        Ok(email) => {
            let links = linked_accounts(store.pool(), email.as_str()).await?;
            identities_of(&email, &links)
        }
        Err(_) => Vec::new(),
    };
    let decision = Decision {
        actor: actor.email.clone(),
        role: actor.role,
        comment: request.comment,
        payload_hash: request.shown_hash.unwrap_or(proposal.payload_hash),
        identities,
        at: Some(clock.now()),
    };
    let command = if request.approve {
        ProposalCommand::Approve(decision)
    } else {
        ProposalCommand::Reject {
            decision,
            reason: request.reason.unwrap_or_default(),
        }
    };
    store
        .proposal(id, command, request.metadata)
        .await
        .map_err(|error| match error {
            // Someone decided it at the same moment: for a decision, that is "decided".
            CommandError::Conflict => {
                DecisionError::AlreadyDecided("someone else decided it at the same moment".into())
            }
            other => DecisionError::of_command(id, other),
        })?;
    let after = store.load_proposal(id).await?;
    Ok(DecisionOutcome::of(&after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Role;
    use chrono::{DateTime, Utc};

    #[test]
    fn each_refusal_is_sorted_once_for_every_channel() {
        let at = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        let refused = |e: ProposalError| DecisionError::of_command("p1", CommandError::Refused(e));
        for (error, expected) in [
            (
                ProposalError::NotDrafted,
                DecisionError::NotFound("p1".into()),
            ),
            (
                ProposalError::RoleMayNotDecide(Role::Viewer),
                DecisionError::Forbidden(ProposalError::RoleMayNotDecide(Role::Viewer).to_string()),
            ),
            (
                ProposalError::SelfApproval,
                DecisionError::Forbidden(ProposalError::SelfApproval.to_string()),
            ),
            (
                ProposalError::PayloadChanged,
                DecisionError::PayloadChanged(ProposalError::PayloadChanged.to_string()),
            ),
            (ProposalError::PastExpiry(at), DecisionError::Expired),
            (
                ProposalError::NotPending(Status::Expired),
                DecisionError::Expired,
            ),
            (
                ProposalError::NotPending(Status::Approved),
                DecisionError::AlreadyDecided(
                    ProposalError::NotPending(Status::Approved).to_string(),
                ),
            ),
            (
                ProposalError::UndoWindowClosed(at),
                DecisionError::NotNow(ProposalError::UndoWindowClosed(at).to_string()),
            ),
        ] {
            assert_eq!(refused(error.clone()), expected, "{error:?}");
        }
        assert_eq!(
            DecisionError::of_command("p1", CommandError::Conflict),
            DecisionError::Raced
        );
    }
}
