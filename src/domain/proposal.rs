//! The `Proposal` aggregate: an action ExecOps suggests, from draft through a person's
//! decision to execution, rollback and outcome. The rules here are the product's promise:
//! nothing executes without an approval by a person allowed to give it, for exactly the
//! payload that person was shown.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

use super::quorum::ApprovalTerms;
use super::values::{payload_hash, ProposalId, Role, Urgency, Vertical};

/// Everything a policy decides about a proposal before a person sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProposalDraft {
    pub id: ProposalId,
    pub title: String,
    pub vertical: Vertical,
    pub action_type: String,
    /// The exact payload the adapter will send if the proposal is approved.
    pub action: Value,
    pub reasoning: String,
    pub drivers: Vec<String>,
    pub score: u8,
    pub urgency: Urgency,
    pub due_by: Option<DateTime<Utc>>,
    pub owner: Option<String>,
    pub inbound_ids: Vec<String>,
    /// Two pending proposals never exist for one subject.
    pub subject_key: String,
    /// The person who asked for it, when a person did; they may not approve it.
    pub requested_by: Option<String>,
    /// The later signal that shows the action worked (an invoice paid, a build green), as
    /// the outcome attributor keys it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome_key: Option<String>,
    /// What its approval takes: quorum, rejections, expiry, escalation ladder.
    #[serde(flatten, default)]
    pub terms: ApprovalTerms,
}

/// A newer signal's version of a pending proposal on the same subject.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Revision {
    pub title: String,
    pub action: Value,
    pub reasoning: String,
    pub drivers: Vec<String>,
    pub score: u8,
    pub urgency: Urgency,
    pub due_by: Option<DateTime<Utc>>,
    /// The signal that brought it; a proposal takes each signal once.
    pub inbound_id: String,
    /// What approving the revised action takes, derived again from it (a larger amount may
    /// need a larger quorum) and from the time of the revision: quorum, rejections, expiry
    /// and escalation ladder, which starts again. Absent in revisions recorded before terms
    /// were re-derived: those kept the draft's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terms: Option<ApprovalTerms>,
}

/// A person's decision, bound to the hash of the payload they were shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub actor: String,
    pub role: Role,
    pub comment: Option<String>,
    pub payload_hash: String,
    /// The names the decider goes by elsewhere (`slack:U…`, `github:login`), looked up
    /// before the command, so a proposal they requested under any of them is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<String>,
    /// When the decision is made: the command carries it so that the aggregate itself
    /// refuses a decision past the proposal's expiry, whoever settled it or not. The event's
    /// own time is its `recorded_at`, so this is not stored.
    #[serde(skip)]
    pub at: Option<DateTime<Utc>>,
}

impl Decision {
    /// Whether the decider is `who`, under their email or any other name they go by.
    fn is(&self, who: &str) -> bool {
        let who = who.trim();
        std::iter::once(&self.actor)
            .chain(&self.identities)
            .any(|name| name.trim().eq_ignore_ascii_case(who))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProposalCommand {
    Draft(ProposalDraft),
    /// Record what would have been proposed while its action type is disabled.
    Suppress {
        draft: ProposalDraft,
        reason: String,
    },
    Revise(Revision),
    Approve(Decision),
    Reject {
        decision: Decision,
        reason: String,
    },
    /// Expire it undecided; `at` is now, and it is refused before the proposal's expiry.
    Expire {
        at: DateTime<Utc>,
    },
    /// Tell the next level of the escalation ladder; `at` is now, refused before that
    /// level's time.
    Escalate {
        at: DateTime<Utc>,
    },
    Supersede {
        by: Option<ProposalId>,
        reason: String,
    },
    /// Record the exact requests an execution would send, sent nowhere.
    Preview {
        actor: String,
        requests: Value,
    },
    /// Record that a guardrail holds the approved execution back.
    Defer {
        reason: String,
        until: Option<DateTime<Utc>>,
    },
    StartExecution,
    RecordSuccess {
        attempt: u32,
        result: Value,
        at: DateTime<Utc>,
    },
    RecordFailure {
        attempt: u32,
        error: String,
        retryable: bool,
    },
    RecordUncertain {
        attempt: u32,
        reason: String,
    },
    /// A person asks for the executed action to be undone. Undo is an action like any
    /// other: it takes as many distinct people as the approval did, and the executor carries
    /// it out behind the same guardrails.
    RequestRollback {
        actor: String,
        role: Role,
        reason: String,
        /// Now, and how long after execution an undo is allowed.
        at: DateTime<Utc>,
        window: chrono::Duration,
    },
    /// The executor is about to call the adapter's rollback.
    StartRollback,
    RecordRollback {
        attempt: u32,
        result: Value,
    },
    RecordRollbackFailure {
        attempt: u32,
        error: String,
        retryable: bool,
    },
    RecordRollbackUncertain {
        attempt: u32,
        reason: String,
    },
    /// A person checked that an uncertain execution did take effect.
    MarkDone {
        actor: String,
        role: Role,
        note: Option<String>,
    },
    /// A person asks for another attempt of an uncertain or failed execution.
    RequestRetry {
        actor: String,
        role: Role,
    },
    RecordOutcome {
        kind: String,
        summary: String,
        value_cents: Option<i64>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ProposalEvent {
    Drafted {
        #[serde(flatten)]
        draft: ProposalDraft,
        payload_hash: String,
    },
    DraftSuppressed {
        #[serde(flatten)]
        draft: ProposalDraft,
        payload_hash: String,
        reason: String,
    },
    Revised {
        #[serde(flatten)]
        revision: Revision,
        payload_hash: String,
    },
    /// An approval short of the quorum; the proposal stays pending.
    ApprovalAdded(Decision),
    /// The approval that completes the quorum (the only one, with a quorum of 1).
    Approved(Decision),
    /// A rejection short of the rejections needed; the proposal stays pending.
    RejectionAdded {
        #[serde(flatten)]
        decision: Decision,
        reason: String,
    },
    Rejected {
        #[serde(flatten)]
        decision: Decision,
        reason: String,
    },
    Expired {
        at: DateTime<Utc>,
    },
    /// The approvers of ladder level `level` are to be told it still waits.
    Escalated {
        at: DateTime<Utc>,
        level: u32,
        to: Vec<String>,
    },
    Superseded {
        by: Option<ProposalId>,
        reason: String,
    },
    Previewed {
        actor: String,
        /// What the adapter would send: method, URL, headers (secrets redacted), body.
        requests: Value,
        /// The payload the preview was made from.
        payload_hash: String,
    },
    ExecutionDeferred {
        reason: String,
        until: Option<DateTime<Utc>>,
    },
    ExecutionStarted {
        attempt: u32,
        idempotency_key: String,
    },
    ExecutionSucceeded {
        attempt: u32,
        result: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<DateTime<Utc>>,
    },
    ExecutionFailed {
        attempt: u32,
        error: String,
        retryable: bool,
    },
    ExecutionUncertain {
        attempt: u32,
        reason: String,
    },
    /// A person asked for an undo; `complete` when theirs is the last request the quorum
    /// needed, and the executor then carries it out.
    RollbackRequested {
        actor: String,
        role: Role,
        reason: String,
        complete: bool,
    },
    RollbackStarted {
        attempt: u32,
    },
    /// Undone; `actor` is the person whose request completed the quorum.
    RolledBack {
        actor: String,
        role: Role,
        result: Value,
    },
    /// The undo failed; when not `retryable` the action stands, as executed.
    RollbackFailed {
        attempt: u32,
        error: String,
        retryable: bool,
    },
    /// The process stopped while an undo may have reached the provider.
    RollbackUncertain {
        attempt: u32,
        reason: String,
    },
    MarkedDone {
        actor: String,
        role: Role,
        note: Option<String>,
    },
    RetryRequested {
        actor: String,
        role: Role,
    },
    OutcomeRecorded {
        kind: String,
        summary: String,
        value_cents: Option<i64>,
    },
}

impl ProposalEvent {
    /// The status the proposal has after this event; `None` for events that leave it as is.
    /// The aggregate, the inbox and the audit log all take a proposal's status from here.
    pub fn status_after(&self) -> Option<Status> {
        use ProposalEvent as E;
        match self {
            E::Drafted { .. } => Some(Status::Pending),
            E::DraftSuppressed { .. } => Some(Status::Suppressed),
            E::Approved(_) | E::RetryRequested { .. } => Some(Status::Approved),
            E::Rejected { .. } => Some(Status::Rejected),
            E::Expired { .. } => Some(Status::Expired),
            E::Superseded { .. } => Some(Status::Superseded),
            E::ExecutionStarted { .. } => Some(Status::Executing),
            E::ExecutionSucceeded { .. } | E::MarkedDone { .. } => Some(Status::Succeeded),
            E::ExecutionFailed { .. } => Some(Status::Failed),
            E::ExecutionUncertain { .. } => Some(Status::Uncertain),
            E::RolledBack { .. } => Some(Status::RolledBack),
            E::RollbackRequested { complete: true, .. } => Some(Status::RollingBack),
            E::RollbackFailed {
                retryable: false, ..
            } => Some(Status::Succeeded),
            E::RollbackUncertain { .. } => Some(Status::RollbackUncertain),
            E::RollbackRequested { .. }
            | E::RollbackStarted { .. }
            | E::RollbackFailed { .. }
            | E::Revised { .. }
            | E::ApprovalAdded(_)
            | E::RejectionAdded { .. }
            | E::Escalated { .. }
            | E::Previewed { .. }
            | E::ExecutionDeferred { .. }
            | E::OutcomeRecorded { .. } => None,
        }
    }
}

impl DomainEvent for ProposalEvent {
    fn event_type(&self) -> String {
        match self {
            ProposalEvent::Drafted { .. } => "Drafted",
            ProposalEvent::DraftSuppressed { .. } => "DraftSuppressed",
            ProposalEvent::Revised { .. } => "Revised",
            ProposalEvent::ApprovalAdded(_) => "ApprovalAdded",
            ProposalEvent::Approved(_) => "Approved",
            ProposalEvent::RejectionAdded { .. } => "RejectionAdded",
            ProposalEvent::Rejected { .. } => "Rejected",
            ProposalEvent::Expired { .. } => "Expired",
            ProposalEvent::Escalated { .. } => "Escalated",
            ProposalEvent::Superseded { .. } => "Superseded",
            ProposalEvent::Previewed { .. } => "Previewed",
            ProposalEvent::ExecutionDeferred { .. } => "ExecutionDeferred",
            ProposalEvent::ExecutionStarted { .. } => "ExecutionStarted",
            ProposalEvent::ExecutionSucceeded { .. } => "ExecutionSucceeded",
            ProposalEvent::ExecutionFailed { .. } => "ExecutionFailed",
            ProposalEvent::ExecutionUncertain { .. } => "ExecutionUncertain",
            ProposalEvent::RolledBack { .. } => "RolledBack",
            ProposalEvent::RollbackRequested { .. } => "RollbackRequested",
            ProposalEvent::RollbackStarted { .. } => "RollbackStarted",
            ProposalEvent::RollbackFailed { .. } => "RollbackFailed",
            ProposalEvent::RollbackUncertain { .. } => "RollbackUncertain",
            ProposalEvent::MarkedDone { .. } => "MarkedDone",
            ProposalEvent::RetryRequested { .. } => "RetryRequested",
            ProposalEvent::OutcomeRecorded { .. } => "OutcomeRecorded",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

/// Where a proposal is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    NotDrafted,
    Suppressed,
    Pending,
    Approved,
    Rejected,
    Expired,
    Superseded,
    Executing,
    Succeeded,
    Failed,
    Uncertain,
    /// An undo the quorum asked for, waiting for or in the executor.
    RollingBack,
    RolledBack,
    /// The process stopped while an undo may have reached the provider: a person checks.
    RollbackUncertain,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        f.write_str(&text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposalError {
    #[error("the proposal was already drafted")]
    AlreadyDrafted,
    #[error("the draft is invalid: {0}")]
    InvalidDraft(String),
    #[error("no such proposal")]
    NotDrafted,
    #[error("the proposal already includes signal {0}")]
    AlreadyRevised(String),
    #[error("the proposal is {0}, not pending")]
    NotPending(Status),
    #[error("a {0} may not decide on proposals")]
    RoleMayNotDecide(Role),
    #[error("a person may not approve a proposal they requested")]
    SelfApproval,
    #[error("{0} has already approved this proposal; an approval counts once")]
    AlreadyApprovedBy(String),
    #[error("{0} has already rejected this proposal")]
    AlreadyRejectedBy(String),
    #[error("the proposal is not due to expire until {0}")]
    NotExpiredYet(DateTime<Utc>),
    #[error("the next escalation is not due until {0}")]
    EscalationNotDue(DateTime<Utc>),
    #[error("every level of the escalation ladder has been told")]
    NoFurtherEscalation,
    #[error("the action shown is not the action drafted; reload it and decide again")]
    PayloadChanged,
    #[error("the proposal expired at {0}; nothing was decided")]
    PastExpiry(DateTime<Utc>),
    #[error("a decision must say when it is made")]
    NoDecisionTime,
    #[error("the proposal is {0} and has no approval to execute")]
    NotApproved(Status),
    #[error("the proposal is {0} and cannot start an execution")]
    CannotExecute(Status),
    #[error("no execution attempt {0} is in progress")]
    NoSuchAttempt(u32),
    #[error("the proposal is {0}; only an executed proposal can be rolled back")]
    CannotRollBack(Status),
    #[error("the proposal is {0}; outcomes are recorded only after execution")]
    NotExecuted(Status),
    #[error("the undo window closed at {0}")]
    UndoWindowClosed(DateTime<Utc>),
    #[error("{0} has already asked for this undo")]
    AlreadyAskedToUndo(String),
    #[error("the proposal is {0}; no undo is waiting to run")]
    NotRollingBack(Status),
    #[error("no undo attempt {0} is in progress")]
    NoSuchRollbackAttempt(u32),
    #[error("the proposal is {0}; only an uncertain execution can be marked as done")]
    NotUncertain(Status),
    #[error("the proposal is {0}; only an uncertain or failed execution can be retried")]
    CannotRetry(Status),
    #[error("the outcome {0} is already recorded")]
    OutcomeAlreadyRecorded(String),
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Proposal {
    id: Option<ProposalId>,
    status: Status,
    payload_hash: String,
    requested_by: Option<String>,
    inbound_ids: Vec<String>,
    attempts: u32,
    last_failure_retryable: bool,
    action_type: String,
    action: Value,
    succeeded_at: Option<DateTime<Utc>>,
    result: Value,
    outcomes: Vec<String>,
    #[serde(default)]
    terms: ApprovalTerms,
    /// Who approved so far, in order; and who rejected.
    #[serde(default)]
    approved_by: Vec<String>,
    #[serde(default)]
    rejected_by: Vec<String>,
    /// The ladder levels told so far.
    #[serde(default)]
    escalation_level: u32,
    /// Who asked for an undo so far, and whose request completed the quorum.
    #[serde(default)]
    rollback_requested_by: Vec<String>,
    #[serde(default)]
    rollback_by: Option<(String, Role)>,
    /// Undo attempts made, and whether the last one is open.
    #[serde(default)]
    rollback_attempts: u32,
    #[serde(default)]
    rollback_running: bool,
}

impl Proposal {
    pub fn status(&self) -> Status {
        self.status
    }

    pub fn action_type(&self) -> &str {
        &self.action_type
    }

    /// The action as drafted or last revised: what an approval covers.
    pub fn action(&self) -> &Value {
        &self.action
    }

    /// The hash of [`Proposal::action`] that a decision must carry.
    pub fn payload_hash(&self) -> &str {
        &self.payload_hash
    }

    /// The key every attempt sends to providers that dedupe.
    pub fn idempotency_key(&self) -> Option<String> {
        self.id.map(|id| id.idempotency_key())
    }

    /// The attempt in progress or last made.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Undo attempts made so far.
    pub fn rollback_attempts(&self) -> u32 {
        self.rollback_attempts
    }

    /// Whether an undo attempt is open: started and not recorded.
    pub fn rollback_running(&self) -> bool {
        self.rollback_running
    }

    /// What the last successful execution returned, for an undo.
    pub fn result(&self) -> &Value {
        &self.result
    }

    pub fn succeeded_at(&self) -> Option<DateTime<Utc>> {
        self.succeeded_at
    }

    /// What its approval takes, as drafted.
    pub fn terms(&self) -> &ApprovalTerms {
        &self.terms
    }

    /// The people who approved it so far, in order.
    pub fn approved_by(&self) -> &[String] {
        &self.approved_by
    }

    /// The people who rejected it so far, in order.
    pub fn rejected_by(&self) -> &[String] {
        &self.rejected_by
    }

    pub fn escalation_level(&self) -> u32 {
        self.escalation_level
    }

    /// The next ladder level to tell, if any is left.
    pub fn next_escalation(&self) -> Option<&crate::domain::quorum::EscalationStep> {
        self.terms
            .escalations
            .get(usize::try_from(self.escalation_level).unwrap_or(usize::MAX))
    }

    /// What is overdue at `now` while it is pending: expiry first (an expired proposal
    /// needs no escalation), else the next escalation.
    pub fn due(&self, now: DateTime<Utc>) -> Option<ProposalCommand> {
        if self.status != Status::Pending {
            return None;
        }
        if self.terms.expires_at.is_some_and(|end| end <= now) {
            return Some(ProposalCommand::Expire { at: now });
        }
        self.next_escalation()
            .filter(|step| step.at <= now)
            .map(|_| ProposalCommand::Escalate { at: now })
    }

    fn check_second_decision(&self, decision: &Decision) -> Result<(), ProposalError> {
        let same = |who: &String| who.eq_ignore_ascii_case(&decision.actor);
        if self.approved_by.iter().any(same) {
            return Err(ProposalError::AlreadyApprovedBy(decision.actor.clone()));
        }
        if self.rejected_by.iter().any(same) {
            return Err(ProposalError::AlreadyRejectedBy(decision.actor.clone()));
        }
        Ok(())
    }

    /// Whether an attempt may start now: approved, or failed in a way worth retrying.
    pub fn may_start(&self) -> Result<(), ProposalError> {
        match self.status {
            Status::Approved => Ok(()),
            Status::Failed if self.last_failure_retryable => Ok(()),
            Status::NotDrafted
            | Status::Suppressed
            | Status::Pending
            | Status::Rejected
            | Status::Expired
            | Status::Superseded => Err(ProposalError::NotApproved(self.status)),
            other => Err(ProposalError::CannotExecute(other)),
        }
    }

    /// A decision is made before the proposal's expiry, by the decision's own time.
    fn check_in_time(&self, decision: &Decision) -> Result<(), ProposalError> {
        let at = decision.at.ok_or(ProposalError::NoDecisionTime)?;
        match self.terms.expires_at {
            Some(end) if at >= end => Err(ProposalError::PastExpiry(end)),
            _ => Ok(()),
        }
    }

    fn check_decider(&self, decision: &Decision) -> Result<(), ProposalError> {
        if !decision.role.may_decide() {
            return Err(ProposalError::RoleMayNotDecide(decision.role));
        }
        match self.status {
            Status::NotDrafted => Err(ProposalError::NotDrafted),
            Status::Pending => Ok(()),
            other => Err(ProposalError::NotPending(other)),
        }
    }

    fn check_pending(&self) -> Result<(), ProposalError> {
        match self.status {
            Status::NotDrafted => Err(ProposalError::NotDrafted),
            Status::Pending => Ok(()),
            other => Err(ProposalError::NotPending(other)),
        }
    }

    fn check_attempt(&self, attempt: u32) -> Result<(), ProposalError> {
        if self.status == Status::Executing && attempt == self.attempts {
            Ok(())
        } else {
            Err(ProposalError::NoSuchAttempt(attempt))
        }
    }

    fn check_rollback_attempt(&self, attempt: u32) -> Result<(), ProposalError> {
        if self.status == Status::RollingBack
            && self.rollback_running
            && attempt == self.rollback_attempts
        {
            Ok(())
        } else {
            Err(ProposalError::NoSuchRollbackAttempt(attempt))
        }
    }

    fn decide(&self, command: ProposalCommand) -> Result<ProposalEvent, ProposalError> {
        use ProposalCommand as C;
        use ProposalEvent as E;
        match command {
            C::Draft(draft) => {
                if self.status != Status::NotDrafted {
                    return Err(ProposalError::AlreadyDrafted);
                }
                validate_draft(&draft)?;
                let payload_hash = payload_hash(&draft.action);
                Ok(E::Drafted {
                    draft,
                    payload_hash,
                })
            }
            C::Suppress { draft, reason } => {
                if self.status != Status::NotDrafted {
                    return Err(ProposalError::AlreadyDrafted);
                }
                validate_draft(&draft)?;
                let payload_hash = payload_hash(&draft.action);
                Ok(E::DraftSuppressed {
                    draft,
                    payload_hash,
                    reason,
                })
            }
            C::Revise(revision) => {
                self.check_pending()?;
                if self.inbound_ids.contains(&revision.inbound_id) {
                    return Err(ProposalError::AlreadyRevised(revision.inbound_id));
                }
                if revision.score > 100 {
                    return Err(ProposalError::InvalidDraft(format!(
                        "the score {} is over 100",
                        revision.score
                    )));
                }
                let payload_hash = payload_hash(&revision.action);
                Ok(E::Revised {
                    revision,
                    payload_hash,
                })
            }
            C::Approve(decision) => {
                self.check_decider(&decision)?;
                self.check_in_time(&decision)?;
                if self.requested_by.as_deref().is_some_and(|r| decision.is(r)) {
                    return Err(ProposalError::SelfApproval);
                }
                if decision.payload_hash != self.payload_hash {
                    return Err(ProposalError::PayloadChanged);
                }
                self.check_second_decision(&decision)?;
                let approvals = self.approved_by.len() as u64 + 1;
                if approvals >= u64::from(self.terms.approvals_needed) {
                    Ok(E::Approved(decision))
                } else {
                    Ok(E::ApprovalAdded(decision))
                }
            }
            C::Reject { decision, reason } => {
                self.check_decider(&decision)?;
                self.check_in_time(&decision)?;
                if decision.payload_hash != self.payload_hash {
                    return Err(ProposalError::PayloadChanged);
                }
                self.check_second_decision(&decision)?;
                let rejections = self.rejected_by.len() as u64 + 1;
                if rejections >= u64::from(self.terms.rejections_needed) {
                    Ok(E::Rejected { decision, reason })
                } else {
                    Ok(E::RejectionAdded { decision, reason })
                }
            }
            C::Expire { at } => {
                self.check_pending()?;
                // A proposal drafted without an expiry may still be expired by hand.
                if let Some(end) = self.terms.expires_at {
                    if at < end {
                        return Err(ProposalError::NotExpiredYet(end));
                    }
                }
                Ok(E::Expired { at })
            }
            C::Escalate { at } => {
                self.check_pending()?;
                let step = self
                    .next_escalation()
                    .ok_or(ProposalError::NoFurtherEscalation)?;
                if at < step.at {
                    return Err(ProposalError::EscalationNotDue(step.at));
                }
                Ok(E::Escalated {
                    at,
                    level: self.escalation_level + 1,
                    to: step.to.clone(),
                })
            }
            C::Supersede { by, reason } => {
                self.check_pending()?;
                Ok(E::Superseded { by, reason })
            }
            C::Preview { actor, requests } => {
                if self.status == Status::NotDrafted {
                    return Err(ProposalError::NotDrafted);
                }
                Ok(E::Previewed {
                    actor,
                    requests,
                    payload_hash: self.payload_hash.clone(),
                })
            }
            C::Defer { reason, until } => {
                // An undo waits behind the same guardrails as an execution.
                if self.status != Status::RollingBack || self.rollback_running {
                    self.may_start()?;
                }
                Ok(E::ExecutionDeferred { reason, until })
            }
            C::StartExecution => {
                self.may_start()?;
                let id = self.id.ok_or(ProposalError::NotDrafted)?;
                Ok(E::ExecutionStarted {
                    attempt: self.attempts + 1,
                    idempotency_key: id.idempotency_key(),
                })
            }
            C::RecordSuccess {
                attempt,
                result,
                at,
            } => {
                self.check_attempt(attempt)?;
                Ok(E::ExecutionSucceeded {
                    attempt,
                    result,
                    at: Some(at),
                })
            }
            C::RecordFailure {
                attempt,
                error,
                retryable,
            } => {
                self.check_attempt(attempt)?;
                Ok(E::ExecutionFailed {
                    attempt,
                    error,
                    retryable,
                })
            }
            C::RecordUncertain { attempt, reason } => {
                self.check_attempt(attempt)?;
                Ok(E::ExecutionUncertain { attempt, reason })
            }
            C::RequestRollback {
                actor,
                role,
                reason,
                at,
                window,
            } => {
                if !role.may_decide() {
                    return Err(ProposalError::RoleMayNotDecide(role));
                }
                if self.status != Status::Succeeded {
                    return Err(ProposalError::CannotRollBack(self.status));
                }
                if let Some(closes) = self.succeeded_at.map(|t| t + window) {
                    if at > closes {
                        return Err(ProposalError::UndoWindowClosed(closes));
                    }
                }
                if self
                    .rollback_requested_by
                    .iter()
                    .any(|who| who.eq_ignore_ascii_case(&actor))
                {
                    return Err(ProposalError::AlreadyAskedToUndo(actor));
                }
                let asked = self.rollback_requested_by.len() as u64 + 1;
                Ok(E::RollbackRequested {
                    actor,
                    role,
                    reason,
                    complete: asked >= u64::from(self.terms.approvals_needed),
                })
            }
            C::StartRollback => {
                if self.status != Status::RollingBack || self.rollback_running {
                    return Err(ProposalError::NotRollingBack(self.status));
                }
                Ok(E::RollbackStarted {
                    attempt: self.rollback_attempts + 1,
                })
            }
            C::RecordRollback { attempt, result } => {
                self.check_rollback_attempt(attempt)?;
                let (actor, role) = self
                    .rollback_by
                    .clone()
                    .unwrap_or_else(|| (String::new(), Role::Viewer));
                Ok(E::RolledBack {
                    actor,
                    role,
                    result,
                })
            }
            C::RecordRollbackFailure {
                attempt,
                error,
                retryable,
            } => {
                self.check_rollback_attempt(attempt)?;
                Ok(E::RollbackFailed {
                    attempt,
                    error,
                    retryable,
                })
            }
            C::RecordRollbackUncertain { attempt, reason } => {
                self.check_rollback_attempt(attempt)?;
                Ok(E::RollbackUncertain { attempt, reason })
            }
            C::MarkDone { actor, role, note } => {
                if !role.may_decide() {
                    return Err(ProposalError::RoleMayNotDecide(role));
                }
                if self.status != Status::Uncertain {
                    return Err(ProposalError::NotUncertain(self.status));
                }
                Ok(E::MarkedDone { actor, role, note })
            }
            C::RequestRetry { actor, role } => {
                if !role.may_decide() {
                    return Err(ProposalError::RoleMayNotDecide(role));
                }
                if !matches!(self.status, Status::Uncertain | Status::Failed) {
                    return Err(ProposalError::CannotRetry(self.status));
                }
                Ok(E::RetryRequested { actor, role })
            }
            C::RecordOutcome {
                kind,
                summary,
                value_cents,
            } => match self.status {
                Status::Succeeded | Status::Failed | Status::Uncertain | Status::RolledBack => {
                    if self.outcomes.contains(&kind) {
                        return Err(ProposalError::OutcomeAlreadyRecorded(kind));
                    }
                    Ok(E::OutcomeRecorded {
                        kind,
                        summary,
                        value_cents,
                    })
                }
                other => Err(ProposalError::NotExecuted(other)),
            },
        }
    }
}

fn validate_draft(draft: &ProposalDraft) -> Result<(), ProposalError> {
    if draft.title.trim().is_empty() {
        return Err(ProposalError::InvalidDraft("the title is empty".into()));
    }
    if draft.action_type.trim().is_empty() {
        return Err(ProposalError::InvalidDraft(
            "the action type is empty".into(),
        ));
    }
    if draft.score > 100 {
        return Err(ProposalError::InvalidDraft(format!(
            "the score {} is over 100",
            draft.score
        )));
    }
    Ok(())
}

impl Aggregate for Proposal {
    const TYPE: &'static str = "Proposal";
    type Command = ProposalCommand;
    type Event = ProposalEvent;
    type Error = ProposalError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = self.decide(command)?;
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        use ProposalEvent as E;
        if let Some(status) = event.status_after() {
            self.status = status;
        }
        match event {
            E::Drafted {
                draft,
                payload_hash,
            } => {
                self.id = Some(draft.id);
                self.payload_hash = payload_hash;
                self.requested_by = draft.requested_by;
                self.inbound_ids = draft.inbound_ids;
                self.action_type = draft.action_type;
                self.action = draft.action;
                self.terms = draft.terms;
            }
            E::DraftSuppressed { draft, .. } => self.id = Some(draft.id),
            E::Revised {
                revision,
                payload_hash,
            } => {
                self.payload_hash = payload_hash;
                self.inbound_ids.push(revision.inbound_id);
                self.action = revision.action;
                if let Some(terms) = revision.terms {
                    self.terms = terms;
                    self.escalation_level = 0;
                }
                // Approvals and rejections so far were of another payload.
                self.approved_by.clear();
                self.rejected_by.clear();
            }
            E::ExecutionStarted { attempt, .. } => self.attempts = attempt,
            E::RollbackRequested {
                actor,
                role,
                complete,
                ..
            } => {
                self.rollback_requested_by.push(actor.clone());
                if complete {
                    self.rollback_by = Some((actor, role));
                }
            }
            E::RollbackStarted { attempt } => {
                self.rollback_attempts = attempt;
                self.rollback_running = true;
            }
            E::RollbackFailed { retryable, .. } => {
                self.rollback_running = false;
                if !retryable {
                    // The action stands; a new undo starts its quorum afresh.
                    self.rollback_requested_by.clear();
                    self.rollback_by = None;
                }
            }
            E::RollbackUncertain { .. } => self.rollback_running = false,
            E::ExecutionSucceeded { result, at, .. } => {
                self.result = result;
                self.succeeded_at = at;
            }
            E::ExecutionFailed { retryable, .. } => self.last_failure_retryable = retryable,
            E::OutcomeRecorded { kind, .. } => self.outcomes.push(kind),
            E::ApprovalAdded(decision) | E::Approved(decision) => {
                self.approved_by.push(decision.actor)
            }
            E::RejectionAdded { decision, .. } | E::Rejected { decision, .. } => {
                self.rejected_by.push(decision.actor)
            }
            E::Escalated { level, .. } => self.escalation_level = level,
            E::Expired { .. }
            | E::Superseded { .. }
            | E::Previewed { .. }
            | E::ExecutionDeferred { .. }
            | E::ExecutionUncertain { .. }
            | E::RolledBack { .. }
            | E::MarkedDone { .. }
            | E::RetryRequested { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests;
