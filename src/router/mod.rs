//! The router: a checkpointed subscriber (a process manager) that turns each `Received`
//! signal into proposals. It keeps the facts the policies need, runs the policies of the
//! signal's vertical, and drafts, revises, supersedes or suppresses proposals through the
//! `Proposal` aggregate. Proposal ids are derived from the signal and the rule, and a
//! proposal takes each signal once, so a replay or a redelivery changes nothing.
//!
//! It also watches decisions: when people reject most proposals of an action type, it
//! switches that action type off through the `Guardrails` aggregate.

pub mod facts;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;

use crate::adapters::llm::Wording;
use crate::clock::Clock;
use crate::commands::Store;
use crate::domain::guardrails::{GuardrailsCommand, GuardrailsError};
use crate::domain::policies::{evaluate, Outcome, Plan, PolicyConfig, PrecisionConfig};
use crate::domain::priority::Priority;
use crate::domain::quorum::ApprovalRules;
use crate::domain::{
    InboundEvent, ProposalCommand, ProposalDraft, ProposalError, ProposalEvent, ProposalId,
    Revision, Signal,
};
use crate::store::log::StoredEvent;
use crate::store::subscription::{HandlerError, Subscriber};
use crate::store::CommandError;
use crate::store::Metadata;

pub struct Router {
    store: Store,
    policies: PolicyConfig,
    precision: PrecisionConfig,
    wording: Option<Wording>,
    approvals: ApprovalRules,
    clock: Clock,
}

impl Router {
    pub fn new(
        store: Store,
        policies: PolicyConfig,
        precision: PrecisionConfig,
        wording: Option<Wording>,
    ) -> Self {
        Self {
            store,
            policies,
            precision,
            wording,
            approvals: ApprovalRules::default(),
            clock: Clock::system(),
        }
    }

    /// Drafts proposals on these approval terms (quorum, expiry, escalation).
    pub fn with_approvals(mut self, approvals: ApprovalRules) -> Self {
        self.approvals = approvals;
        self
    }

    /// Starts proposals' expiry and escalation from this clock's time.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }
}

/// What `signal`, recorded at `recorded_at`, calls for: the policies run on the facts as
/// they stand with it, then the facts are brought up to date with it. The router and
/// `execops backtest` both go through here, so a backtest sees what the router would.
///
/// `wording` (the router's optional language model) improves the proposed actions' text
/// before the facts are written: until it writes, the caller's transaction holds back no
/// other reader of the log, and wording is the slow part.
pub async fn outcomes_for(
    conn: &mut PgConnection,
    signal: &Signal,
    recorded_at: DateTime<Utc>,
    policies: &PolicyConfig,
    wording: Option<&Wording>,
) -> Result<Vec<Outcome>, sqlx::Error> {
    let facts = facts::look_up(conn, signal, recorded_at).await?;
    let mut outcomes = evaluate(signal, &facts, policies);
    if let Some(wording) = wording {
        for outcome in &mut outcomes {
            if let Outcome::Propose(plan) = outcome {
                plan.action = wording.improve_action(&plan.action).await;
            }
        }
    }
    facts::record(conn, signal).await?;
    Ok(outcomes)
}

/// A plan's priority with its action type's track record so far taken into account: what
/// its score is drawn from.
pub async fn priority_of(conn: &mut PgConnection, plan: &Plan) -> Result<Priority, sqlx::Error> {
    let record: Option<(i64, i64)> =
        sqlx::query_as("SELECT executed, with_outcome FROM outcome_rates WHERE action_type = $1")
            .bind(plan.action_type)
            .fetch_optional(&mut *conn)
            .await?;
    let (executed, with_outcome) = record.unwrap_or((0, 0));
    Ok(plan
        .priority
        .clone()
        .with_track_record(plan.action_type, executed, with_outcome))
}

/// The metadata of every command the router issues.
fn by_router(cause: &StoredEvent) -> HashMap<String, String> {
    Metadata::by("router")
        .caused_by(format!("{}/{}", cause.aggregate_id, cause.sequence))
        .into()
}

impl Subscriber for Router {
    fn name(&self) -> &str {
        "router"
    }

    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), HandlerError> {
        match (event.aggregate_type.as_str(), event.event_type.as_str()) {
            ("Inbound", "Received") => {
                let InboundEvent::Received(signal) = event.decode()?;
                let outcomes = outcomes_for(
                    conn,
                    &signal,
                    event.recorded_at,
                    &self.policies,
                    self.wording.as_ref(),
                )
                .await?;
                let inbound_id = signal.inbound_id().to_string();
                for outcome in outcomes {
                    match outcome {
                        Outcome::Propose(plan) => {
                            let requester = signal.requested_by();
                            self.propose(conn, event, &inbound_id, requester, *plan)
                                .await?
                        }
                        Outcome::Supersede {
                            subject_key,
                            reason,
                        } => self.supersede(conn, event, &subject_key, reason).await?,
                    }
                }
                Ok(())
            }
            ("Proposal", _) => self.follow_proposal(conn, event).await,
            ("Guardrails", "ActionTypeDisabled" | "ActionTypeEnabled") => {
                let action_type = event
                    .payload
                    .pointer(&format!("/{}/action_type", event.event_type))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                set_disabled(
                    conn,
                    action_type,
                    event.event_type == "ActionTypeDisabled",
                    event.recorded_at,
                )
                .await?;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

impl Router {
    async fn propose(
        &self,
        conn: &mut PgConnection,
        cause: &StoredEvent,
        inbound_id: &str,
        requested_by: Option<String>,
        plan: Plan,
    ) -> Result<(), HandlerError> {
        let action = plan.action.clone();
        let priority = priority_of(conn, &plan).await?;
        let score = priority.score();
        let drivers = priority.drivers();
        let pending: Option<String> = sqlx::query_scalar(
            "SELECT proposal_id FROM router_subjects WHERE subject_key = $1 AND pending",
        )
        .bind(&plan.subject_key)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(existing) = pending {
            let revision = Revision {
                title: plan.title.clone(),
                action: action.clone(),
                reasoning: plan.reasoning.clone(),
                drivers: drivers.clone(),
                score,
                urgency: plan.urgency,
                due_by: plan.due_by,
                inbound_id: inbound_id.to_string(),
                // Derived again from the revised action, as a draft's are from its own.
                terms: Some(
                    self.approvals
                        .terms(plan.action_type, &action, self.clock.now()),
                ),
            };
            match self
                .store
                .proposal(
                    &existing,
                    ProposalCommand::Revise(revision),
                    by_router(cause),
                )
                .await
            {
                Ok(()) | Err(CommandError::Refused(ProposalError::AlreadyRevised(_))) => {
                    return Ok(())
                }
                // Decided since: the new signal gets a proposal of its own.
                Err(CommandError::Refused(ProposalError::NotPending(_))) => {}
                Err(other) => return Err(other.into()),
            }
        }
        let id = ProposalId::derive(inbound_id, plan.rule);
        // From now, not from the signal's arrival: a router catching up on a backlog must
        // not draft proposals that are already expired. The terms are written into the
        // draft, so a replay of the proposal reads them back instead of the clock.
        let terms = self
            .approvals
            .terms(plan.action_type, &action, self.clock.now());
        let draft = ProposalDraft {
            id,
            title: plan.title,
            vertical: plan.vertical,
            action_type: plan.action_type.to_string(),
            action,
            reasoning: plan.reasoning,
            drivers,
            score,
            urgency: plan.urgency,
            due_by: plan.due_by,
            owner: plan.owner,
            inbound_ids: vec![inbound_id.to_string()],
            subject_key: plan.subject_key.clone(),
            requested_by,
            outcome_key: plan.outcome_key.clone(),
            terms,
        };
        let disabled: bool = sqlx::query_scalar(
            "SELECT coalesce((SELECT disabled FROM router_action_types WHERE action_type = $1), false)",
        )
        .bind(plan.action_type)
        .fetch_one(&mut *conn)
        .await?;
        let command = if disabled {
            ProposalCommand::Suppress {
                draft,
                reason: format!("{} is disabled", plan.action_type),
            }
        } else {
            ProposalCommand::Draft(draft)
        };
        match self
            .store
            .proposal(&id.to_string(), command, by_router(cause))
            .await
        {
            Ok(()) | Err(CommandError::Refused(ProposalError::AlreadyDrafted)) => {}
            Err(other) => return Err(other.into()),
        }
        if !disabled {
            remember_subject(conn, &plan.subject_key, &id.to_string(), true).await?;
        }
        Ok(())
    }

    async fn supersede(
        &self,
        conn: &mut PgConnection,
        cause: &StoredEvent,
        subject_key: &str,
        reason: String,
    ) -> Result<(), HandlerError> {
        let pending: Option<String> = sqlx::query_scalar(
            "SELECT proposal_id FROM router_subjects WHERE subject_key = $1 AND pending",
        )
        .bind(subject_key)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(id) = pending else { return Ok(()) };
        let command = ProposalCommand::Supersede { by: None, reason };
        match self.store.proposal(&id, command, by_router(cause)).await {
            Ok(()) | Err(CommandError::Refused(ProposalError::NotPending(_))) => {}
            Err(other) => return Err(other.into()),
        }
        remember_subject(conn, subject_key, &id, false).await?;
        Ok(())
    }

    /// Keeps the subject map and the decisions in step with the proposals themselves.
    async fn follow_proposal(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), HandlerError> {
        let proposal: ProposalEvent = event.decode()?;
        let id = event.aggregate_id.as_str();
        match proposal {
            ProposalEvent::Drafted { draft, .. } => {
                sqlx::query(
                    "INSERT INTO router_proposals (proposal_id, action_type, subject_key) VALUES ($1, $2, $3) \
                     ON CONFLICT (proposal_id) DO NOTHING",
                )
                .bind(id)
                .bind(&draft.action_type)
                .bind(&draft.subject_key)
                .execute(&mut *conn)
                .await?;
                remember_subject(conn, &draft.subject_key, id, true).await?;
            }
            ProposalEvent::Approved(_) | ProposalEvent::Rejected { .. } => {
                let approved = matches!(proposal, ProposalEvent::Approved(_));
                sqlx::query("UPDATE router_subjects SET pending = false WHERE proposal_id = $1")
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
                self.record_decision(conn, event, id, approved).await?;
            }
            ProposalEvent::Expired { .. } | ProposalEvent::Superseded { .. } => {
                sqlx::query("UPDATE router_subjects SET pending = false WHERE proposal_id = $1")
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }

    async fn record_decision(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
        id: &str,
        approved: bool,
    ) -> Result<(), HandlerError> {
        let action_type: Option<String> =
            sqlx::query_scalar("SELECT action_type FROM router_proposals WHERE proposal_id = $1")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
        let Some(action_type) = action_type else {
            return Ok(());
        };
        sqlx::query(
            "INSERT INTO router_decisions (proposal_id, action_type, approved, decided_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (proposal_id) DO NOTHING",
        )
        .bind(id)
        .bind(&action_type)
        .bind(approved)
        .bind(event.recorded_at)
        .execute(&mut *conn)
        .await?;
        // The most recent decisions since the action type was last switched on.
        let (approved, decided): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE approved), count(*) FROM ( \
               SELECT approved FROM router_decisions d \
               WHERE d.action_type = $1 AND d.decided_at >= coalesce( \
                 (SELECT changed_at FROM router_action_types t WHERE t.action_type = $1 AND NOT t.disabled), \
                 '-infinity') \
               ORDER BY decided_at DESC LIMIT $2) recent",
        )
        .bind(&action_type)
        .bind(self.precision.window)
        .fetch_one(&mut *conn)
        .await?;
        let disabled: bool = sqlx::query_scalar(
            "SELECT coalesce((SELECT disabled FROM router_action_types WHERE action_type = $1), false)",
        )
        .bind(&action_type)
        .fetch_one(&mut *conn)
        .await?;
        let Some(reason) = self.precision.verdict(&action_type, approved, decided) else {
            return Ok(());
        };
        if disabled {
            return Ok(());
        }
        let command = GuardrailsCommand::DisableActionType {
            action_type: action_type.clone(),
            actor: "precision".into(),
            reason,
        };
        match self.store.guardrails(command, by_router(event)).await {
            Ok(()) | Err(CommandError::Refused(GuardrailsError::AlreadyDisabled(_))) => {}
            Err(other) => return Err(other.into()),
        }
        set_disabled(conn, &action_type, true, event.recorded_at).await?;
        Ok(())
    }
}

async fn remember_subject(
    conn: &mut PgConnection,
    subject_key: &str,
    proposal_id: &str,
    pending: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO router_subjects (subject_key, proposal_id, pending) VALUES ($1, $2, $3) \
         ON CONFLICT (subject_key) DO UPDATE SET proposal_id = excluded.proposal_id, pending = excluded.pending",
    )
    .bind(subject_key)
    .bind(proposal_id)
    .bind(pending)
    .execute(conn)
    .await
    .map(|_| ())
}

async fn set_disabled(
    conn: &mut PgConnection,
    action_type: &str,
    disabled: bool,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO router_action_types (action_type, disabled, changed_at) VALUES ($1, $2, $3) \
         ON CONFLICT (action_type) DO UPDATE SET disabled = excluded.disabled, changed_at = excluded.changed_at \
         WHERE router_action_types.disabled IS DISTINCT FROM excluded.disabled",
    )
    .bind(action_type)
    .bind(disabled)
    .bind(at)
    .execute(conn)
    .await
    .map(|_| ())
}
