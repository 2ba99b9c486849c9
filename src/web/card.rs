//! One proposal as the pages and the API show it, derived once from the proposals read
//! model's row.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::projections::proposals::{strings, Summary};

/// A proposal as every surface shows it: the API's item, and the inbox, queue and
/// proposal-page cards, which also show how an approved one is getting on (not part of the
/// API's item, so not serialised).
#[derive(Debug, Serialize, ToSchema)]
pub struct ProposalItem {
    pub id: String,
    /// `pending`, `approved`, `rejected`, `expired`, `superseded`, `suppressed`, `executing`, …
    pub status: String,
    pub vertical: String,
    pub action_type: String,
    pub title: String,
    pub reasoning: String,
    /// Why it ranks where it does, as "because …" sentences.
    pub drivers: Vec<String>,
    /// Priority, 0–100.
    pub score: i32,
    pub urgency: String,
    pub due_by: Option<DateTime<Utc>>,
    pub owner: Option<String>,
    /// The exact payload the adapter will send once approved.
    #[schema(value_type = Object)]
    pub action: Value,
    /// SHA-256 of the action's canonical JSON: send it back with a decision.
    pub payload_hash: String,
    pub inbound_ids: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Distinct approvals so far, and how many it takes.
    pub approvals: usize,
    pub approvals_needed: i32,
    /// Who approved so far, in order.
    pub approved_by: Vec<String>,
    /// Undecided past this time, it expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// The escalation ladder levels told so far, and when the next one is due.
    pub escalation_level: i32,
    pub escalate_at: Option<DateTime<Utc>>,
    /// Why an approved execution waits (a guardrail, a back-off), and until when.
    #[serde(skip)]
    pub waiting_reason: Option<String>,
    #[serde(skip)]
    pub waiting_until: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub last_error: Option<String>,
    #[serde(skip)]
    pub executed_at: Option<DateTime<Utc>>,
    /// Outcomes recorded so far, `; `-separated.
    #[serde(skip)]
    pub outcome: Option<String>,
}

impl From<Summary> for ProposalItem {
    fn from(p: Summary) -> Self {
        let approved_by = p.approvers();
        Self {
            drivers: strings(&p.drivers),
            inbound_ids: strings(&p.inbound_ids),
            approvals: approved_by.len(),
            approved_by,
            id: p.id,
            status: p.status,
            vertical: p.vertical,
            action_type: p.action_type,
            title: p.title,
            reasoning: p.reasoning,
            score: p.score,
            urgency: p.urgency,
            due_by: p.due_by,
            owner: p.owner,
            action: p.action,
            payload_hash: p.payload_hash,
            created_at: p.created_at,
            updated_at: p.updated_at,
            approvals_needed: p.approvals_needed,
            expires_at: p.expires_at,
            escalation_level: p.escalation_level,
            escalate_at: p.escalate_at,
            waiting_reason: p.waiting_reason,
            waiting_until: p.waiting_until,
            last_error: p.last_error,
            executed_at: p.executed_at,
            outcome: p.outcome,
        }
    }
}
