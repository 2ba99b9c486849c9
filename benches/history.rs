//! A log of realistic shape for the benchmarks: webhook deliveries with the providers'
//! published payloads (the fixtures) and the bank feed's expenses, one in six of which
//! drafts a proposal; of those, seven in ten are approved and executed (three in ten of
//! those with an outcome), two in ten rejected, one in ten left pending, one in ten
//! previewed first. Ten people with a token each, a few guardrail changes. Written with
//! `COPY`, a signal every 20 seconds from 2026-01-01.

use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use execops::domain::{
    Decision, InboundEvent, ProposalDraft, ProposalEvent, ProposalId, Role, Signal, Urgency,
    Vertical,
};
use serde_json::{json, Value};
use sqlx::PgPool;

/// One row for `COPY events … (FORMAT csv)`.
pub struct Row {
    aggregate_type: &'static str,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    payload: Value,
    metadata: Value,
    at: DateTime<Utc>,
}

fn csv(field: &str, out: &mut String) {
    out.push('"');
    out.push_str(&field.replace('"', "\"\""));
    out.push('"');
}

impl Row {
    fn write(&self, out: &mut String) {
        out.push_str(self.aggregate_type);
        out.push(',');
        csv(&self.aggregate_id, out);
        out.push(',');
        out.push_str(&self.sequence.to_string());
        out.push(',');
        out.push_str(&self.event_type);
        out.push_str(",1.0,");
        csv(&self.payload.to_string(), out);
        out.push(',');
        csv(&self.metadata.to_string(), out);
        out.push(',');
        out.push_str(&self.at.to_rfc3339());
        out.push('\n');
    }
}

fn proposal_event(id: &str, sequence: i64, event: ProposalEvent, at: DateTime<Utc>) -> Row {
    use cqrs_es::DomainEvent;
    Row {
        aggregate_type: "Proposal",
        aggregate_id: id.to_string(),
        sequence,
        event_type: event.event_type(),
        payload: serde_json::to_value(&event).unwrap_or(Value::Null),
        metadata: json!({"actor": "executor"}),
        at,
    }
}

/// The log as a stream of rows, in order.
pub struct History {
    fixtures: Vec<(String, String, Value)>,
    start: DateTime<Utc>,
    signal: usize,
}

impl History {
    pub fn new() -> anyhow::Result<Self> {
        let mut fixtures = Vec::new();
        for (source, kind, file) in [
            (
                "stripe",
                "invoice.payment_failed",
                "stripe/invoice.payment_failed.json",
            ),
            ("stripe", "invoice.paid", "stripe/invoice.paid.json"),
            ("stripe", "charge.succeeded", "stripe/charge.succeeded.json"),
            ("stripe", "charge.failed", "stripe/charge.failed.json"),
            (
                "stripe",
                "customer.subscription.updated",
                "stripe/customer.subscription.updated.json",
            ),
            (
                "github",
                "workflow_run.completed",
                "github/workflow_run.completed.failure.json",
            ),
            (
                "github",
                "workflow_run.completed",
                "github/workflow_run.completed.success.json",
            ),
            (
                "intercom",
                "conversation.user.replied",
                "intercom/conversation.user.replied.json",
            ),
            (
                "hubspot",
                "deal.propertyChange",
                "hubspot/deal.propertyChange.json",
            ),
            ("bank", "expense.recorded", "std/bank/expense.recorded.json"),
            ("bank", "expense.recorded", "std/bank/expense.recorded.json"),
        ] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fixtures")
                .join(file);
            let payload: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
            fixtures.push((source.to_string(), kind.to_string(), payload));
        }
        Ok(Self {
            fixtures,
            start: DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default(),
            signal: 0,
        })
    }

    /// People and their tokens, and a few guardrail changes: the first rows.
    fn setup(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        for n in 0..10 {
            let email = format!("person{n}@example.com");
            rows.push(Row {
                aggregate_type: "User",
                aggregate_id: email.clone(),
                sequence: 1,
                event_type: "UserAdded".into(),
                payload: json!({"UserAdded": {"email": email, "role": "approver",
                    "password_hash": "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA", "by": "cli"}}),
                metadata: json!({}),
                at: self.start,
            });
            rows.push(Row {
                aggregate_type: "User",
                aggregate_id: email.clone(),
                sequence: 2,
                event_type: "TokenIssued".into(),
                payload: json!({"TokenIssued": {"token_id": format!("tok{n}"),
                    "token_hash": format!("{n:064}"), "by": "cli"}}),
                metadata: json!({}),
                at: self.start,
            });
        }
        for (sequence, kind) in [(1, "KillSwitchEngaged"), (2, "KillSwitchReleased")] {
            rows.push(Row {
                aggregate_type: "Guardrails",
                aggregate_id: "guardrails".into(),
                sequence,
                event_type: kind.into(),
                payload: json!({kind: {"scope": {"kind": "global"}, "actor": "person0@example.com", "reason": "drill"}}),
                metadata: json!({}),
                at: self.start,
            });
        }
        rows
    }

    /// The next signal and whatever it set off.
    fn next(&mut self) -> Vec<Row> {
        let i = self.signal;
        self.signal += 1;
        let at = self.start + Duration::seconds(20 * i as i64);
        let (source, kind, template) = &self.fixtures[i % self.fixtures.len()];
        let mut payload = template.clone();
        let external_id = format!("evt_{i:09}");
        if let Some(object) = payload.as_object_mut() {
            object.insert("id".into(), Value::String(external_id.clone()));
            object.insert("created".into(), json!(at.timestamp()));
        }
        let cycle = i / self.fixtures.len();
        if let Some(object) = payload.pointer_mut("/data/object") {
            // Each cycle of fixtures is another customer's invoice, charge, subscription:
            // an invoice that fails and is then paid, amounts that vary.
            if let Some(Value::String(id)) = object.get("id").cloned() {
                let prefix = id.split('_').next().unwrap_or("obj").to_string();
                object["id"] = json!(format!("{prefix}_{cycle:07}"));
            }
            for field in ["amount", "amount_due", "amount_paid"] {
                if let Some(amount) = object.get(field).and_then(Value::as_i64) {
                    object[field] = json!(amount * (1 + (cycle % 5) as i64));
                }
            }
        }
        if kind == "expense.recorded" {
            const VENDORS: [&str; 12] = [
                "Amazon Web Services",
                "Google Workspace",
                "Figma",
                "Linear",
                "Slack",
                "GitHub",
                "Notion",
                "Vercel",
                "Datadog",
                "Stripe Atlas",
                "Hetzner",
                "Zoom",
            ];
            if let Some(data) = payload.get_mut("data") {
                data["id"] = json!(format!("exp_{i:09}"));
                data["vendor"] = json!(VENDORS[cycle % VENDORS.len()]);
                data["amount"] = json!(10_000 + (cycle % 97) as i64 * 1_000);
                data["currency"] = json!(if cycle % 10 == 0 { "eur" } else { "usd" });
                data["date"] = json!(at.date_naive().to_string());
            }
        }
        let signal = Signal {
            source: source.clone(),
            kind: kind.clone(),
            external_id: external_id.clone(),
            occurred_at: at,
            payload,
        };
        let inbound = format!("{source}:{external_id}");
        let mut rows = vec![Row {
            aggregate_type: "Inbound",
            aggregate_id: inbound.clone(),
            sequence: 1,
            event_type: "Received".into(),
            payload: serde_json::to_value(InboundEvent::Received(signal)).unwrap_or(Value::Null),
            metadata: json!({"request_id": format!("req-{i}")}),
            at,
        }];
        if i % 6 != 0 {
            return rows;
        }
        let id = ProposalId::derive(&inbound, "bench.rule");
        let action = json!({"invoice": format!("in_{i:09}")});
        let hash = execops::domain::payload_hash(&action);
        let draft = ProposalDraft {
            id,
            title: format!("Retry collecting $120.00 on in_{i:09} now"),
            vertical: Vertical::Money,
            action_type: "stripe.retry_invoice".into(),
            action: action.clone(),
            reasoning: "Stripe has no retry scheduled for this invoice after 3 failed attempts. \
                Charging the card again now is the last automatic step before it is lost."
                .into(),
            drivers: vec![
                "because $120.00 of revenue is at risk".into(),
                "because it is due today".into(),
                "because it is one call to Stripe".into(),
            ],
            score: 60,
            urgency: Urgency::High,
            due_by: Some(at + Duration::hours(24)),
            owner: Some("#founders".into()),
            inbound_ids: vec![inbound.clone()],
            subject_key: format!("invoice:in_{i:09}"),
            requested_by: None,
            outcome_key: Some(format!("paid:in_{i:09}")),
            terms: Default::default(),
        };
        let pid = id.to_string();
        let mut sequence = 0;
        let mut push = |event: ProposalEvent, minutes: i64, rows: &mut Vec<Row>| {
            sequence += 1;
            rows.push(proposal_event(
                &pid,
                sequence,
                event,
                at + Duration::minutes(minutes),
            ));
        };
        push(
            ProposalEvent::Drafted {
                draft,
                payload_hash: hash.clone(),
            },
            0,
            &mut rows,
        );
        let n = i / 6;
        if n % 10 == 0 {
            push(
                ProposalEvent::Previewed {
                    actor: "person1@example.com".into(),
                    requests: json!([{"method": "POST", "url": "https://api.stripe.com/v1/invoices/x/pay"}]),
                    payload_hash: hash.clone(),
                },
                5,
                &mut rows,
            );
        }
        let decision = Decision {
            actor: "person1@example.com".into(),
            role: Role::Approver,
            comment: Some("go".into()),
            payload_hash: hash,
            identities: vec![],
            at: Some(chrono::Utc::now()),
        };
        match n % 10 {
            0..=6 => {
                push(ProposalEvent::Approved(decision), 12, &mut rows);
                push(
                    ProposalEvent::ExecutionStarted {
                        attempt: 1,
                        idempotency_key: format!("execops-{pid}"),
                    },
                    12,
                    &mut rows,
                );
                push(
                    ProposalEvent::ExecutionSucceeded {
                        attempt: 1,
                        result: json!({"invoice": format!("in_{i:09}"), "status": "paid", "amount_paid": 12000}),
                        at: Some(at),
                    },
                    12,
                    &mut rows,
                );
                if n % 10 < 2 {
                    push(
                        ProposalEvent::OutcomeRecorded {
                            kind: "recovered".into(),
                            summary: "recovered $120.00".into(),
                            value_cents: Some(12_000),
                        },
                        90,
                        &mut rows,
                    );
                }
            }
            7 | 8 => push(
                ProposalEvent::Rejected {
                    decision,
                    reason: "the customer is churning anyway".into(),
                },
                30,
                &mut rows,
            ),
            _ => {}
        }
        rows
    }
}

/// Writes `wanted` events; prints and returns how many, and how many signals.
pub async fn write(pool: &PgPool, wanted: usize, label: &str) -> anyhow::Result<(usize, usize)> {
    let started = Instant::now();
    let mut history = History::new()?;
    let mut written = 0_usize;
    let mut pending = history.setup();
    while written < wanted {
        while pending.len() < 20_000 && written + pending.len() < wanted {
            pending.extend(history.next());
        }
        let take = pending.len().min(wanted - written);
        let mut text = String::with_capacity(take * 1_500);
        for row in pending.drain(..take) {
            row.write(&mut text);
        }
        let mut conn = pool.acquire().await?;
        let mut copy = conn
            .copy_in_raw(
                "COPY events (aggregate_type, aggregate_id, sequence, event_type, \
                 event_version, payload, metadata, recorded_at) FROM STDIN WITH (FORMAT csv)",
            )
            .await?;
        copy.send(text.as_bytes()).await?;
        copy.finish().await?;
        written += take;
    }
    sqlx::query("ANALYZE events").execute(pool).await?;
    let size: String =
        sqlx::query_scalar("SELECT pg_size_pretty(pg_total_relation_size('events'))")
            .fetch_one(pool)
            .await?;
    println!(
        "bench-replay ({}): wrote {written} events ({} signals, {size}) in {:.1}s",
        label,
        history.signal,
        started.elapsed().as_secs_f64()
    );

    Ok((written, history.signal))
}
