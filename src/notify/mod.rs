//! Telling approvers that a proposal waits for them. Telling is not an action on the
//! company's behalf, so it needs no approval; deciding still goes through the one decision
//! path. [`email`] mails each approver a proposal with signed, expiring, single-use links,
//! made and checked by [`links`]; [`slack`] posts a high-urgency proposal to Slack with
//! Approve and Reject buttons, which `web::slack` decides through the same path.

pub mod email;
pub mod links;
pub mod slack;
