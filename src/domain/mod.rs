//! The pure core of ExecOps: aggregates, their commands, events and errors, and the value
//! types they are made of. Nothing here talks to a database, the network or a template:
//! facts a command needs are looked up by the caller and put in the command.

pub mod guardrails;
pub mod inbound;
pub mod policies;
pub mod priority;
pub mod proposal;
pub mod quorum;
pub mod user;
pub mod values;

pub use inbound::{Inbound, InboundCommand, InboundError, InboundEvent, InboundId, Signal};
pub use proposal::{
    Decision, Proposal, ProposalCommand, ProposalDraft, ProposalError, ProposalEvent, Revision,
    Status,
};
pub use quorum::{ApprovalRules, ApprovalTerms, EscalationStep};
pub use values::{payload_hash, ProposalId, Role, Urgency, Vertical};
