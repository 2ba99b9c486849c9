//! Approvals in Slack, the inbound half: a click on an Approve or Reject button, or
//! `/execops approve|reject`, is mapped to the ExecOps person linked to the Slack member and
//! decided through [`crate::decisions::decide`], the path every channel shares, so the role,
//! self-approval and payload-hash checks are the same ones. The webhook handlers call these
//! only after the delivery's `Received` event is committed, and only for a new delivery: a
//! replayed click is a duplicate and decides nothing.
//!
//! A Slack member who is not linked yet is linked when Slack vouches for them: `users.info`
//! says their email address is confirmed and it is an ExecOps person's. Anyone else is
//! refused with a message only they see, and nothing changes.

use std::collections::HashMap;

use super::AppState;
use crate::auth::{Actor, Permission};
use crate::decisions::{decide, DecisionError, DecisionRequest};
use crate::domain::user::{Email, SlackUserId, UserCommand, UserError};
use crate::ingest::slack::Click;
use crate::notify::slack::{decided_message, ephemeral};
use crate::projections::users::{actor_for_slack, person_with_slack};
use crate::store::CommandError;
use crate::store::Metadata;

/// Who linked a member whose confirmed email address Slack reported.
const VERIFIED_EMAIL: &str = "slack:verified-email";

const OTHER_WORKSPACE: &str = "This Slack workspace is not the one ExecOps works with, so \
     nothing was decided.";

/// Whether a request from the Slack workspace `team` may act: any may when `SLACK_TEAM_ID`
/// is unset.
pub fn from_our_workspace(state: &AppState, team: Option<&str>) -> bool {
    state
        .config
        .slack_team_id
        .as_deref()
        .is_none_or(|ours| team == Some(ours))
}

/// The answer to a request from another workspace.
pub fn other_workspace() -> String {
    OTHER_WORKSPACE.to_string()
}

const NOT_LINKED: &str = "Your Slack account is not linked to an ExecOps user, so nothing was \
     decided. Ask an ExecOps admin to run `execops user link-slack YOUR_EMAIL YOUR_MEMBER_ID`.";

/// The ExecOps person behind a Slack member, or the sentence that refuses them.
async fn person_of(state: &AppState, member: &str) -> Result<Actor, String> {
    let pool = state.store.pool();
    let internal = |error: &dyn std::fmt::Display| {
        tracing::error!(%error, "looking up a Slack member failed");
        "ExecOps could not look you up just now; nothing was decided. Try again.".to_string()
    };
    if let Some(actor) = actor_for_slack(pool, member)
        .await
        .map_err(|e| internal(&e))?
    {
        return Ok(actor);
    }
    let slack = &state.adapters.slack;
    if !slack.configured() {
        return Err(NOT_LINKED.into());
    }
    let vouched = match slack.member_email(member).await {
        Ok(found) => found,
        Err(error) => {
            tracing::warn!(%member, %error, "users.info failed; the member stays unlinked");
            return Err(NOT_LINKED.into());
        }
    };
    let (true, Some(address)) = (vouched.confirmed, vouched.email) else {
        return Err(NOT_LINKED.into());
    };
    let Some((actor, linked)) = person_with_slack(pool, &address)
        .await
        .map_err(|e| internal(&e))?
    else {
        return Err(NOT_LINKED.into());
    };
    if linked.as_deref().is_some_and(|other| other != member) {
        return Err(format!(
            "{} is linked to another Slack account, so nothing was decided.",
            actor.email
        ));
    }
    let (Ok(email), Ok(slack_user_id)) = (Email::parse(&actor.email), SlackUserId::parse(member))
    else {
        return Err(NOT_LINKED.into());
    };
    let metadata = Metadata::via("slack").into();
    let command = UserCommand::LinkSlack {
        slack_user_id,
        by: VERIFIED_EMAIL.into(),
    };
    match state.store.user(&email, command, metadata).await {
        Ok(()) | Err(CommandError::Refused(UserError::AlreadyLinked(_))) => {
            tracing::info!(%member, email = %actor.email, "Slack member linked by verified email");
            Ok(actor)
        }
        Err(error) => Err(internal(&error)),
    }
}

/// Why a decision was refused, in a sentence for the person in Slack.
fn refusal(error: DecisionError) -> String {
    let why = match error {
        DecisionError::Unavailable(_) => {
            "ExecOps could not reach its database; try again in a moment".into()
        }
        DecisionError::Internal(cause) => {
            tracing::error!(%cause, "a decision from Slack failed");
            "something went wrong and has been logged".into()
        }
        refused => refused.to_string(),
    };
    format!("Nothing was decided: {why}.")
}

/// A decision taken from Slack: what to say, and whether it settled the proposal (a first
/// approval of two leaves it waiting for the next approver).
struct Taken {
    line: String,
    settled: bool,
}

/// Decides for the Slack member `member` and says how it went: the line for the message on
/// success, the refusal otherwise.
async fn decide_for(
    state: &AppState,
    member: &str,
    id: &str,
    approve: bool,
    shown_hash: Option<String>,
    reason: Option<String>,
    mut metadata: HashMap<String, String>,
) -> Result<Taken, String> {
    let actor = person_of(state, member).await?;
    metadata.extend(HashMap::from(
        Metadata::via("slack").with("slack_user_id", member),
    ));
    let who = format!("<@{member}> ({})", actor.email);
    let reason = match (approve, reason) {
        (true, _) => None,
        (false, Some(reason)) => Some(reason),
        // A button has no room for a reason; the message says so before it is clicked.
        (false, None) => Some(format!("Rejected in Slack by {}", actor.email)),
    };
    let request = DecisionRequest {
        approve,
        comment: None,
        reason: reason.clone(),
        shown_hash,
        metadata,
    };
    match decide(&state.store, &state.clock, &actor, id, request).await {
        Ok(outcome) if outcome.status == crate::domain::Status::Pending => Ok(Taken {
            line: format!(
                "{} by {who}: {}; still waiting",
                if approve { "Approved" } else { "Rejected" },
                outcome.summary()
            ),
            settled: false,
        }),
        Ok(_) if approve => Ok(Taken {
            line: format!("Approved by {who}"),
            settled: true,
        }),
        Ok(_) => Ok(Taken {
            line: format!("Rejected by {who}: {}", reason.unwrap_or_default()),
            settled: true,
        }),
        Err(error) => Err(refusal(error)),
    }
}

/// Acts on a button click and answers through its `response_url`: the message is replaced
/// by who decided, or the clicker alone is told why nothing happened.
#[tracing::instrument(skip_all, fields(proposal = %click.proposal_id, member = %click.user_id))]
pub async fn act_on_click(state: AppState, click: Click, metadata: HashMap<String, String>) {
    let outcome = match from_our_workspace(&state, click.team_id.as_deref()) {
        true => {
            decide_for(
                &state,
                &click.user_id,
                &click.proposal_id,
                click.approve,
                Some(click.payload_hash.clone()),
                None,
                metadata,
            )
            .await
        }
        false => Err(other_workspace()),
    };
    let answer = match &outcome {
        // The buttons stay for the other approvers; everyone in the conversation sees the vote.
        Ok(Taken {
            line,
            settled: false,
        }) => {
            serde_json::json!({"response_type": "in_channel", "replace_original": false, "text": line})
        }
        Ok(Taken { line, .. }) => {
            let title =
                crate::projections::proposals::by_id(state.store.pool(), &click.proposal_id)
                    .await
                    .ok()
                    .flatten()
                    .map(|p| p.title)
                    .unwrap_or_else(|| "Proposal".into());
            decided_message(
                &title,
                &click.proposal_id,
                line,
                state.config.public_url.as_deref(),
            )
        }
        Err(refused) => ephemeral(refused),
    };
    if let Err(error) = state
        .adapters
        .slack
        .respond(&click.response_url, &answer)
        .await
    {
        tracing::warn!(%error, "the answer to a Slack click could not be delivered");
    }
}

/// `/execops reject ID reason` (and a decision typed in words): the answer shown to the
/// person who typed it.
pub async fn run_command(
    state: &AppState,
    team: Option<&str>,
    member: &str,
    id: &str,
    approve: bool,
    reason: Option<String>,
    metadata: HashMap<String, String>,
) -> String {
    if !from_our_workspace(state, team) {
        return other_workspace();
    }
    match decide_for(state, member, id, approve, None, reason, metadata).await {
        Ok(Taken { line, .. }) => format!("{line}. Proposal `{id}`."),
        Err(refused) => refused,
    }
}

/// `/execops approve ID`: approving takes a look first. The person who typed it is shown
/// the action (whom it reaches, its subject, first lines and amount) with Approve and
/// Reject buttons bound to the hash of exactly that; the click decides. The answer's text,
/// and its blocks when there is something to approve.
pub async fn ask_to_approve(
    state: &AppState,
    team: Option<&str>,
    member: &str,
    id: &str,
) -> (String, Option<serde_json::Value>) {
    if !from_our_workspace(state, team) {
        return (other_workspace(), None);
    }
    let actor = match person_of(state, member).await {
        Ok(actor) => actor,
        Err(refused) => return (refused, None),
    };
    if let Err(forbidden) = actor.may(Permission::Decide) {
        return (
            refusal(DecisionError::Forbidden(forbidden.to_string())),
            None,
        );
    }
    let public = state.config.public_base();
    match crate::notify::slack::asking(state.store.pool(), id, Some(&public)).await {
        Ok(Some((text, blocks))) => (text, Some(blocks)),
        Ok(None) => (
            format!("Nothing was decided: proposal `{id}` is not waiting for a decision."),
            None,
        ),
        Err(error) => (refusal(DecisionError::from(error)), None),
    }
}

/// Whether the Slack member `member` may read Today's Moves: linked to a person with read
/// access. The refusal otherwise.
pub async fn may_read(state: &AppState, team: Option<&str>, member: &str) -> Result<(), String> {
    if !from_our_workspace(state, team) {
        return Err(other_workspace());
    }
    let actor = person_of(state, member)
        .await
        .map_err(|refused| refused.replace("nothing was decided", "nothing is shown"))?;
    actor
        .may(Permission::Read)
        .map_err(|forbidden| format!("Nothing is shown: {forbidden}."))
}

/// A command's answer: its text, and its blocks when it has buttons.
pub type Answer = (String, Option<serde_json::Value>);

/// The answer of a command if it comes within `budget`; otherwise a note that it follows,
/// and the answer is posted to `response_url` (shown to the same person) when done.
pub async fn within_budget(
    state: &AppState,
    mut work: tokio::task::JoinHandle<Answer>,
    budget: std::time::Duration,
    response_url: Option<String>,
) -> Answer {
    match tokio::time::timeout(budget, &mut work).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(error)) => {
            tracing::error!(%error, "a Slack command's decision failed");
            (
                "Something went wrong and has been logged; nothing may have been decided.".into(),
                None,
            )
        }
        Err(_) => {
            let slack = state.adapters.slack.clone();
            tokio::spawn(async move {
                let Ok((text, blocks)) = work.await else {
                    return;
                };
                let Some(url) = response_url else { return };
                let mut late = ephemeral(&text);
                if let Some(blocks) = blocks {
                    late["blocks"] = blocks;
                }
                if let Err(error) = slack.respond(&url, &late).await {
                    tracing::warn!(%error, "the late answer to a Slack command was not delivered");
                }
            });
            (
                "ExecOps is still deciding; the result will follow here.".into(),
                None,
            )
        }
    }
}

pub const HELP: &str = "Usage:\n\
    • `/execops`: the top of Today's Moves\n\
    • `/execops approve PROPOSAL_ID`: shows what will run, with the buttons to decide\n\
    • `/execops reject PROPOSAL_ID reason…`\n\
    • `/execops help`: this text";
