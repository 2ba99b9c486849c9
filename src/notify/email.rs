//! The `email_approvals` subscriber: when a proposal of high or critical urgency is drafted,
//! or escalated to named approvers, it mails each approver (not the person who asked for it)
//! one email about that one proposal, with an Approve and a Reject link (see
//! [`super::links`]). Opening a link only shows the proposal; deciding is a POST.
//!
//! Sending happens inside the runner's transaction but before anything in it writes, so the
//! open transaction holds back no other reader of the log. Each email handed to the mail
//! server is recorded at once, in its own statement, in `approval_emails`; after a crash
//! between sending and the checkpoint's commit the event is handled again and the emails
//! already recorded are not sent again. A crash in the moment between the server taking an
//! email and that row committing sends that one email twice, with the same Message-ID:
//! a duplicate notice is harmless (its links decide once), a lost one is not.

use crate::clock::Clock;
use std::collections::BTreeSet;

use askama::Template;
use chrono::{DateTime, Utc};
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use tokio::sync::OnceCell;

use super::links::{nonce, LinkClaims, LinkDecision, LinkKey};
use crate::adapters::glance::{glance, Glance};
use crate::config::{Config, LinkConfig};
use crate::domain::{ProposalEvent, Status};
use crate::projections::users::is_requester;
use crate::store::log::StoredEvent;
use crate::store::subscription::{HandlerError, Subscriber};

/// The subscription's name: it keys the checkpoint and the advisory lock.
pub const NAME: &str = "email_approvals";

pub struct EmailApprovals {
    pool: PgPool,
    links: LinkConfig,
    key: OnceCell<LinkKey>,
    public_base: String,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    clock: Clock,
}

impl EmailApprovals {
    /// The notifier, or `None` when there is no mail server to send through (`SMTP_URL`
    /// unset); an unusable `SMTP_URL` or `EXECOPS_EMAIL_FROM` is an error.
    pub fn new(pool: PgPool, config: &Config, clock: Clock) -> Result<Option<Self>, String> {
        let Some(url) = &config.adapters.smtp_url else {
            return Ok(None);
        };
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
            .map_err(|e| format!("SMTP_URL is not usable: {e}"))?
            .timeout(Some(config.adapters.timeout))
            .build();
        let from = config.adapters.email_from.parse().map_err(|e| {
            format!(
                "EXECOPS_EMAIL_FROM {:?} is not an address: {e}",
                config.adapters.email_from
            )
        })?;
        Ok(Some(Self {
            pool,
            links: config.links.clone(),
            key: OnceCell::new(),
            public_base: config.public_base(),
            transport,
            from,
            clock,
        }))
    }

    async fn key(&self) -> Result<&LinkKey, sqlx::Error> {
        self.key
            .get_or_try_init(|| LinkKey::load(&self.pool, &self.links))
            .await
    }
}

/// Why approvers are told, and so which of their emails this is.
#[derive(Debug, Clone, PartialEq)]
enum Occasion {
    Drafted,
    Escalated { level: u64, to: BTreeSet<String> },
}

impl Occasion {
    /// The key of `approval_emails`: one email per proposal, approver and occasion.
    fn key(&self) -> String {
        match self {
            Occasion::Drafted => "drafted".into(),
            Occasion::Escalated { level, .. } => format!("escalated:{level}"),
        }
    }

    /// What a log event calls for, if anything. `Escalated` is read from its stored JSON:
    /// `{"Escalated": {"at": …, "level": 1, "to": ["a@x.com"]}}`.
    fn of(event: &StoredEvent) -> Option<Self> {
        if event.aggregate_type != "Proposal" {
            return None;
        }
        match event.event_type.as_str() {
            "Drafted" => {
                // The draft's fields sit flattened beside `payload_hash`; a nested `draft`
                // is read too.
                let urgency = event
                    .payload
                    .pointer("/Drafted/urgency")
                    .or_else(|| event.payload.pointer("/Drafted/draft/urgency"))?
                    .as_str()?;
                matches!(urgency, "high" | "critical").then_some(Occasion::Drafted)
            }
            "Escalated" => {
                let body = event.payload.get("Escalated")?;
                let level = body.get("level").and_then(Value::as_u64).unwrap_or(1);
                let to = body
                    .get("to")?
                    .as_array()?
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|e| e.trim().to_lowercase())
                    .collect();
                Some(Occasion::Escalated { level, to })
            }
            _ => None,
        }
    }
}

/// A proposal as its own stream tells it now, for the email.
#[derive(Debug, Default)]
struct Told {
    status: Status,
    title: String,
    reasoning: String,
    drivers: Vec<String>,
    score: u8,
    urgency: String,
    action_type: String,
    action: Value,
    payload_hash: String,
    requested_by: Option<String>,
    /// When the proposal itself stops being decidable, if its events say.
    expires_at: Option<DateTime<Utc>>,
}

fn text(value: impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Folds the proposal's stream. Events this build does not know (added by later versions)
/// are passed over; the status comes from the domain's own reading of each event.
async fn told(conn: &mut PgConnection, id: &str) -> Result<Told, sqlx::Error> {
    let rows: Vec<(Value,)> = sqlx::query_as(
        "SELECT payload FROM events WHERE aggregate_type = 'Proposal' AND aggregate_id = $1 \
         ORDER BY sequence",
    )
    .bind(id)
    .fetch_all(conn)
    .await?;
    let mut told = Told::default();
    for (payload,) in rows {
        if let Some(at) = payload
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(|body| body.get("expires_at"))
            .and_then(|v| serde_json::from_value::<DateTime<Utc>>(v.clone()).ok())
        {
            told.expires_at = Some(at);
        }
        let Ok(event) = serde_json::from_value::<ProposalEvent>(payload) else {
            continue;
        };
        if let Some(status) = event.status_after() {
            told.status = status;
        }
        match event {
            ProposalEvent::Drafted {
                draft,
                payload_hash,
            } => {
                told.title = draft.title;
                told.reasoning = draft.reasoning;
                told.drivers = draft.drivers;
                told.score = draft.score;
                told.urgency = text(draft.urgency);
                told.action_type = draft.action_type;
                told.action = draft.action;
                told.payload_hash = payload_hash;
                told.requested_by = draft.requested_by.map(|r| r.trim().to_lowercase());
            }
            ProposalEvent::Revised {
                revision,
                payload_hash,
            } => {
                told.title = revision.title;
                told.reasoning = revision.reasoning;
                told.drivers = revision.drivers;
                told.score = revision.score;
                told.urgency = text(revision.urgency);
                told.action = revision.action;
                told.payload_hash = payload_hash;
            }
            _ => {}
        }
    }
    Ok(told)
}

/// People who may decide now, by address.
/// The approvers and admins, with the Slack member each is linked to.
async fn approvers(conn: &mut PgConnection) -> Result<Vec<(String, Option<String>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT email, slack_user_id FROM users WHERE role IN ('approver', 'admin') \
         AND disabled_at IS NULL \
         ORDER BY email",
    )
    .fetch_all(conn)
    .await
}

#[derive(Template)]
#[template(path = "email/approval.txt")]
struct PlainBody<'a> {
    p: &'a Told,
    escalation: Option<u64>,
    approve_url: &'a str,
    reject_url: &'a str,
    proposal_url: &'a str,
    expires: String,
    action: String,
    glance: Glance,
}

#[derive(Template)]
#[template(path = "email/approval.html")]
struct HtmlBody<'a> {
    p: &'a Told,
    escalation: Option<u64>,
    approve_url: &'a str,
    reject_url: &'a str,
    proposal_url: &'a str,
    expires: String,
    action: String,
    glance: Glance,
}

/// The action as the email shows it: pretty JSON, cut short if it is long.
fn action_summary(action: &Value) -> String {
    const LIMIT: usize = 2000;
    let pretty = serde_json::to_string_pretty(action).unwrap_or_default();
    if pretty.len() <= LIMIT {
        return pretty;
    }
    let mut end = LIMIT;
    while !pretty.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n… (the rest is on the proposal's page)", &pretty[..end])
}

/// A Message-ID that is the same for the same proposal, approver and occasion: a repeat
/// after a crash is recognisably the same email.
fn message_id(proposal: &str, approver: &str, occasion: &str) -> String {
    let who = hex::encode(&Sha256::digest(approver.as_bytes())[..8]);
    format!(
        "<approval.{proposal}.{}.{who}@execops>",
        occasion.replace(':', "-")
    )
}

enum Sent {
    Taken,
    Refused(String),
}

impl EmailApprovals {
    fn url(&self, token: &str) -> String {
        format!("{}/links/{token}", self.public_base)
    }

    /// One email to `approver` about proposal `id`.
    async fn send(
        &self,
        id: &str,
        p: &Told,
        approver: &str,
        occasion: &Occasion,
        message_id: &str,
    ) -> Result<Sent, HandlerError> {
        let key = self.key().await?;
        let mut expires = self.clock.now() + self.links.ttl;
        if let Some(own) = p.expires_at {
            expires = expires.min(own);
        }
        let link = |decision| {
            self.url(&key.sign(&LinkClaims {
                proposal: id.to_string(),
                approver: approver.to_string(),
                decision,
                payload_hash: p.payload_hash.clone(),
                expires: expires.timestamp(),
                nonce: nonce(),
            }))
        };
        let approve_url = link(LinkDecision::Approve);
        let reject_url = link(LinkDecision::Reject);
        let proposal_url = format!("{}/proposals/{id}", self.public_base);
        let escalation = match occasion {
            Occasion::Escalated { level, .. } => Some(*level),
            Occasion::Drafted => None,
        };
        let expires = expires.format("%Y-%m-%d %H:%M UTC").to_string();
        let action = action_summary(&p.action);
        let glance = glance(&p.action_type, &p.action);
        let plain = PlainBody {
            p,
            escalation,
            approve_url: &approve_url,
            reject_url: &reject_url,
            proposal_url: &proposal_url,
            expires: expires.clone(),
            action: action.clone(),
            glance: glance.clone(),
        }
        .render()?;
        let html = HtmlBody {
            p,
            escalation,
            approve_url: &approve_url,
            reject_url: &reject_url,
            proposal_url: &proposal_url,
            expires,
            action,
            glance,
        }
        .render()?;
        let to: Mailbox = match approver.parse() {
            Ok(to) => to,
            Err(e) => return Ok(Sent::Refused(format!("not an address: {e}"))),
        };
        let subject = match escalation {
            Some(level) => format!("[ExecOps] Escalated (level {level}): {}", p.title),
            None => format!("[ExecOps] Approval needed: {}", p.title),
        };
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(message_id.to_string()))
            .multipart(MultiPart::alternative_plain_html(plain, html))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(Sent::Taken),
            // The server will not take it however often it is asked: say so and move on.
            Err(error) if error.is_permanent() => Ok(Sent::Refused(error.to_string())),
            // Busy, unreachable, timed out: the runner retries the event with back-off.
            Err(error) => Err(Box::new(error)),
        }
    }
}

impl Subscriber for EmailApprovals {
    fn name(&self) -> &str {
        NAME
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
        let Some(occasion) = Occasion::of(event) else {
            return Ok(());
        };
        // Links sent now for an event this old would outlive nothing they could still do:
        // a new subscription on an old database does not mail its history.
        if event.recorded_at + self.links.ttl < self.clock.now() {
            return Ok(());
        }
        let id = event.aggregate_id.as_str();
        let p = told(&mut *conn, id).await?;
        if p.status != Status::Pending {
            tracing::debug!(status = %p.status, "no longer pending; nobody to tell");
            return Ok(());
        }
        let occasion_key = occasion.key();
        for (approver, member) in approvers(&mut *conn).await? {
            if is_requester(p.requested_by.as_deref(), &approver, member.as_deref()) {
                continue;
            }
            if let Occasion::Escalated { to, .. } = &occasion {
                if !to.contains(&approver) {
                    continue;
                }
            }
            let already: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM approval_emails \
                 WHERE proposal_id = $1 AND approver = $2 AND reason = $3)",
            )
            .bind(id)
            .bind(&approver)
            .bind(&occasion_key)
            .fetch_one(&self.pool)
            .await?;
            if already {
                continue;
            }
            let message_id = message_id(id, &approver, &occasion_key);
            let failure = match self.send(id, &p, &approver, &occasion, &message_id).await? {
                Sent::Taken => None,
                Sent::Refused(why) => {
                    tracing::warn!(%approver, %why, "the mail server refused an approval email");
                    Some(why)
                }
            };
            // On the pool, not in the runner's transaction: it must hold even if the
            // checkpoint's transaction does not commit.
            sqlx::query(
                "INSERT INTO approval_emails (proposal_id, approver, reason, message_id, failure) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(&approver)
            .bind(&occasion_key)
            .bind(&message_id)
            .bind(failure)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }
}

/// Sends one plain-text email through `SMTP_URL`, for a notice that is not about a proposal
/// (an invite, a password reset link). `Ok(false)` when no mail server is set.
pub async fn send_plain(
    config: &Config,
    to: &str,
    subject: &str,
    text: String,
) -> Result<bool, String> {
    let Some(url) = &config.adapters.smtp_url else {
        return Ok(false);
    };
    let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
        .map_err(|e| format!("SMTP_URL is not usable: {e}"))?
        .timeout(Some(config.adapters.timeout))
        .build();
    let from: Mailbox = config
        .adapters
        .email_from
        .parse()
        .map_err(|e| format!("EXECOPS_EMAIL_FROM is not an address: {e}"))?;
    let to: Mailbox = to
        .parse()
        .map_err(|e| format!("{to:?} is not an address: {e}"))?;
    let message = Message::builder()
        .from(from)
        .to(to)
        .subject(subject)
        .body(text)
        .map_err(|e| e.to_string())?;
    transport
        .send(message)
        .await
        .map(|_| true)
        .map_err(|e| format!("the mail server refused it: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored(event_type: &str, payload: Value) -> StoredEvent {
        StoredEvent {
            log: Default::default(),
            aggregate_type: "Proposal".into(),
            aggregate_id: "p1".into(),
            sequence: 1,
            event_type: event_type.into(),
            event_version: "1.0".into(),
            payload,
            metadata: Value::Null,
            recorded_at: Utc::now(),
        }
    }

    #[test]
    fn only_urgent_drafts_and_escalations_call_for_an_email() {
        let draft = |urgency: &str| stored("Drafted", json!({"Drafted": {"urgency": urgency}}));
        assert_eq!(Occasion::of(&draft("critical")), Some(Occasion::Drafted));
        assert_eq!(Occasion::of(&draft("high")), Some(Occasion::Drafted));
        assert_eq!(Occasion::of(&draft("medium")), None);
        assert_eq!(Occasion::of(&draft("low")), None);
        assert_eq!(
            Occasion::of(&stored("Approved", json!({"Approved": {}}))),
            None
        );
        let escalated = stored(
            "Escalated",
            json!({"Escalated": {"at": "2026-11-30T10:00:00Z", "level": 2, "to": ["Ann@Example.com"]}}),
        );
        assert_eq!(
            Occasion::of(&escalated),
            Some(Occasion::Escalated {
                level: 2,
                to: BTreeSet::from(["ann@example.com".to_string()])
            })
        );
        let mut other = draft("high");
        other.aggregate_type = "Inbound".into();
        assert_eq!(Occasion::of(&other), None);
    }

    #[test]
    fn message_ids_are_stable_per_proposal_approver_and_occasion() {
        let a = message_id("p1", "ann@example.com", "drafted");
        assert_eq!(a, message_id("p1", "ann@example.com", "drafted"));
        assert_ne!(a, message_id("p1", "bob@example.com", "drafted"));
        assert_ne!(a, message_id("p1", "ann@example.com", "escalated:1"));
        assert!(!a.contains("ann@"), "{a}");
    }

    #[test]
    fn a_long_action_is_cut_at_a_character_boundary() {
        let action = json!({"body": "é".repeat(3000)});
        let summary = action_summary(&action);
        assert!(summary.len() < 2100);
        assert!(summary.ends_with("(the rest is on the proposal's page)"));
    }
}
