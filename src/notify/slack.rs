//! Approvals in Slack, the outbound half: the `slack_approvals` subscriber tells the people
//! who may decide that a high-urgency proposal waits, with Approve and Reject buttons, and
//! tells the people a proposal was escalated to. Telling approvers is not an action on the
//! company's behalf, so it needs no approval. The clicks come back through
//! `/webhooks/slack/interactions` (see `web::slack`) and end in the same decision path as
//! every other channel.
//!
//! Delivery is at least once: the posts happen inside the subscriber's transaction, before
//! its checkpoint commits, so a crash between a post and the commit posts again on restart.
//! A second message is harmless (a click on either decides once); a lost one would leave a
//! critical proposal unseen. Before posting, the proposal's status is read, so a subscriber
//! that catches up after a pause does not announce proposals already decided.

use serde_json::{json, Value};
use sqlx::PgConnection;

use crate::adapters::glance::{glance, Glance};
use crate::adapters::slack::Slack;
use crate::adapters::AdapterError;
use crate::domain::{ProposalDraft, Urgency};
use crate::ingest::slack::{button_value, APPROVE_ACTION, REJECT_ACTION};
use crate::projections::users::{is_requester, slack_deciders};
use crate::store::log::StoredEvent;
use crate::store::subscription::{HandlerError, Subscriber};

/// What an approval message shows.
#[derive(Clone, Debug, PartialEq)]
struct Notice {
    pub id: String,
    pub title: String,
    pub reasoning: String,
    pub score: i64,
    pub urgency: String,
    pub action_type: String,
    pub vertical: String,
    /// The hash of the action the message stands for: a click decides on exactly it.
    pub payload_hash: String,
    /// Who asked for it; they are not asked to approve it.
    pub requested_by: Option<String>,
    /// Set when the proposal was escalated: the level reached.
    pub escalation: Option<u64>,
    /// What the action does: shown in the message, bound by `payload_hash`.
    pub glance: Glance,
}

impl Notice {
    fn from_draft(draft: &ProposalDraft, payload_hash: &str) -> Self {
        Self {
            id: draft.id.to_string(),
            title: draft.title.clone(),
            reasoning: draft.reasoning.clone(),
            score: i64::from(draft.score),
            urgency: text_of(&draft.urgency),
            action_type: draft.action_type.clone(),
            vertical: text_of(&draft.vertical),
            payload_hash: payload_hash.to_string(),
            requested_by: draft.requested_by.clone(),
            escalation: None,
            glance: glance(&draft.action_type, &draft.action),
        }
    }
}

fn text_of(value: &impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Slack's limit on a header's text is 150 characters, on a section's 3000.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max.saturating_sub(1)) {
        Some((end, _)) if text[end..].chars().nth(1).is_some() => format!("{}…", &text[..end]),
        _ => text.to_string(),
    }
}

/// Slack's mrkdwn treats `&`, `<` and `>` as control characters. Text escaped already (a
/// Slack message's own text) is not escaped twice.
fn escape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The action as the message shows it: whom it reaches, its subject and amount, and its
/// first lines quoted.
fn action_text(notice: &Notice) -> String {
    let glance = &notice.glance;
    let mut text = format!(
        "*What will run* `{}`\n*To:* {}",
        escape(&notice.action_type),
        escape(&glance.to)
    );
    if let Some(subject) = &glance.subject {
        text.push_str(&format!("\n*Subject:* {}", escape(subject)));
    }
    if let Some(amount) = &glance.amount {
        text.push_str(&format!("\n*Amount:* {}", escape(amount)));
    }
    for line in &glance.lines {
        text.push_str(&format!("\n>{}", escape(line)));
    }
    if glance.more {
        text.push_str("\n>…");
    }
    text
}

fn link_line(id: &str, public_url: Option<&str>) -> String {
    match public_url {
        Some(base) => format!("<{base}/proposals/{id}|Open in ExecOps> · `{id}`"),
        None => format!("Proposal `{id}`"),
    }
}

/// The approval message: its notification text and its Block Kit blocks.
fn approval_message(notice: &Notice, public_url: Option<&str>) -> (String, Value) {
    let lead = match notice.escalation {
        Some(level) => format!("Escalated to you (level {level}): "),
        None => "Waiting for your decision: ".to_string(),
    };
    let text = format!("{lead}{}", notice.title);
    let value = button_value(&notice.id, &notice.payload_hash);
    let blocks = json!([
        {"type": "header", "text": {"type": "plain_text", "text": clip(&notice.title, 150), "emoji": false}},
        {"type": "section", "text": {"type": "mrkdwn", "text": clip(&format!("{lead}\n{}", escape(&notice.reasoning)), 3000)},
         "fields": [
            {"type": "mrkdwn", "text": format!("*Score*\n{}", notice.score)},
            {"type": "mrkdwn", "text": format!("*Urgency*\n{}", notice.urgency)},
            {"type": "mrkdwn", "text": format!("*Action*\n`{}`", escape(&notice.action_type))},
            {"type": "mrkdwn", "text": format!("*Vertical*\n{}", notice.vertical)},
         ]},
        {"type": "section", "text": {"type": "mrkdwn", "text": clip(&action_text(notice), 3000)}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": link_line(&notice.id, public_url)}]},
        {"type": "actions", "block_id": "execops_decision", "elements": [
            {"type": "button", "action_id": APPROVE_ACTION, "style": "primary", "value": value,
             "text": {"type": "plain_text", "text": "Approve"}},
            {"type": "button", "action_id": REJECT_ACTION, "style": "danger", "value": value,
             "text": {"type": "plain_text", "text": "Reject"},
             "confirm": {
                "title": {"type": "plain_text", "text": "Reject this proposal?"},
                "text": {"type": "mrkdwn", "text": "It will not run. The reason recorded is that it was rejected in Slack; give another one with `/execops reject ID reason`."},
                "confirm": {"type": "plain_text", "text": "Reject"},
                "deny": {"type": "plain_text", "text": "Cancel"},
                "style": "danger"
             }},
        ]},
    ]);
    (text, blocks)
}

/// The message that replaces an approval message once it is decided: the same title, who
/// decided, and no buttons.
pub fn decided_message(title: &str, id: &str, line: &str, public_url: Option<&str>) -> Value {
    json!({
        "replace_original": true,
        "text": format!("{line}: {title}"),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": clip(title, 150), "emoji": false}},
            {"type": "section", "text": {"type": "mrkdwn", "text": line}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": link_line(id, public_url)}]},
        ],
    })
}

/// A message only the person who clicked or typed sees; the original stays as it was.
pub fn ephemeral(text: &str) -> Value {
    json!({"response_type": "ephemeral", "replace_original": false, "text": text})
}

/// The `slack_approvals` subscriber.
pub struct SlackApprovals {
    slack: Slack,
    /// `EXECOPS_SLACK_APPROVALS_CHANNEL`: one channel instead of DMs.
    channel: Option<String>,
    public_url: Option<String>,
}

impl SlackApprovals {
    pub fn new(slack: Slack, channel: Option<String>, public_url: Option<String>) -> Self {
        Self {
            slack,
            channel,
            public_url,
        }
    }

    async fn post(&self, to: &[String], notice: &Notice) -> Result<(), HandlerError> {
        let (text, blocks) = approval_message(notice, self.public_url.as_deref());
        for channel in to {
            match self.slack.post_blocks(channel, &text, &blocks).await {
                Ok(_) => tracing::info!(proposal = %notice.id, %channel, "approval message posted"),
                // Slack is away or busy: the runner tries the event again after a pause.
                Err(error @ AdapterError::Transient { .. }) => return Err(Box::new(error)),
                // This recipient cannot be reached (an unknown channel, a deactivated
                // member): trying again changes nothing, and the others still hear.
                Err(error) => {
                    tracing::warn!(proposal = %notice.id, %channel, %error, "approval message refused")
                }
            }
        }
        Ok(())
    }
}

/// The proposal's status in the inbox read model; `None` before it has seen the draft.
async fn status_of(conn: &mut PgConnection, id: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT status FROM proposal_summaries WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// The DM channels of the people who may decide, less the one who asked for it.
async fn deciders_except(
    conn: &mut PgConnection,
    requested_by: Option<&str>,
    only: Option<&[String]>,
) -> Result<Vec<String>, sqlx::Error> {
    Ok(slack_deciders(conn)
        .await?
        .into_iter()
        .filter(|(email, member)| !is_requester(requested_by, email, Some(member)))
        .filter(|(email, _)| {
            only.is_none_or(|only| only.iter().any(|o| o.eq_ignore_ascii_case(email)))
        })
        .map(|(_, member)| member)
        .collect())
}

/// A proposal as the inbox shows it now (a revision may have changed it since the draft),
/// with its status and the requester from its draft; `None` before the inbox has it.
async fn current_notice(
    conn: &mut PgConnection,
    id: &str,
) -> Result<Option<(String, Notice)>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        status: String,
        title: String,
        reasoning: String,
        score: i32,
        urgency: String,
        action_type: String,
        vertical: String,
        payload_hash: String,
        action: sqlx::types::Json<Value>,
    }
    let row: Option<Row> = sqlx::query_as(
        "SELECT status, title, reasoning, score, urgency, action_type, vertical, payload_hash, \
                action \
         FROM proposal_summaries WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let requested_by: Option<String> = sqlx::query_scalar(
        "SELECT payload -> 'Drafted' ->> 'requested_by' FROM events \
         WHERE aggregate_type = 'Proposal' AND aggregate_id = $1 AND event_type = 'Drafted'",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .flatten();
    let notice = Notice {
        id: id.to_string(),
        title: row.title,
        reasoning: row.reasoning,
        score: i64::from(row.score),
        urgency: row.urgency,
        glance: glance(&row.action_type, &row.action.0),
        action_type: row.action_type,
        vertical: row.vertical,
        payload_hash: row.payload_hash,
        requested_by,
        escalation: None,
    };
    Ok(Some((row.status, notice)))
}

/// An escalated proposal's message, while it is pending.
async fn escalated_notice(
    conn: &mut PgConnection,
    id: &str,
    level: u64,
) -> Result<Option<Notice>, HandlerError> {
    match current_notice(conn, id).await? {
        // Escalation follows the draft, so the inbox has it once it catches up.
        None => Err(format!("proposal {id} is escalated but not yet in the inbox").into()),
        Some((status, _)) if status != "pending" => Ok(None),
        Some((_, notice)) => Ok(Some(Notice {
            escalation: Some(level),
            ..notice
        })),
    }
}

/// The approval message for a pending proposal, as `/execops approve ID` shows it to the
/// person who typed it: the action and the buttons bound to its hash; `None` when the
/// proposal is not pending or not known.
pub async fn asking(
    pool: &sqlx::PgPool,
    id: &str,
    public_url: Option<&str>,
) -> Result<Option<(String, Value)>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    Ok(match current_notice(&mut conn, id).await? {
        Some((status, notice)) if status == "pending" => {
            Some(approval_message(&notice, public_url))
        }
        _ => None,
    })
}

impl Subscriber for SlackApprovals {
    fn name(&self) -> &str {
        "slack_approvals"
    }

    fn payload_types(&self) -> Option<&'static [&'static str]> {
        Some(&["Proposal"])
    }

    fn ignores_other_types(&self) -> bool {
        true
    }

    #[tracing::instrument(skip_all, fields(proposal = %event.aggregate_id, event = %event.event_type))]
    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), HandlerError> {
        if event.aggregate_type != "Proposal" {
            return Ok(());
        }
        let id = event.aggregate_id.as_str();
        match event.event_type.as_str() {
            "Drafted" => {
                let body = &event.payload["Drafted"];
                let draft: ProposalDraft = serde_json::from_value(body.clone())?;
                if draft.urgency < Urgency::High {
                    return Ok(());
                }
                let decided = status_of(conn, id)
                    .await?
                    .is_some_and(|status| status != "pending");
                if decided {
                    return Ok(());
                }
                let hash = body["payload_hash"].as_str().unwrap_or_default();
                let notice = Notice::from_draft(&draft, hash);
                let to = match &self.channel {
                    Some(channel) => vec![channel.clone()],
                    None => deciders_except(conn, draft.requested_by.as_deref(), None).await?,
                };
                self.post(&to, &notice).await
            }
            // Recorded by the escalation rules as
            // `{"Escalated": {"at": …, "level": 1, "to": ["approver@…"]}}`: tell those
            // people directly, whether or not a shared channel heard of it first.
            "Escalated" => {
                let body = &event.payload["Escalated"];
                let level = body["level"].as_u64().unwrap_or(1);
                let emails: Vec<String> = body["to"]
                    .as_array()
                    .map(|to| {
                        to.iter()
                            .filter_map(|e| e.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                if emails.is_empty() {
                    return Ok(());
                }
                let Some(notice) = escalated_notice(conn, id, level).await? else {
                    return Ok(());
                };
                let to =
                    deciders_except(conn, notice.requested_by.as_deref(), Some(&emails)).await?;
                self.post(&to, &notice).await
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice() -> Notice {
        Notice {
            id: "6f1c2d4e-9a3b-4c5d-8e7f-0a1b2c3d4e5f".into(),
            title: "Retry <invoice> & tell the customer".into(),
            reasoning: "It failed twice".into(),
            score: 81,
            urgency: "critical".into(),
            action_type: "stripe.retry_invoice".into(),
            vertical: "money".into(),
            payload_hash: "ab".repeat(32),
            requested_by: None,
            escalation: None,
            glance: glance(
                "stripe.retry_invoice",
                &serde_json::json!({"invoice": "in_1", "amount_cents": 12_500, "currency": "eur"}),
            ),
        }
    }

    #[test]
    fn the_approval_message_carries_both_buttons_with_the_proposal_and_its_hash() {
        let (text, blocks) = approval_message(&notice(), Some("https://execops.example.com"));
        assert!(text.contains("Retry <invoice>"), "{text}");
        let action = blocks[2]["text"]["text"].as_str().unwrap_or_default();
        assert!(action.contains("*To:* Stripe invoice in_1"), "{action}");
        assert!(action.contains("*Amount:* €125.00 EUR"), "{action}");
        let actions = &blocks[4];
        assert_eq!(actions["type"], "actions");
        let value = format!("{}:{}", notice().id, "ab".repeat(32));
        assert_eq!(actions["elements"][0]["action_id"], APPROVE_ACTION);
        assert_eq!(actions["elements"][0]["style"], "primary");
        assert_eq!(actions["elements"][0]["value"], value.as_str());
        assert_eq!(actions["elements"][1]["action_id"], REJECT_ACTION);
        assert_eq!(actions["elements"][1]["style"], "danger");
        assert!(actions["elements"][1]["confirm"]["title"].is_object());
        let context = blocks[3]["elements"][0]["text"]
            .as_str()
            .unwrap_or_default();
        assert!(context.contains(&format!(
            "<https://execops.example.com/proposals/{}|Open in ExecOps>",
            notice().id
        )));
    }

    #[test]
    fn long_titles_are_clipped_to_slacks_limits_and_mrkdwn_is_escaped() {
        assert_eq!(clip("short", 150), "short");
        let long = "x".repeat(200);
        assert_eq!(clip(&long, 150).chars().count(), 150);
        assert_eq!(clip(&"y".repeat(150), 150), "y".repeat(150));
        assert_eq!(escape("a <b> & c"), "a &lt;b&gt; &amp; c");
        assert_eq!(
            escape("a &lt;b&gt; &amp; c"),
            "a &lt;b&gt; &amp; c",
            "not twice"
        );
    }
}
