//! The canvas facts: money through Stripe, cash balances, failed invoices, subscriptions and
//! their MRR movements, the spend feed, and each proposal's draft, decision, executions and
//! outcomes, for the canvas queries ([`crate::canvas::queries`]).
//!
//! A batch is folded in memory: the rows it touches are read with one query per stateful
//! table and every table is written with one statement, so a replay costs a dozen
//! statements a batch at most, whatever its size. Every value comes from the events (a
//! signal's `occurred_at`, an event's `recorded_at`), never from the clock.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;
use sqlx::PgConnection;

use crate::store::log::{LogPosition, Slim, StoredEvent};
use crate::store::subscription::{HandlerError, Subscriber};

#[derive(Debug, Default)]
pub struct Canvas;

/// The tables this projection owns, for `execops replay`: the facts, then [`DAILY_TABLES`].
pub const TABLES: &[&str] = &[
    "canvas_money",
    "canvas_balances",
    "canvas_failed_invoices",
    "canvas_subscriptions",
    "canvas_mrr_movements",
    "canvas_expenses",
    "canvas_proposals",
    "canvas_executions",
    "canvas_outcomes",
    "canvas_daily_flows",
    "canvas_daily_mrr",
    "canvas_daily_vendor_spend",
    "canvas_daily_decisions",
    "canvas_daily_outcomes",
    "canvas_daily_executions",
];

/// The daily sums, kept beside the facts: the last of [`TABLES`].
pub const DAILY_TABLES: &[&str] = TABLES.split_at(9).1;

#[derive(Clone, Debug)]
struct Money {
    inbound_id: String,
    kind: &'static str,
    object_id: String,
    customer: Option<String>,
    invoice_id: Option<String>,
    amount: i64,
    currency: String,
    occurred_at: DateTime<Utc>,
}

#[derive(Clone, Debug)]
struct Balance {
    inbound_id: String,
    currency: String,
    source: String,
    amount: i64,
    occurred_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
struct FailedInvoice {
    invoice_id: String,
    customer: Option<String>,
    amount: i64,
    currency: String,
    first_failed_at: DateTime<Utc>,
    failures: i32,
    paid_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
struct Subscription {
    subscription_id: String,
    customer: Option<String>,
    currency: String,
    status: String,
    mrr: i64,
    as_of: DateTime<Utc>,
}

#[derive(Clone, Debug)]
struct Movement {
    inbound_id: String,
    subscription_id: String,
    currency: String,
    mrr_before: i64,
    mrr_after: i64,
    occurred_at: DateTime<Utc>,
}

#[derive(Clone, Debug)]
struct Expense {
    source: String,
    expense_id: String,
    vendor: String,
    category: Option<String>,
    amount: i64,
    currency: String,
    spent_on: NaiveDate,
    inbound_id: String,
}

#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
struct ProposalFact {
    proposal_id: String,
    action_type: String,
    inbound_ids: Vec<String>,
    drafted_at: DateTime<Utc>,
    decided_at: Option<DateTime<Utc>>,
    decision: Option<String>,
}

#[derive(Clone, Debug)]
struct Execution {
    proposal_id: String,
    attempt: i32,
    action_type: String,
    result: &'static str,
    at: DateTime<Utc>,
}

#[derive(Clone, Debug)]
struct Outcome {
    proposal_id: String,
    sequence: i64,
    action_type: String,
    kind: String,
    value_cents: Option<i64>,
    caused_by: Option<String>,
    at: DateTime<Utc>,
}

fn text(value: &Value, pointer: &str) -> Option<String> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn currency(value: &Value, pointer: &str) -> Option<String> {
    text(value, pointer)
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty())
}

/// A subscription item's recurring price as minor units a month: `unit_amount × quantity`,
/// scaled from its interval (a year is 12 months, a week 52/12 of one, a day 365/12 of
/// one), rounded down.
fn monthly(item: &Value) -> i64 {
    let unit = item
        .pointer("/price/unit_amount")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let quantity = item.get("quantity").and_then(Value::as_i64).unwrap_or(1);
    let count = item
        .pointer("/price/recurring/interval_count")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .max(1);
    let amount = unit.saturating_mul(quantity);
    match item
        .pointer("/price/recurring/interval")
        .and_then(Value::as_str)
    {
        Some("year") => amount / (12 * count),
        Some("week") => amount.saturating_mul(52) / (12 * count),
        Some("day") => amount.saturating_mul(365) / (12 * count),
        _ => amount / count,
    }
}

/// MRR of a subscription object: the sum of its items while it is `active` or `past_due`
/// (still billed), nothing otherwise (trialing, canceled, unpaid, incomplete).
fn subscription_mrr(object: &Value, deleted: bool) -> i64 {
    let status = object.get("status").and_then(Value::as_str).unwrap_or("");
    if deleted || !matches!(status, "active" | "past_due") {
        return 0;
    }
    object
        .pointer("/items/data")
        .and_then(Value::as_array)
        .map(|items| items.iter().map(monthly).sum())
        .unwrap_or(0)
}

/// Everything a batch will write, folded in log order.
#[derive(Debug, Default)]
struct Fold {
    money: Vec<Money>,
    balances: BTreeMap<(String, String), Balance>,
    invoices: HashMap<String, Option<FailedInvoice>>,
    invoices_before: HashMap<String, FailedInvoice>,
    subscriptions: HashMap<String, Option<Subscription>>,
    subscriptions_before: HashMap<String, Subscription>,
    movements: Vec<Movement>,
    expenses: BTreeMap<(String, String), Expense>,
    proposals: HashMap<String, Option<ProposalFact>>,
    proposals_before: HashMap<String, ProposalFact>,
    executions: BTreeMap<(String, i32), Execution>,
    outcomes: Vec<Outcome>,
    /// Proposals whose uncertain attempt a person marked done: it happened after all.
    marked_done: Vec<String>,
}

/// Every key [`Fold::signal`] and [`touched`] read from a delivery, at any depth: the rest
/// is skipped when a delivery is decoded (see [`Slim`]). A key read but missing here reads
/// as absent; the test `canvas_facts_from_slim_deliveries_equal_those_from_whole_ones` folds
/// every fixture both ways.
const SIGNAL_KEYS: &[&str] = &[
    // The `Received` event.
    "Received",
    "source",
    "kind",
    "occurred_at",
    "payload",
    // Stripe: `data.object`, balances, subscription items and prices.
    "data",
    "object",
    "id",
    "customer",
    "invoice",
    "amount",
    "amount_paid",
    "amount_due",
    "amount_refunded",
    "currency",
    "available",
    "status",
    "items",
    "quantity",
    "price",
    "unit_amount",
    "recurring",
    "interval",
    "interval_count",
    // The spend and bank feeds.
    "vendor",
    "category",
    "date",
];

/// Every key [`Step::of`] reads from a proposal's event, at any depth.
const STEP_KEYS: &[&str] = &[
    "Drafted",
    "action_type",
    "inbound_ids",
    "Approved",
    "Rejected",
    "ExecutionSucceeded",
    "ExecutionFailed",
    "ExecutionUncertain",
    "attempt",
    "MarkedDone",
    "OutcomeRecorded",
    "kind",
    "value_cents",
];

/// What the canvas takes from a proposal's event; the other kinds change nothing here.
#[derive(Debug, PartialEq)]
enum Step {
    Drafted {
        action_type: String,
        inbound_ids: Vec<String>,
    },
    Decided(&'static str),
    Attempt(u32, &'static str),
    MarkedDone,
    Outcome {
        kind: String,
        value_cents: Option<i64>,
    },
    Other,
}

impl Step {
    /// From the event's type and its payload (`{"Drafted": {...}}`); an event that lacks
    /// a field its kind must carry is an error, as it would be for the aggregate.
    fn of(event_type: &str, payload: &Value) -> Result<Step, String> {
        let body = payload.get(event_type);
        let missing = |field: &str| format!("a {event_type} event without its {field}");
        let attempt = || {
            body.and_then(|b| b.get("attempt"))
                .and_then(Value::as_u64)
                .and_then(|a| u32::try_from(a).ok())
                .ok_or_else(|| missing("attempt"))
        };
        Ok(match event_type {
            "Drafted" => Step::Drafted {
                action_type: body
                    .and_then(|b| b.get("action_type"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| missing("action_type"))?
                    .to_string(),
                inbound_ids: body
                    .and_then(|b| b.get("inbound_ids"))
                    .and_then(Value::as_array)
                    .ok_or_else(|| missing("inbound_ids"))?
                    .iter()
                    .map(|id| id.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| missing("inbound_ids"))?,
            },
            "Approved" => Step::Decided("approved"),
            "Rejected" => Step::Decided("rejected"),
            "ExecutionSucceeded" => Step::Attempt(attempt()?, "succeeded"),
            "ExecutionFailed" => Step::Attempt(attempt()?, "failed"),
            "ExecutionUncertain" => Step::Attempt(attempt()?, "uncertain"),
            "MarkedDone" => Step::MarkedDone,
            "OutcomeRecorded" => Step::Outcome {
                kind: body
                    .and_then(|b| b.get("kind"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| missing("kind"))?
                    .to_string(),
                value_cents: body
                    .and_then(|b| b.get("value_cents"))
                    .and_then(Value::as_i64),
            },
            _ => Step::Other,
        })
    }
}

/// A `Received` event's fields, borrowed from its payload: building a `Signal` would copy
/// the whole delivery, and a rebuild reads every one of them.
struct SignalView<'a> {
    source: &'a str,
    kind: &'a str,
    occurred_at: DateTime<Utc>,
    payload: &'a Value,
}

impl<'a> SignalView<'a> {
    fn of(event: &'a Value) -> Option<Self> {
        let body = event.get("Received")?;
        Some(Self {
            source: body.get("source")?.as_str()?,
            kind: body.get("kind")?.as_str()?,
            occurred_at: DateTime::parse_from_rfc3339(body.get("occurred_at")?.as_str()?)
                .ok()?
                .with_timezone(&Utc),
            payload: body.get("payload")?,
        })
    }
}

impl Fold {
    fn signal(&mut self, inbound_id: &str, signal: &SignalView<'_>) {
        let object = signal
            .payload
            .pointer("/data/object")
            .unwrap_or(&Value::Null);
        let at = signal.occurred_at;
        let money = |kind: &'static str, amount_field: &str| -> Option<Money> {
            Some(Money {
                inbound_id: inbound_id.to_string(),
                kind,
                object_id: text(object, "/id")?,
                customer: text(object, "/customer"),
                invoice_id: text(object, "/invoice"),
                amount: object.get(amount_field).and_then(Value::as_i64)?,
                currency: currency(object, "/currency")?,
                occurred_at: at,
            })
        };
        match (signal.source, signal.kind) {
            ("stripe", "charge.succeeded") => {
                self.money.extend(money("charge_succeeded", "amount"))
            }
            ("stripe", "charge.failed") => self.money.extend(money("charge_failed", "amount")),
            ("stripe", "charge.refunded") => self
                .money
                .extend(money("charge_refunded", "amount_refunded")),
            ("stripe", "payout.paid") => self.money.extend(money("payout_paid", "amount")),
            ("stripe", "payout.failed") => self.money.extend(money("payout_failed", "amount")),
            ("stripe", "invoice.paid") => {
                let Some(paid) = money("invoice_paid", "amount_paid") else {
                    return;
                };
                if let Some(Some(invoice)) = self.invoices.get_mut(&paid.object_id) {
                    if invoice.paid_at.is_none() && paid.occurred_at >= invoice.first_failed_at {
                        invoice.paid_at = Some(paid.occurred_at);
                    }
                }
                self.money.push(paid);
            }
            ("stripe", "invoice.payment_failed") => {
                let Some(failed) = money("invoice_failed", "amount_due") else {
                    return;
                };
                let slot = self.invoices.entry(failed.object_id.clone()).or_default();
                match slot {
                    Some(invoice) => {
                        invoice.failures += 1;
                        invoice.first_failed_at = invoice.first_failed_at.min(failed.occurred_at);
                        invoice.amount = failed.amount;
                    }
                    None => {
                        *slot = Some(FailedInvoice {
                            invoice_id: failed.object_id.clone(),
                            customer: failed.customer.clone(),
                            amount: failed.amount,
                            currency: failed.currency.clone(),
                            first_failed_at: failed.occurred_at,
                            failures: 1,
                            paid_at: None,
                        })
                    }
                }
                self.money.push(failed);
            }
            ("stripe", "balance.available") => {
                for entry in object
                    .get("available")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let (Some(amount), Some(currency)) = (
                        entry.get("amount").and_then(Value::as_i64),
                        currency(entry, "/currency"),
                    ) else {
                        continue;
                    };
                    // Stripe lists a currency once; if it did not, the last one stands.
                    self.balances.insert(
                        (inbound_id.to_string(), currency.clone()),
                        Balance {
                            inbound_id: inbound_id.to_string(),
                            currency,
                            source: "stripe".into(),
                            amount,
                            occurred_at: at,
                        },
                    );
                }
            }
            (
                "stripe",
                kind @ ("customer.subscription.created"
                | "customer.subscription.updated"
                | "customer.subscription.deleted"),
            ) => {
                let Some(id) = text(object, "/id") else {
                    return;
                };
                let Some(currency) = currency(object, "/currency")
                    .or_else(|| currency(object, "/items/data/0/price/currency"))
                else {
                    return;
                };
                let deleted = kind == "customer.subscription.deleted";
                let after = subscription_mrr(object, deleted);
                let slot = self.subscriptions.entry(id.clone()).or_default();
                // A report older than the one already kept changes nothing.
                if slot.as_ref().is_some_and(|s| s.as_of > at) {
                    return;
                }
                let before = slot.as_ref().map(|s| s.mrr).unwrap_or(0);
                *slot = Some(Subscription {
                    subscription_id: id.clone(),
                    customer: text(object, "/customer"),
                    currency: currency.clone(),
                    status: if deleted {
                        "canceled".into()
                    } else {
                        text(object, "/status").unwrap_or_default()
                    },
                    mrr: after,
                    as_of: at,
                });
                if before != after {
                    self.movements.push(Movement {
                        inbound_id: inbound_id.to_string(),
                        subscription_id: id,
                        currency,
                        mrr_before: before,
                        mrr_after: after,
                        occurred_at: at,
                    });
                }
            }
            (source, "balance.updated") => {
                let data = signal.payload.get("data").unwrap_or(&Value::Null);
                let (Some(amount), Some(currency)) = (
                    data.get("amount").and_then(Value::as_i64),
                    currency(data, "/currency"),
                ) else {
                    return;
                };
                self.balances.insert(
                    (inbound_id.to_string(), currency.clone()),
                    Balance {
                        inbound_id: inbound_id.to_string(),
                        currency,
                        source: source.to_string(),
                        amount,
                        occurred_at: at,
                    },
                );
            }
            (source, "expense.recorded") => {
                let data = signal.payload.get("data").unwrap_or(&Value::Null);
                let (Some(vendor), Some(amount), Some(currency)) = (
                    text(data, "/vendor")
                        .map(|v| v.trim().to_string())
                        .filter(|v| !v.is_empty()),
                    data.get("amount").and_then(Value::as_i64),
                    currency(data, "/currency"),
                ) else {
                    return;
                };
                let expense_id = text(data, "/id").unwrap_or_else(|| inbound_id.to_string());
                let spent_on = text(data, "/date")
                    .and_then(|d| NaiveDate::parse_from_str(&d, "%Y-%m-%d").ok())
                    .unwrap_or_else(|| at.date_naive());
                self.expenses.insert(
                    (source.to_string(), expense_id.clone()),
                    Expense {
                        source: source.to_string(),
                        expense_id,
                        vendor,
                        category: text(data, "/category"),
                        amount,
                        currency,
                        spent_on,
                        inbound_id: inbound_id.to_string(),
                    },
                );
            }
            _ => {}
        }
    }

    fn proposal(&mut self, event: &StoredEvent, step: Step) {
        let id = event.aggregate_id.as_str();
        let at = event.recorded_at;
        let slot = self.proposals.entry(id.to_string()).or_default();
        if let Step::Drafted {
            action_type,
            inbound_ids,
        } = step
        {
            if slot.is_none() {
                *slot = Some(ProposalFact {
                    proposal_id: id.to_string(),
                    action_type,
                    inbound_ids,
                    drafted_at: at,
                    decided_at: None,
                    decision: None,
                });
            }
            return;
        }
        // Suppressed drafts were never shown to anyone: nothing to measure.
        let Some(fact) = slot.as_mut() else { return };
        match step {
            Step::Decided(decision) if fact.decided_at.is_none() => {
                fact.decided_at = Some(at);
                fact.decision = Some(decision.into());
            }
            Step::Attempt(attempt, result) => {
                let attempt = i32::try_from(attempt).unwrap_or(i32::MAX);
                self.executions.insert(
                    (id.to_string(), attempt),
                    Execution {
                        proposal_id: id.to_string(),
                        attempt,
                        action_type: fact.action_type.clone(),
                        result,
                        at,
                    },
                );
            }
            Step::MarkedDone => self.marked_done.push(id.to_string()),
            Step::Outcome { kind, value_cents } => self.outcomes.push(Outcome {
                proposal_id: id.to_string(),
                sequence: event.sequence,
                action_type: fact.action_type.clone(),
                kind,
                value_cents,
                caused_by: event
                    .metadata
                    .get("caused_by")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                at,
            }),
            _ => {}
        }
    }
}

/// The rows of a stateful table already kept for `ids` (`sql` binds them as `$1`), by key:
/// as they were, and as the fold starts from.
async fn kept<T>(
    conn: &mut PgConnection,
    sql: &'static str,
    ids: &[String],
    key: fn(&T) -> &String,
) -> Result<(HashMap<String, T>, HashMap<String, Option<T>>), sqlx::Error>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Clone + Send + Unpin,
{
    if ids.is_empty() {
        return Ok(Default::default());
    }
    let rows: Vec<T> = sqlx::query_as(sql).bind(ids).fetch_all(&mut *conn).await?;
    let before: HashMap<String, T> = rows.into_iter().map(|r| (key(&r).clone(), r)).collect();
    let now = before
        .iter()
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    Ok((before, now))
}

/// Which object ids a batch touches in the stateful tables, read before folding.
fn touched(events: &[StoredEvent]) -> (Vec<String>, Vec<String>, Vec<String>) {
    let (mut invoices, mut subscriptions, mut proposals) = (vec![], vec![], vec![]);
    for event in events {
        match event.aggregate_type.as_str() {
            "Proposal" => proposals.push(event.aggregate_id.clone()),
            "Inbound" => {
                let body = event.payload.get("Received");
                let kind = body.and_then(|b| b.get("kind")).and_then(Value::as_str);
                let object = body.and_then(|b| text(b, "/payload/data/object/id"));
                match (kind, object) {
                    (Some("invoice.paid" | "invoice.payment_failed"), Some(id)) => {
                        invoices.push(id)
                    }
                    (Some(k), Some(id)) if k.starts_with("customer.subscription.") => {
                        subscriptions.push(id)
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    for ids in [&mut invoices, &mut subscriptions, &mut proposals] {
        ids.sort_unstable();
        ids.dedup();
    }
    (invoices, subscriptions, proposals)
}

impl Subscriber for Canvas {
    fn name(&self) -> &str {
        "canvas"
    }

    fn payload_types(&self) -> Option<&'static [&'static str]> {
        Some(&["Inbound", "Proposal"])
    }

    fn ignores_other_types(&self) -> bool {
        true
    }

    /// A delivery is read for a few fields, a Stripe event being kilobytes of others; a
    /// proposal's events for fewer still.
    fn slim(&self) -> &'static [Slim] {
        &[
            Slim {
                aggregate_type: "Inbound",
                keys: SIGNAL_KEYS,
            },
            Slim {
                aggregate_type: "Proposal",
                keys: STEP_KEYS,
            },
        ]
    }

    /// Code hosts, chat, support and CRM send no money.
    fn ignores_sources(&self) -> &'static [&'static str] {
        &["github", "slack", "intercom", "hubspot"]
    }

    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), HandlerError> {
        self.handle_batch(conn, std::slice::from_ref(event))
            .await
            .map_err(|(_, error)| error)
    }

    #[tracing::instrument(skip_all, fields(events = events.len()))]
    async fn handle_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), (LogPosition, HandlerError)> {
        let Some(last) = events.last().map(|e| e.log) else {
            return Ok(());
        };
        let failed = |e: sqlx::Error| (last, HandlerError::from(e));
        let (invoices, subscriptions, proposals) = touched(events);
        let mut fold = Fold::default();
        (fold.invoices_before, fold.invoices) = kept(
            conn,
            "SELECT invoice_id, customer, amount, currency, first_failed_at, failures, paid_at \
             FROM canvas_failed_invoices WHERE invoice_id IN (SELECT unnest($1::text[]))",
            &invoices,
            |r: &FailedInvoice| &r.invoice_id,
        )
        .await
        .map_err(failed)?;
        (fold.subscriptions_before, fold.subscriptions) = kept(
            conn,
            "SELECT subscription_id, customer, currency, status, mrr, as_of \
             FROM canvas_subscriptions WHERE subscription_id IN (SELECT unnest($1::text[]))",
            &subscriptions,
            |r: &Subscription| &r.subscription_id,
        )
        .await
        .map_err(failed)?;
        (fold.proposals_before, fold.proposals) = kept(
            conn,
            "SELECT proposal_id, action_type, inbound_ids, drafted_at, decided_at, decision \
             FROM canvas_proposals WHERE proposal_id IN (SELECT unnest($1::text[]))",
            &proposals,
            |r: &ProposalFact| &r.proposal_id,
        )
        .await
        .map_err(failed)?;
        for event in events {
            match event.aggregate_type.as_str() {
                // A rebuild may read them without their payload.
                "Inbound" if self.ignores_sources().contains(&event.source()) => {}
                "Inbound" => {
                    let signal = SignalView::of(&event.payload).ok_or_else(|| {
                        (
                            event.log,
                            HandlerError::from("a Received event without its signal"),
                        )
                    })?;
                    fold.signal(&event.aggregate_id, &signal);
                }
                "Proposal" => {
                    let step = Step::of(&event.event_type, &event.payload)
                        .map_err(|e| (event.log, e.into()))?;
                    fold.proposal(event, step);
                }
                _ => {}
            }
        }
        let (mut days, existing) = days_touched(conn, &fold).await.map_err(failed)?;
        let inserted = write(conn, &fold).await.map_err(failed)?;
        let sums = Sums::of(&fold, &existing, &inserted);
        sums.add(conn, &inserted.outcomes).await.map_err(failed)?;
        if !fold.marked_done.is_empty() {
            let done: Vec<(DateTime<Utc>,)> = sqlx::query_as(
                "UPDATE canvas_executions e SET result = 'succeeded' \
                 WHERE e.proposal_id = ANY($1) AND e.result = 'uncertain' \
                   AND e.attempt = (SELECT max(attempt) FROM canvas_executions l \
                                    WHERE l.proposal_id = e.proposal_id) \
                 RETURNING e.at",
            )
            .bind(&fold.marked_done)
            .fetch_all(&mut *conn)
            .await
            .map_err(failed)?;
            days.executions
                .extend(done.into_iter().map(|(at,)| at.date_naive()));
        }
        sum_days(conn, days).await.map_err(failed)
    }
}

/// The days whose daily sums a batch changes, per daily table.
#[derive(Debug, Default)]
struct Days {
    flows: BTreeSet<NaiveDate>,
    mrr: BTreeSet<NaiveDate>,
    vendors: BTreeSet<NaiveDate>,
    decisions: BTreeSet<NaiveDate>,
    outcomes: BTreeSet<NaiveDate>,
    executions: BTreeSet<NaiveDate>,
    /// Charges whose earlier refund reports this batch supersedes: their days are found once
    /// the batch's reports are written.
    refunded: Vec<String>,
}

/// Expenses and attempts of a batch that replace a row already kept.
#[derive(Debug, Default)]
struct Existing {
    expenses: HashSet<(String, String)>,
    executions: HashSet<(String, i32)>,
}

/// The days to sum again from the facts: those where a fact is replaced rather than added (a
/// corrected expense, a later result for an attempt, a refund report that supersedes an
/// earlier one), with the days of the rows replaced, read before writing. A new fact adds
/// itself to its day instead ([`Sums`]).
async fn days_touched(
    conn: &mut PgConnection,
    fold: &Fold,
) -> Result<(Days, Existing), sqlx::Error> {
    let mut days = Days::default();
    let mut existing = Existing::default();
    for m in &fold.money {
        if m.kind == "charge_refunded" {
            days.flows.insert(m.occurred_at.date_naive());
            days.refunded.push(m.object_id.clone());
        }
    }
    if !fold.expenses.is_empty() {
        let (sources, ids): (Vec<&str>, Vec<&str>) = fold
            .expenses
            .keys()
            .map(|(s, id)| (s.as_str(), id.as_str()))
            .unzip();
        let before: Vec<(String, String, NaiveDate)> = sqlx::query_as(
            "SELECT e.source, e.expense_id, e.spent_on \
             FROM unnest($1::text[], $2::text[]) AS k(source, expense_id) \
             JOIN canvas_expenses e USING (source, expense_id)",
        )
        .bind(sources)
        .bind(ids)
        .fetch_all(&mut *conn)
        .await?;
        for (source, expense_id, day) in before {
            days.flows.insert(day);
            days.vendors.insert(day);
            if let Some(e) = fold.expenses.get(&(source.clone(), expense_id.clone())) {
                days.flows.insert(e.spent_on);
                days.vendors.insert(e.spent_on);
            }
            existing.expenses.insert((source, expense_id));
        }
    }
    // A decision is final (`Fold::proposal` keeps the first), so no decided day moves.
    if !fold.executions.is_empty() {
        let (ids, attempts): (Vec<&str>, Vec<i32>) = fold
            .executions
            .keys()
            .map(|(id, attempt)| (id.as_str(), *attempt))
            .unzip();
        let before: Vec<(String, i32, DateTime<Utc>)> = sqlx::query_as(
            "SELECT e.proposal_id, e.attempt, e.at \
             FROM unnest($1::text[], $2::int[]) AS k(proposal_id, attempt) \
             JOIN canvas_executions e USING (proposal_id, attempt)",
        )
        .bind(ids)
        .bind(attempts)
        .fetch_all(&mut *conn)
        .await?;
        for (id, attempt, at) in before {
            days.executions.insert(at.date_naive());
            if let Some(e) = fold.executions.get(&(id.clone(), attempt)) {
                days.executions.insert(e.at.date_naive());
            }
            existing.executions.insert((id, attempt));
        }
    }
    Ok((days, existing))
}

/// A map's keys and values, in key order, side by side.
fn split<K, V>(map: &BTreeMap<K, V>) -> (Vec<&K>, Vec<&V>) {
    map.iter().unzip()
}

/// What a batch's new facts add to the daily sums, by day.
#[derive(Debug, Default, PartialEq)]
struct Sums {
    /// (day, currency) → spend, revenue.
    flows: BTreeMap<(NaiveDate, String), (i64, i64)>,
    /// (day, currency) → net, new, expansion, contraction, churn.
    mrr: BTreeMap<(NaiveDate, String), [i64; 5]>,
    /// (day, currency, vendor as spelled) → amount. Spellings are folded into one vendor
    /// in SQL, by the same `lower` and `min` as a day summed again and the queries use.
    vendors: BTreeMap<(NaiveDate, String, String), i64>,
    /// (day, action type, seconds to decide) → approved, rejected.
    decisions: BTreeMap<(NaiveDate, String, i64), (i32, i32)>,
    /// (day, adapter) → succeeded, failed, uncertain.
    executions: BTreeMap<(NaiveDate, String), [i32; 3]>,
}

impl Sums {
    /// The batch's facts that are new: a fact that replaces one already kept has its days
    /// summed again instead ([`days_touched`]).
    fn of(fold: &Fold, existing: &Existing, inserted: &Inserted) -> Self {
        let mut sums = Sums::default();
        for m in &fold.money {
            let revenue = m.kind == "invoice_paid"
                || (m.kind == "charge_succeeded" && m.invoice_id.is_none());
            if revenue && inserted.money.contains(&m.inbound_id) {
                let day = m.occurred_at.date_naive();
                sums.flows.entry((day, m.currency.clone())).or_default().1 += m.amount;
            }
        }
        for (key, e) in &fold.expenses {
            if existing.expenses.contains(key) {
                continue;
            }
            sums.flows
                .entry((e.spent_on, e.currency.clone()))
                .or_default()
                .0 += e.amount;
            *sums
                .vendors
                .entry((e.spent_on, e.currency.clone(), e.vendor.clone()))
                .or_default() += e.amount;
        }
        for m in &fold.movements {
            if !inserted.movements.contains(&m.inbound_id) {
                continue;
            }
            let (before, after) = (m.mrr_before, m.mrr_after);
            let v = sums
                .mrr
                .entry((m.occurred_at.date_naive(), m.currency.clone()))
                .or_default();
            v[0] += after - before;
            if before == 0 {
                v[1] += after;
            } else if after > before {
                v[2] += after - before;
            }
            if after > 0 && after < before {
                v[3] += before - after;
            }
            if after == 0 {
                v[4] += before;
            }
        }
        // A proposal changed by the batch and decided was decided in it: decisions are final.
        for p in changed(&fold.proposals, &fold.proposals_before) {
            let Some(at) = p.decided_at else {
                continue;
            };
            let seconds = (at - p.drafted_at)
                .num_microseconds()
                .map(|us| us.div_euclid(1_000_000))
                .unwrap_or_else(|| (at - p.drafted_at).num_seconds());
            let d = sums
                .decisions
                .entry((at.date_naive(), p.action_type.clone(), seconds))
                .or_default();
            match p.decision.as_deref() {
                Some("approved") => d.0 += 1,
                Some("rejected") => d.1 += 1,
                _ => {}
            }
        }
        for (key, e) in &fold.executions {
            if existing.executions.contains(key) {
                continue;
            }
            let adapter = e.action_type.split('.').next().unwrap_or_default();
            let counts = sums
                .executions
                .entry((e.at.date_naive(), adapter.to_string()))
                .or_default();
            match e.result {
                "succeeded" => counts[0] += 1,
                "failed" => counts[1] += 1,
                _ => counts[2] += 1,
            }
        }
        sums
    }

    /// Adds the sums to their days, and the outcomes `outcomes` (proposal, sequence) just
    /// inserted, whose currency is looked up as the query defines it.
    async fn add(
        &self,
        conn: &mut PgConnection,
        outcomes: &[(String, i64)],
    ) -> Result<(), sqlx::Error> {
        if !self.flows.is_empty() {
            let (keys, values) = split(&self.flows);
            sqlx::query(
                "INSERT INTO canvas_daily_flows AS t (day, currency, spend, revenue, refunds) \
                 SELECT d, c, s, r, 0 FROM unnest($1::date[], $2::text[], $3::bigint[], \
                   $4::bigint[]) AS u(d, c, s, r) \
                 ON CONFLICT (day, currency) DO UPDATE \
                 SET spend = t.spend + excluded.spend, revenue = t.revenue + excluded.revenue",
            )
            .bind(keys.iter().map(|k| k.0).collect::<Vec<_>>())
            .bind(keys.iter().map(|k| k.1.as_str()).collect::<Vec<_>>())
            .bind(values.iter().map(|v| v.0).collect::<Vec<_>>())
            .bind(values.iter().map(|v| v.1).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        if !self.mrr.is_empty() {
            let (keys, values) = split(&self.mrr);
            let column = |i: usize| values.iter().map(|v| v[i]).collect::<Vec<_>>();
            sqlx::query(
                "INSERT INTO canvas_daily_mrr AS t (day, currency, net, new, expansion, \
                   contraction, churn) \
                 SELECT * FROM unnest($1::date[], $2::text[], $3::bigint[], $4::bigint[], \
                   $5::bigint[], $6::bigint[], $7::bigint[]) \
                 ON CONFLICT (day, currency) DO UPDATE \
                 SET net = t.net + excluded.net, new = t.new + excluded.new, \
                   expansion = t.expansion + excluded.expansion, \
                   contraction = t.contraction + excluded.contraction, \
                   churn = t.churn + excluded.churn",
            )
            .bind(keys.iter().map(|k| k.0).collect::<Vec<_>>())
            .bind(keys.iter().map(|k| k.1.as_str()).collect::<Vec<_>>())
            .bind(column(0))
            .bind(column(1))
            .bind(column(2))
            .bind(column(3))
            .bind(column(4))
            .execute(&mut *conn)
            .await?;
        }
        if !self.vendors.is_empty() {
            let (keys, values) = split(&self.vendors);
            sqlx::query(
                "INSERT INTO canvas_daily_vendor_spend AS t (day, currency, vendor_key, vendor, \
                   amount) \
                 SELECT d, c, lower(v), min(v), sum(a)::bigint \
                 FROM unnest($1::date[], $2::text[], $3::text[], $4::bigint[]) AS u(d, c, v, a) \
                 GROUP BY d, c, lower(v) \
                 ON CONFLICT (day, currency, vendor_key) DO UPDATE \
                 SET vendor = least(t.vendor, excluded.vendor), \
                   amount = t.amount + excluded.amount",
            )
            .bind(keys.iter().map(|k| k.0).collect::<Vec<_>>())
            .bind(keys.iter().map(|k| k.1.as_str()).collect::<Vec<_>>())
            .bind(keys.iter().map(|k| k.2.as_str()).collect::<Vec<_>>())
            .bind(values)
            .execute(&mut *conn)
            .await?;
        }
        if !self.decisions.is_empty() {
            let (keys, values) = split(&self.decisions);
            sqlx::query(
                "INSERT INTO canvas_daily_decisions AS t (day, action_type, seconds, approved, \
                   rejected) \
                 SELECT * FROM unnest($1::date[], $2::text[], $3::bigint[], $4::int[], \
                   $5::int[]) \
                 ON CONFLICT (day, action_type, seconds) DO UPDATE \
                 SET approved = t.approved + excluded.approved, \
                   rejected = t.rejected + excluded.rejected",
            )
            .bind(keys.iter().map(|k| k.0).collect::<Vec<_>>())
            .bind(keys.iter().map(|k| k.1.as_str()).collect::<Vec<_>>())
            .bind(keys.iter().map(|k| k.2).collect::<Vec<_>>())
            .bind(values.iter().map(|v| v.0).collect::<Vec<_>>())
            .bind(values.iter().map(|v| v.1).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        if !self.executions.is_empty() {
            let (keys, values) = split(&self.executions);
            let column = |i: usize| values.iter().map(|v| v[i]).collect::<Vec<_>>();
            sqlx::query(
                "INSERT INTO canvas_daily_executions AS t (day, adapter, succeeded, failed, \
                   uncertain) \
                 SELECT * FROM unnest($1::date[], $2::text[], $3::int[], $4::int[], $5::int[]) \
                 ON CONFLICT (day, adapter) DO UPDATE \
                 SET succeeded = t.succeeded + excluded.succeeded, \
                   failed = t.failed + excluded.failed, uncertain = t.uncertain + excluded.uncertain",
            )
            .bind(keys.iter().map(|k| k.0).collect::<Vec<_>>())
            .bind(keys.iter().map(|k| k.1.as_str()).collect::<Vec<_>>())
            .bind(column(0))
            .bind(column(1))
            .bind(column(2))
            .execute(&mut *conn)
            .await?;
        }
        if !outcomes.is_empty() {
            let (ids, sequences): (Vec<&str>, Vec<i64>) =
                outcomes.iter().map(|(id, n)| (id.as_str(), *n)).unzip();
            sqlx::query(
                "INSERT INTO canvas_daily_outcomes AS t (day, action_type, kind, currency, \
                   outcomes, value) \
                 SELECT day, action_type, kind, coalesce(currency, ''), count(*), \
                   sum(value_cents)::bigint \
                 FROM (SELECT (o.at AT TIME ZONE 'UTC')::date AS day, o.action_type, o.kind, \
                   o.value_cents, coalesce( \
                   (SELECT m.currency FROM canvas_money m WHERE m.inbound_id = o.caused_by), \
                   (SELECT m.currency FROM canvas_proposals p \
                      CROSS JOIN LATERAL unnest(p.inbound_ids) AS i(id) \
                      JOIN canvas_money m ON m.inbound_id = i.id \
                    WHERE p.proposal_id = o.proposal_id \
                    ORDER BY m.occurred_at, m.inbound_id LIMIT 1)) AS currency \
                   FROM unnest($1::text[], $2::bigint[]) AS k(proposal_id, sequence) \
                   JOIN canvas_outcomes o USING (proposal_id, sequence)) o \
                 GROUP BY 1, 2, 3, 4 \
                 ON CONFLICT (day, action_type, kind, currency) DO UPDATE \
                 SET outcomes = t.outcomes + excluded.outcomes, \
                   value = CASE WHEN t.value IS NULL THEN excluded.value \
                                WHEN excluded.value IS NULL THEN t.value \
                                ELSE t.value + excluded.value END",
            )
            .bind(ids)
            .bind(sequences)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

/// Sums every day again from the facts alone: what the daily sums kept a batch at a time
/// must equal (a test holds them to it).
pub async fn sum_every_day(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    let all = |sql: &'static str| sqlx::query_scalar::<_, NaiveDate>(sql);
    let days = |v: Vec<NaiveDate>| v.into_iter().collect::<BTreeSet<_>>();
    let money = days(
        all("SELECT DISTINCT (occurred_at AT TIME ZONE 'UTC')::date FROM canvas_money")
            .fetch_all(&mut *conn)
            .await?,
    );
    let spent = days(
        all("SELECT DISTINCT spent_on FROM canvas_expenses")
            .fetch_all(&mut *conn)
            .await?,
    );
    let plan = Days {
        flows: money.union(&spent).copied().collect(),
        mrr: days(
            all("SELECT DISTINCT (occurred_at AT TIME ZONE 'UTC')::date FROM canvas_mrr_movements")
                .fetch_all(&mut *conn)
                .await?,
        ),
        vendors: spent,
        decisions: days(
            all(
                "SELECT DISTINCT (decided_at AT TIME ZONE 'UTC')::date FROM canvas_proposals \
                 WHERE decided_at IS NOT NULL",
            )
            .fetch_all(&mut *conn)
            .await?,
        ),
        outcomes: days(
            all("SELECT DISTINCT (at AT TIME ZONE 'UTC')::date FROM canvas_outcomes")
                .fetch_all(&mut *conn)
                .await?,
        ),
        executions: days(
            all("SELECT DISTINCT (at AT TIME ZONE 'UTC')::date FROM canvas_executions")
                .fetch_all(&mut *conn)
                .await?,
        ),
        refunded: vec![],
    };
    for table in DAILY_TABLES {
        sqlx::query(&format!("DELETE FROM {table}"))
            .execute(&mut *conn)
            .await?;
    }
    sum_days(conn, plan).await
}

/// A day's bounds as timestamps, for the facts kept by the instant: `d.day` from
/// `unnest($1::date[]) AS d(day)`.
macro_rules! on_day {
    ($column:literal) => {
        concat!(
            $column,
            " >= d.day::timestamp AT TIME ZONE 'UTC' AND ",
            $column,
            " < (d.day + 1)::timestamp AT TIME ZONE 'UTC'"
        )
    };
}

/// Sums each touched day again from the facts, the batch's included: a day's row is
/// deleted and written anew, so a day whose facts moved elsewhere is left with none.
async fn sum_days(conn: &mut PgConnection, mut days: Days) -> Result<(), sqlx::Error> {
    if !days.refunded.is_empty() {
        let earlier: Vec<(NaiveDate,)> = sqlx::query_as(
            "SELECT DISTINCT (occurred_at AT TIME ZONE 'UTC')::date FROM canvas_money \
             WHERE kind = 'charge_refunded' AND object_id = ANY($1)",
        )
        .bind(&days.refunded)
        .fetch_all(&mut *conn)
        .await?;
        days.flows.extend(earlier.into_iter().map(|(day,)| day));
    }
    let sums: [(&BTreeSet<NaiveDate>, &str, &str); 6] = [
        (
            &days.flows,
            "canvas_daily_flows",
            concat!(
                "INSERT INTO canvas_daily_flows (day, currency, spend, revenue, refunds) \
                 SELECT day, currency, sum(spend)::bigint, sum(revenue)::bigint, \
                   sum(refunds)::bigint \
                 FROM ( \
                   SELECT spent_on AS day, currency, amount AS spend, 0::bigint AS revenue, \
                     0::bigint AS refunds \
                   FROM canvas_expenses WHERE spent_on = ANY($1) \
                   UNION ALL \
                   SELECT d.day, m.currency, 0, m.amount, 0 \
                   FROM unnest($1::date[]) AS d(day) JOIN canvas_money m ON ",
                on_day!("m.occurred_at"),
                " WHERE m.kind = 'invoice_paid' \
                     OR (m.kind = 'charge_succeeded' AND m.invoice_id IS NULL) \
                   UNION ALL \
                   SELECT d.day, r.currency, 0, 0, r.amount \
                   FROM unnest($1::date[]) AS d(day) JOIN canvas_money r ON ",
                on_day!("r.occurred_at"),
                " WHERE r.kind = 'charge_refunded' AND NOT EXISTS ( \
                     SELECT 1 FROM canvas_money later \
                     WHERE later.kind = 'charge_refunded' AND later.object_id = r.object_id \
                       AND (later.occurred_at, later.inbound_id) > (r.occurred_at, r.inbound_id)) \
                 ) f GROUP BY day, currency"
            ),
        ),
        (
            &days.mrr,
            "canvas_daily_mrr",
            concat!(
                "INSERT INTO canvas_daily_mrr (day, currency, net, new, expansion, contraction, \
                   churn) \
                 SELECT d.day, m.currency, sum(m.mrr_after - m.mrr_before)::bigint, \
                   sum(CASE WHEN m.mrr_before = 0 THEN m.mrr_after ELSE 0 END)::bigint, \
                   sum(CASE WHEN m.mrr_before > 0 AND m.mrr_after > m.mrr_before \
                            THEN m.mrr_after - m.mrr_before ELSE 0 END)::bigint, \
                   sum(CASE WHEN m.mrr_after > 0 AND m.mrr_after < m.mrr_before \
                            THEN m.mrr_before - m.mrr_after ELSE 0 END)::bigint, \
                   sum(CASE WHEN m.mrr_after = 0 THEN m.mrr_before ELSE 0 END)::bigint \
                 FROM unnest($1::date[]) AS d(day) JOIN canvas_mrr_movements m ON ",
                on_day!("m.occurred_at"),
                " GROUP BY d.day, m.currency"
            ),
        ),
        (
            &days.vendors,
            "canvas_daily_vendor_spend",
            "INSERT INTO canvas_daily_vendor_spend (day, currency, vendor_key, vendor, amount) \
             SELECT spent_on, currency, lower(vendor), min(vendor), sum(amount)::bigint \
             FROM canvas_expenses WHERE spent_on = ANY($1) \
             GROUP BY spent_on, currency, lower(vendor)",
        ),
        (
            &days.decisions,
            "canvas_daily_decisions",
            concat!(
                "INSERT INTO canvas_daily_decisions (day, action_type, seconds, approved, \
                   rejected) \
                 SELECT d.day, p.action_type, \
                   floor(extract(epoch FROM p.decided_at - p.drafted_at))::bigint, \
                   count(*) FILTER (WHERE p.decision = 'approved'), \
                   count(*) FILTER (WHERE p.decision = 'rejected') \
                 FROM unnest($1::date[]) AS d(day) JOIN canvas_proposals p ON ",
                on_day!("p.decided_at"),
                " GROUP BY 1, 2, 3"
            ),
        ),
        (
            &days.outcomes,
            "canvas_daily_outcomes",
            concat!(
                "INSERT INTO canvas_daily_outcomes (day, action_type, kind, currency, outcomes, \
                   value) \
                 SELECT day, action_type, kind, coalesce(currency, ''), count(*), \
                   sum(value_cents)::bigint \
                 FROM (SELECT d.day, o.action_type, o.kind, o.value_cents, coalesce( \
                   (SELECT m.currency FROM canvas_money m WHERE m.inbound_id = o.caused_by), \
                   (SELECT m.currency FROM canvas_proposals p \
                      CROSS JOIN LATERAL unnest(p.inbound_ids) AS i(id) \
                      JOIN canvas_money m ON m.inbound_id = i.id \
                    WHERE p.proposal_id = o.proposal_id \
                    ORDER BY m.occurred_at, m.inbound_id LIMIT 1)) AS currency \
                   FROM unnest($1::date[]) AS d(day) JOIN canvas_outcomes o ON ",
                on_day!("o.at"),
                ") o GROUP BY 1, 2, 3, 4"
            ),
        ),
        (
            &days.executions,
            "canvas_daily_executions",
            concat!(
                "INSERT INTO canvas_daily_executions (day, adapter, succeeded, failed, \
                   uncertain) \
                 SELECT d.day, split_part(e.action_type, '.', 1), \
                   count(*) FILTER (WHERE e.result = 'succeeded'), \
                   count(*) FILTER (WHERE e.result = 'failed'), \
                   count(*) FILTER (WHERE e.result = 'uncertain') \
                 FROM unnest($1::date[]) AS d(day) JOIN canvas_executions e ON ",
                on_day!("e.at"),
                " GROUP BY 1, 2"
            ),
        ),
    ];
    for (days, table, sum) in sums {
        if days.is_empty() {
            continue;
        }
        let days: Vec<NaiveDate> = days.iter().copied().collect();
        sqlx::query(&format!("DELETE FROM {table} WHERE day = ANY($1)"))
            .bind(&days)
            .execute(&mut *conn)
            .await?;
        sqlx::query(sum).bind(&days).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Only what changed, in a fixed order so that two writers never lock rows in opposite
/// orders.
fn changed<'a, T: PartialEq>(
    now: &'a HashMap<String, Option<T>>,
    before: &HashMap<String, T>,
) -> Vec<&'a T> {
    let mut keys: Vec<&String> = now.keys().collect();
    keys.sort();
    keys.into_iter()
        .filter_map(|k| now[k].as_ref().filter(|row| before.get(k) != Some(*row)))
        .collect()
}

macro_rules! column {
    ($rows:expr, $name:ident) => {
        $rows.iter().map(|r| r.$name.clone()).collect::<Vec<_>>()
    };
}

/// The rows of insert-only facts that a batch actually added: each adds itself to its day.
#[derive(Debug, Default)]
struct Inserted {
    money: HashSet<String>,
    movements: HashSet<String>,
    outcomes: Vec<(String, i64)>,
}

async fn write(conn: &mut PgConnection, fold: &Fold) -> Result<Inserted, sqlx::Error> {
    let mut inserted = Inserted::default();
    if !fold.money.is_empty() {
        let rows = &fold.money;
        inserted.money = sqlx::query_scalar(
            "INSERT INTO canvas_money (inbound_id, kind, object_id, customer, invoice_id, amount, \
               currency, occurred_at) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
               $6::bigint[], $7::text[], $8::timestamptz[]) \
             ON CONFLICT (inbound_id) DO NOTHING RETURNING inbound_id",
        )
        .bind(column!(rows, inbound_id))
        .bind(rows.iter().map(|r| r.kind).collect::<Vec<_>>())
        .bind(column!(rows, object_id))
        .bind(column!(rows, customer))
        .bind(column!(rows, invoice_id))
        .bind(column!(rows, amount))
        .bind(column!(rows, currency))
        .bind(column!(rows, occurred_at))
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
    }
    if !fold.balances.is_empty() {
        let rows: Vec<&Balance> = fold.balances.values().collect();
        sqlx::query(
            "INSERT INTO canvas_balances (inbound_id, currency, source, amount, occurred_at) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], \
               $5::timestamptz[]) \
             ON CONFLICT (inbound_id, currency) DO NOTHING",
        )
        .bind(column!(rows, inbound_id))
        .bind(column!(rows, currency))
        .bind(column!(rows, source))
        .bind(column!(rows, amount))
        .bind(column!(rows, occurred_at))
        .execute(&mut *conn)
        .await?;
    }
    let rows = changed(&fold.invoices, &fold.invoices_before);
    if !rows.is_empty() {
        sqlx::query(
            "INSERT INTO canvas_failed_invoices (invoice_id, customer, amount, currency, \
               first_failed_at, failures, paid_at) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], \
               $5::timestamptz[], $6::int[], $7::timestamptz[]) \
             ON CONFLICT (invoice_id) DO UPDATE SET customer = excluded.customer, \
               amount = excluded.amount, currency = excluded.currency, \
               first_failed_at = excluded.first_failed_at, failures = excluded.failures, \
               paid_at = excluded.paid_at",
        )
        .bind(column!(rows, invoice_id))
        .bind(column!(rows, customer))
        .bind(column!(rows, amount))
        .bind(column!(rows, currency))
        .bind(column!(rows, first_failed_at))
        .bind(column!(rows, failures))
        .bind(column!(rows, paid_at))
        .execute(&mut *conn)
        .await?;
    }
    let rows = changed(&fold.subscriptions, &fold.subscriptions_before);
    if !rows.is_empty() {
        sqlx::query(
            "INSERT INTO canvas_subscriptions (subscription_id, customer, currency, status, mrr, \
               as_of) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], \
               $6::timestamptz[]) \
             ON CONFLICT (subscription_id) DO UPDATE SET customer = excluded.customer, \
               currency = excluded.currency, status = excluded.status, mrr = excluded.mrr, \
               as_of = excluded.as_of",
        )
        .bind(column!(rows, subscription_id))
        .bind(column!(rows, customer))
        .bind(column!(rows, currency))
        .bind(column!(rows, status))
        .bind(column!(rows, mrr))
        .bind(column!(rows, as_of))
        .execute(&mut *conn)
        .await?;
    }
    if !fold.movements.is_empty() {
        let rows = &fold.movements;
        inserted.movements = sqlx::query_scalar(
            "INSERT INTO canvas_mrr_movements (inbound_id, subscription_id, currency, mrr_before, \
               mrr_after, occurred_at) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], \
               $6::timestamptz[]) \
             ON CONFLICT (inbound_id) DO NOTHING RETURNING inbound_id",
        )
        .bind(column!(rows, inbound_id))
        .bind(column!(rows, subscription_id))
        .bind(column!(rows, currency))
        .bind(column!(rows, mrr_before))
        .bind(column!(rows, mrr_after))
        .bind(column!(rows, occurred_at))
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
    }
    if !fold.expenses.is_empty() {
        let rows: Vec<&Expense> = fold.expenses.values().collect();
        sqlx::query(
            "INSERT INTO canvas_expenses (source, expense_id, vendor, category, amount, currency, \
               spent_on, inbound_id) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], \
               $6::text[], $7::date[], $8::text[]) \
             ON CONFLICT (source, expense_id) DO UPDATE SET vendor = excluded.vendor, \
               category = excluded.category, amount = excluded.amount, \
               currency = excluded.currency, spent_on = excluded.spent_on, \
               inbound_id = excluded.inbound_id",
        )
        .bind(column!(rows, source))
        .bind(column!(rows, expense_id))
        .bind(column!(rows, vendor))
        .bind(column!(rows, category))
        .bind(column!(rows, amount))
        .bind(column!(rows, currency))
        .bind(column!(rows, spent_on))
        .bind(column!(rows, inbound_id))
        .execute(&mut *conn)
        .await?;
    }
    let rows = changed(&fold.proposals, &fold.proposals_before);
    if !rows.is_empty() {
        let inbound_ids: Vec<Value> = rows
            .iter()
            .map(|r| Value::from(r.inbound_ids.clone()))
            .collect();
        sqlx::query(
            "INSERT INTO canvas_proposals (proposal_id, action_type, inbound_ids, drafted_at, \
               decided_at, decision) \
             SELECT p.id, p.action_type, ARRAY(SELECT jsonb_array_elements_text(p.inbound_ids)), \
               p.drafted_at, p.decided_at, p.decision \
             FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::timestamptz[], \
               $5::timestamptz[], $6::text[]) \
               AS p(id, action_type, inbound_ids, drafted_at, decided_at, decision) \
             ON CONFLICT (proposal_id) DO UPDATE SET decided_at = excluded.decided_at, \
               decision = excluded.decision",
        )
        .bind(column!(rows, proposal_id))
        .bind(column!(rows, action_type))
        .bind(inbound_ids)
        .bind(column!(rows, drafted_at))
        .bind(column!(rows, decided_at))
        .bind(column!(rows, decision))
        .execute(&mut *conn)
        .await?;
    }
    if !fold.executions.is_empty() {
        let rows: Vec<&Execution> = fold.executions.values().collect();
        sqlx::query(
            "INSERT INTO canvas_executions (proposal_id, attempt, action_type, result, at) \
             SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], \
               $5::timestamptz[]) \
             ON CONFLICT (proposal_id, attempt) DO UPDATE SET result = excluded.result, \
               at = excluded.at",
        )
        .bind(column!(rows, proposal_id))
        .bind(column!(rows, attempt))
        .bind(column!(rows, action_type))
        .bind(rows.iter().map(|r| r.result).collect::<Vec<_>>())
        .bind(column!(rows, at))
        .execute(&mut *conn)
        .await?;
    }
    if !fold.outcomes.is_empty() {
        let rows = &fold.outcomes;
        inserted.outcomes = sqlx::query_as(
            "INSERT INTO canvas_outcomes (proposal_id, sequence, action_type, kind, value_cents, \
               caused_by, at) \
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], \
               $5::bigint[], $6::text[], $7::timestamptz[]) \
             ON CONFLICT (proposal_id, sequence) DO NOTHING RETURNING proposal_id, sequence",
        )
        .bind(column!(rows, proposal_id))
        .bind(column!(rows, sequence))
        .bind(column!(rows, action_type))
        .bind(column!(rows, kind))
        .bind(column!(rows, value_cents))
        .bind(column!(rows, caused_by))
        .bind(column!(rows, at))
        .fetch_all(&mut *conn)
        .await?;
    }
    Ok(inserted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daily_tables_are_the_last_of_the_tables() {
        let (facts, daily) = TABLES.split_at(TABLES.len() - DAILY_TABLES.len());
        assert!(
            facts.iter().all(|t| !t.starts_with("canvas_daily_")),
            "{facts:?}"
        );
        assert!(
            daily.iter().all(|t| t.starts_with("canvas_daily_")),
            "{daily:?}"
        );
        assert_eq!(daily, DAILY_TABLES);
    }
    use serde_json::json;

    /// Every Stripe and bank fixture, and a bank balance, as the `Received` events of a
    /// batch: folded from whole payloads and from slim ones, the facts must be the same.
    #[test]
    fn canvas_facts_from_slim_deliveries_equal_those_from_whole_ones() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let mut deliveries = vec![(
            "bank".to_string(),
            json!({"type": "balance.updated",
                "data": {"amount": 1_250_000, "currency": "EUR", "account": "main"}}),
        )];
        for (source, dir) in [("stripe", "stripe"), ("bank", "std/bank")] {
            let mut paths: Vec<_> = std::fs::read_dir(root.join(dir))
                .expect("fixtures")
                .map(|entry| entry.expect("fixture").path())
                .collect();
            paths.sort();
            for path in paths {
                let text = std::fs::read_to_string(&path).expect("fixture");
                deliveries.push((
                    source.to_string(),
                    serde_json::from_str(&text).expect("json"),
                ));
            }
        }
        assert!(deliveries.len() > 10, "the fixtures are there");
        let slim = Canvas
            .slim()
            .iter()
            .find(|s| s.aggregate_type == "Inbound")
            .expect("the canvas slims deliveries");
        let (mut whole, mut slimmed) = (Vec::new(), Vec::new());
        for (n, (source, payload)) in deliveries.iter().enumerate() {
            let event = json!({"Received": {
                "source": source,
                "kind": payload["type"],
                "external_id": format!("evt_{n}"),
                "occurred_at": format!("2026-11-{:02}T10:00:00Z", n + 1),
                "payload": payload,
            }});
            let text = event.to_string();
            whole.push((format!("{source}:evt_{n}"), event));
            slimmed.push((
                format!("{source}:evt_{n}"),
                slim.decode(&text).expect("slim"),
            ));
        }
        let fold = |events: &[(String, Value)]| {
            let mut fold = Fold::default();
            for (id, event) in events {
                fold.signal(id, &SignalView::of(event).expect("a signal"));
            }
            format!("{fold:?}")
        };
        let facts = fold(&whole);
        assert!(facts.contains("charge_succeeded") && facts.contains("Amazon Web Services"));
        assert!(facts.contains("mrr_before") && facts.contains("1250000"));
        assert_eq!(fold(&slimmed), facts);
        let stored = |events: &[(String, Value)]| -> Vec<StoredEvent> {
            events
                .iter()
                .map(|(id, payload)| StoredEvent {
                    log: LogPosition::START,
                    aggregate_type: "Inbound".into(),
                    aggregate_id: id.clone(),
                    sequence: 1,
                    event_type: "Received".into(),
                    event_version: "1.0".into(),
                    payload: payload.clone(),
                    metadata: Value::Null,
                    recorded_at: Utc::now(),
                })
                .collect()
        };
        assert_eq!(touched(&stored(&slimmed)), touched(&stored(&whole)));
        assert!(
            slimmed
                .iter()
                .map(|(_, v)| v.to_string().len())
                .sum::<usize>()
                * 3
                < whole
                    .iter()
                    .map(|(_, v)| v.to_string().len())
                    .sum::<usize>()
        );
    }

    /// Every kind of proposal event the canvas reads, as the aggregate writes it, gives the
    /// same step from its whole payload and from its slim one; a kind it does not read is
    /// `Other`, and one missing a field it needs is an error.
    #[test]
    fn canvas_steps_from_slim_proposal_events_equal_those_from_whole_ones() {
        use crate::domain::{Decision, ProposalDraft, ProposalEvent, Role, Urgency, Vertical};
        let decision = Decision {
            actor: "ada@example.com".into(),
            role: Role::Approver,
            comment: Some("go".into()),
            payload_hash: "h".into(),
            identities: vec!["slack:U1".into()],
            at: Some(chrono::Utc::now()),
        };
        let draft = ProposalDraft {
            id: crate::domain::ProposalId::derive("stripe:evt_1", "rule"),
            title: "Retry".into(),
            vertical: Vertical::Money,
            action_type: "stripe.retry_invoice".into(),
            action: json!({"invoice": "in_1", "amount_cents": 1000, "kind": "not a step"}),
            reasoning: "because".into(),
            drivers: vec!["because".into()],
            score: 60,
            urgency: Urgency::High,
            due_by: None,
            owner: None,
            inbound_ids: vec!["stripe:evt_1".into(), "stripe:evt_2".into()],
            subject_key: "invoice:in_1".into(),
            requested_by: None,
            outcome_key: None,
            terms: Default::default(),
        };
        let cases = [
            (
                ProposalEvent::Drafted {
                    draft,
                    payload_hash: "h".into(),
                },
                Step::Drafted {
                    action_type: "stripe.retry_invoice".into(),
                    inbound_ids: vec!["stripe:evt_1".into(), "stripe:evt_2".into()],
                },
            ),
            (
                ProposalEvent::Approved(decision.clone()),
                Step::Decided("approved"),
            ),
            (
                ProposalEvent::Rejected {
                    decision: decision.clone(),
                    reason: "no".into(),
                },
                Step::Decided("rejected"),
            ),
            (ProposalEvent::ApprovalAdded(decision), Step::Other),
            (
                ProposalEvent::ExecutionSucceeded {
                    attempt: 2,
                    result: json!({"kind": "x", "attempt": 9}),
                    at: None,
                },
                Step::Attempt(2, "succeeded"),
            ),
            (
                ProposalEvent::ExecutionFailed {
                    attempt: 1,
                    error: "boom".into(),
                    retryable: true,
                },
                Step::Attempt(1, "failed"),
            ),
            (
                ProposalEvent::ExecutionUncertain {
                    attempt: 3,
                    reason: "timeout".into(),
                },
                Step::Attempt(3, "uncertain"),
            ),
            (
                ProposalEvent::MarkedDone {
                    actor: "ada@example.com".into(),
                    role: Role::Approver,
                    note: None,
                },
                Step::MarkedDone,
            ),
            (
                ProposalEvent::OutcomeRecorded {
                    kind: "recovered".into(),
                    summary: "recovered $10.00".into(),
                    value_cents: Some(1000),
                },
                Step::Outcome {
                    kind: "recovered".into(),
                    value_cents: Some(1000),
                },
            ),
        ];
        let slim = Canvas
            .slim()
            .iter()
            .find(|s| s.aggregate_type == "Proposal")
            .expect("the canvas slims proposal events");
        for (event, step) in cases {
            let kind = cqrs_es::DomainEvent::event_type(&event);
            let whole = serde_json::to_value(&event).expect("json");
            let slimmed = slim.decode(&whole.to_string()).expect("slim");
            assert_eq!(Step::of(&kind, &whole), Ok(step), "{kind}");
            assert_eq!(Step::of(&kind, &slimmed), Step::of(&kind, &whole), "{kind}");
        }
        for (kind, payload) in [
            ("Drafted", json!({"Drafted": {"inbound_ids": []}})),
            ("ExecutionFailed", json!({"ExecutionFailed": {}})),
            (
                "OutcomeRecorded",
                json!({"OutcomeRecorded": {"value_cents": 1}}),
            ),
        ] {
            assert!(Step::of(kind, &payload).is_err(), "{kind}");
        }
    }

    #[test]
    fn canvas_prices_are_normalised_to_a_month() {
        let item = |amount: i64, quantity: i64, interval: &str, count: i64| {
            json!({"quantity": quantity, "price": {"unit_amount": amount,
                "recurring": {"interval": interval, "interval_count": count}}})
        };
        assert_eq!(monthly(&item(2000, 3, "month", 1)), 6000);
        assert_eq!(monthly(&item(120_000, 1, "year", 1)), 10_000);
        assert_eq!(monthly(&item(6000, 1, "month", 3)), 2000);
        assert_eq!(monthly(&item(1200, 1, "week", 1)), 5200);
    }

    #[test]
    fn canvas_counts_only_billed_subscriptions() {
        let sub = |status: &str| {
            json!({"status": status, "items": {"data": [
                {"quantity": 2, "price": {"unit_amount": 500, "recurring": {"interval": "month"}}}
            ]}})
        };
        assert_eq!(subscription_mrr(&sub("active"), false), 1000);
        assert_eq!(subscription_mrr(&sub("past_due"), false), 1000);
        assert_eq!(subscription_mrr(&sub("trialing"), false), 0);
        assert_eq!(subscription_mrr(&sub("active"), true), 0);
    }
}
