//! The canvas: one history of money, spend and decisions, sent through the real app, and
//! every query's exact answer on it, worked out by hand; then hostile parameters.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use execops::canvas::queries::run;
use execops::canvas::{Answer, Cell, Params, QueryName, RawParams};
use execops::domain::{Decision, ProposalCommand, ProposalEvent, Role};
use serde_json::{json, Value};

use crate::audit::projections_idle;
use crate::common::TestApp;
use crate::policies::{send_changed, settle};
use crate::webhooks::configured;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("an RFC 3339 time")
        .with_timezone(&Utc)
}

fn day(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("a date")
}

/// A Stripe event from `fixture`, with its id and time, its object changed by `change`.
async fn stripe(
    app: &TestApp,
    fixture: &str,
    id: &str,
    when: &str,
    change: impl FnOnce(&mut Value),
) {
    send_changed(app, &format!("stripe/{fixture}.json"), |json| {
        json["id"] = json!(id);
        json["created"] = json!(at(when).timestamp());
        change(&mut json["data"]["object"]);
    })
    .await;
}

/// An expense from the bank's spend feed.
async fn expense(app: &TestApp, id: &str, vendor: &str, amount: i64, currency: &str, date: &str) {
    send_changed(app, "std/bank/expense.recorded.json", |json| {
        json["timestamp"] = json!(format!("{date}T09:30:00Z"));
        json["data"] = json!({
            "id": id, "vendor": vendor, "category": "software", "amount": amount,
            "currency": currency, "date": date, "memo": "",
        });
    })
    .await;
}

async fn bank_balance(app: &TestApp, amount: i64, currency: &str, when: &str) {
    send_changed(app, "std/bank/expense.recorded.json", |json| {
        json["type"] = json!("balance.updated");
        json["timestamp"] = json!(when);
        json["data"] = json!({"amount": amount, "currency": currency});
    })
    .await;
}

fn invoice(id: &str, customer: &str, amount: i64, currency: &str) -> impl FnOnce(&mut Value) {
    let (id, customer, currency) = (id.to_string(), customer.to_string(), currency.to_string());
    move |o: &mut Value| {
        o["id"] = json!(id);
        o["customer"] = json!(customer);
        o["amount_due"] = json!(amount);
        o["amount_paid"] = json!(amount);
        o["currency"] = json!(currency);
        o["next_payment_attempt"] = json!(1_900_000_000);
    }
}

fn charge(id: &str, amount: i64, invoice: Option<&str>) -> impl FnOnce(&mut Value) {
    let (id, invoice) = (id.to_string(), invoice.map(str::to_string));
    move |o: &mut Value| {
        o["id"] = json!(id);
        o["amount"] = json!(amount);
        o["currency"] = json!("usd");
        if let Some(invoice) = invoice {
            o["invoice"] = json!(invoice);
        }
    }
}

/// A subscription with one item of `unit` × `quantity` every `interval`.
fn subscription(
    id: &str,
    currency: &str,
    status: &str,
    unit: i64,
    quantity: i64,
    interval: &str,
) -> impl FnOnce(&mut Value) {
    let (id, currency, status, interval) = (
        id.to_string(),
        currency.to_string(),
        status.to_string(),
        interval.to_string(),
    );
    move |o: &mut Value| {
        o["id"] = json!(id);
        o["currency"] = json!(currency);
        o["status"] = json!(status);
        let item = &mut o["items"]["data"][0];
        item["quantity"] = json!(quantity);
        item["price"]["unit_amount"] = json!(unit);
        item["price"]["currency"] = json!(currency);
        item["price"]["recurring"]["interval"] = json!(interval);
        item["price"]["recurring"]["interval_count"] = json!(1);
    }
}

fn decision() -> Decision {
    Decision {
        actor: "ada@example.com".into(),
        role: Role::Approver,
        comment: None,
        payload_hash: "h".into(),
        identities: vec![],
        at: Some(chrono::Utc::now()),
    }
}

/// A proposal's whole stream, written as the store writes it but with the times of a
/// history that spans weeks (the store stamps every event with the moment it commits).
/// Each stream ends decided or executed, so the executor has nothing to run.
async fn stream(
    app: &TestApp,
    name: &str,
    action_type: &str,
    inbound_ids: &[&str],
    drafted: &str,
    steps: Vec<(&str, ProposalEvent, Value)>,
) {
    let mut draft = crate::execution::proposal(name, action_type, json!({"text": name}));
    draft.inbound_ids = inbound_ids.iter().map(|s| s.to_string()).collect();
    let id = draft.id.to_string();
    let (mut types, mut payloads, mut metadata, mut times) = (vec![], vec![], vec![], vec![]);
    let mut all = vec![(
        drafted,
        ProposalEvent::Drafted {
            draft,
            payload_hash: "h".into(),
        },
        json!({}),
    )];
    all.extend(steps);
    for (when, event, meta) in all {
        types.push(cqrs_es::DomainEvent::event_type(&event));
        payloads.push(serde_json::to_value(&event).expect("json"));
        metadata.push(meta);
        times.push(at(when));
    }
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
           payload, metadata, recorded_at) \
         SELECT 'Proposal', $1, n, t, '1.0', p::json, m::json, r \
         FROM unnest($2::text[], $3::jsonb[], $4::jsonb[], $5::timestamptz[]) \
           WITH ORDINALITY AS s(t, p, m, r, n)",
    )
    .bind(&id)
    .bind(&types)
    .bind(&payloads)
    .bind(&metadata)
    .bind(&times)
    .execute(app.store.pool())
    .await
    .expect("a proposal's stream");
}

fn approved() -> ProposalEvent {
    ProposalEvent::Approved(decision())
}

fn rejected() -> ProposalEvent {
    ProposalEvent::Rejected {
        decision: decision(),
        reason: "not now".into(),
    }
}

fn started(attempt: u32) -> ProposalEvent {
    ProposalEvent::ExecutionStarted {
        attempt,
        idempotency_key: format!("k{attempt}"),
    }
}

fn succeeded(attempt: u32) -> ProposalEvent {
    ProposalEvent::ExecutionSucceeded {
        attempt,
        result: json!({}),
        at: None,
    }
}

fn outcome(value: i64) -> ProposalEvent {
    ProposalEvent::OutcomeRecorded {
        kind: "invoice_paid".into(),
        summary: "paid".into(),
        value_cents: Some(value),
    }
}

/// The history every query is asked about. Times are UTC.
async fn history(app: &TestApp) {
    // Cash. Stripe's balance on 1 Oct is superseded by 10 Nov's; 5 Dec's is after `to`.
    let balance = |usd: i64, eur: Option<i64>| {
        move |o: &mut Value| {
            let mut available = vec![json!({"amount": usd, "currency": "usd"})];
            if let Some(eur) = eur {
                available.push(json!({"amount": eur, "currency": "EUR"}));
            }
            o["available"] = json!(available);
        }
    };
    stripe(
        app,
        "balance.available",
        "evt_bal_oct",
        "2026-10-01T12:00:00Z",
        balance(999_999, None),
    )
    .await;
    stripe(
        app,
        "balance.available",
        "evt_bal_nov",
        "2026-11-10T12:00:00Z",
        balance(300_000, Some(50_000)),
    )
    .await;
    stripe(
        app,
        "balance.available",
        "evt_bal_dec",
        "2026-12-05T12:00:00Z",
        balance(1, Some(1)),
    )
    .await;
    bank_balance(app, 200_000, "usd", "2026-11-20T08:00:00Z").await;

    // Spend.
    expense(
        app,
        "exp_aws_aug",
        "Amazon Web Services",
        30_000,
        "usd",
        "2026-08-10",
    )
    .await;
    expense(
        app,
        "exp_aws_sep",
        "Amazon Web Services",
        30_000,
        "usd",
        "2026-09-10",
    )
    .await;
    expense(
        app,
        "exp_aws_oct",
        "Amazon Web Services",
        30_000,
        "usd",
        "2026-10-10",
    )
    .await;
    expense(
        app,
        "exp_aws_nov",
        "Amazon Web Services",
        45_000,
        "usd",
        "2026-11-05",
    )
    .await;
    expense(
        app,
        "exp_aws_nov2",
        "AMAZON WEB SERVICES",
        5_000,
        "usd",
        "2026-11-25",
    )
    .await;
    expense(app, "exp_figma_oct", "Figma", 10_000, "usd", "2026-10-20").await;
    // Recorded wrong, then corrected under the same expense id: the correction stands.
    expense(app, "exp_figma_nov", "Figma", 9_999, "usd", "2026-11-12").await;
    expense(app, "exp_figma_nov", "Figma", 5_000, "usd", "2026-11-12").await;
    expense(
        app,
        "exp_coffee",
        "100% Coffee_Co",
        2_000,
        "usd",
        "2026-11-15",
    )
    .await;
    expense(
        app,
        "exp_obrien_sep",
        "O'Brien Consulting",
        60_000,
        "eur",
        "2026-09-15",
    )
    .await;
    expense(
        app,
        "exp_obrien_nov",
        "O'Brien Consulting",
        30_000,
        "eur",
        "2026-11-18",
    )
    .await;

    // Revenue, refunds, payouts.
    stripe(
        app,
        "invoice.paid",
        "evt_paid_e1",
        "2026-08-20T10:00:00Z",
        invoice("in_E1", "cus_E", 100_000, "eur"),
    )
    .await;
    stripe(
        app,
        "invoice.paid",
        "evt_paid_a",
        "2026-09-05T10:00:00Z",
        invoice("in_A", "cus_A", 20_000, "usd"),
    )
    .await;
    stripe(
        app,
        "invoice.paid",
        "evt_paid_b",
        "2026-10-05T10:00:00Z",
        invoice("in_B", "cus_B", 15_000, "usd"),
    )
    .await;
    stripe(
        app,
        "charge.succeeded",
        "evt_ch_1",
        "2026-10-06T10:00:00Z",
        charge("ch_1", 5_000, None),
    )
    .await;
    // Names its invoice, which in_B's invoice.paid already counts.
    stripe(
        app,
        "charge.succeeded",
        "evt_ch_2",
        "2026-10-07T10:00:00Z",
        charge("ch_2", 7_000, Some("in_B")),
    )
    .await;
    for (evt, when, refunded) in [
        ("evt_rf_1", "2026-10-08T10:00:00Z", 1_000),
        ("evt_rf_2", "2026-10-09T10:00:00Z", 2_500),
    ] {
        send_changed(app, "stripe/charge.succeeded.json", |json| {
            json["id"] = json!(evt);
            json["type"] = json!("charge.refunded");
            json["created"] = json!(at(when).timestamp());
            let o = &mut json["data"]["object"];
            o["id"] = json!("ch_1");
            o["amount"] = json!(5_000);
            o["amount_refunded"] = json!(refunded);
        })
        .await;
    }
    stripe(
        app,
        "payout.paid",
        "evt_po_1",
        "2026-10-15T10:00:00Z",
        |o| {
            o["amount"] = json!(100_000);
        },
    )
    .await;

    // Failed payments.
    stripe(
        app,
        "invoice.payment_failed",
        "evt_fail_x",
        "2026-10-20T10:00:00Z",
        invoice("in_X", "cus_X", 3_000, "usd"),
    )
    .await;
    stripe(
        app,
        "invoice.payment_failed",
        "evt_fail_f1",
        "2026-11-03T10:00:00Z",
        invoice("in_F", "cus_F", 12_000, "usd"),
    )
    .await;
    stripe(
        app,
        "invoice.payment_failed",
        "evt_fail_f2",
        "2026-11-05T10:00:00Z",
        invoice("in_F", "cus_F", 12_000, "usd"),
    )
    .await;
    stripe(
        app,
        "invoice.paid",
        "evt_paid_f",
        "2026-11-09T10:00:00Z",
        invoice("in_F", "cus_F", 12_000, "usd"),
    )
    .await;
    stripe(
        app,
        "invoice.payment_failed",
        "evt_fail_g",
        "2026-11-20T10:00:00Z",
        invoice("in_G", "cus_G", 8_000, "usd"),
    )
    .await;
    stripe(
        app,
        "invoice.payment_failed",
        "evt_fail_h",
        "2026-11-21T10:00:00Z",
        invoice("in_H", "cus_H", 5_000, "eur"),
    )
    .await;
    stripe(
        app,
        "invoice.paid",
        "evt_paid_h",
        "2026-11-28T10:00:00Z",
        invoice("in_H", "cus_H", 5_000, "eur"),
    )
    .await;

    // Subscriptions.
    let sub = "customer.subscription";
    stripe(
        app,
        &format!("{sub}.created"),
        "evt_sub0",
        "2026-08-01T10:00:00Z",
        subscription("sub_0", "usd", "active", 1_000, 1, "month"),
    )
    .await;
    stripe(
        app,
        &format!("{sub}.created"),
        "evt_sub1",
        "2026-09-10T10:00:00Z",
        subscription("sub_1", "usd", "active", 2_000, 3, "month"),
    )
    .await;
    stripe(
        app,
        &format!("{sub}.created"),
        "evt_sub2",
        "2026-09-20T10:00:00Z",
        subscription("sub_2", "usd", "active", 120_000, 1, "year"),
    )
    .await;
    stripe(
        app,
        &format!("{sub}.updated"),
        "evt_sub1_up",
        "2026-10-05T10:00:00Z",
        subscription("sub_1", "usd", "active", 2_000, 5, "month"),
    )
    .await;
    stripe(
        app,
        &format!("{sub}.created"),
        "evt_sub3",
        "2026-10-12T10:00:00Z",
        subscription("sub_3", "eur", "active", 3_000, 1, "month"),
    )
    .await;
    stripe(
        app,
        &format!("{sub}.updated"),
        "evt_sub2_down",
        "2026-11-02T10:00:00Z",
        subscription("sub_2", "usd", "past_due", 60_000, 1, "year"),
    )
    .await;
    stripe(
        app,
        &format!("{sub}.deleted"),
        "evt_sub1_del",
        "2026-11-15T10:00:00Z",
        subscription("sub_1", "usd", "canceled", 2_000, 5, "month"),
    )
    .await;
    stripe(
        app,
        &format!("{sub}.created"),
        "evt_sub4",
        "2026-11-20T10:00:00Z",
        subscription("sub_4", "usd", "trialing", 9_000, 1, "month"),
    )
    .await;

    // Decisions and executions, in October (outcomes in November).
    let none = || json!({});
    let slack = "slack.post_message";
    let retry = "stripe.retry_invoice";
    stream(
        app,
        "p1",
        slack,
        &[],
        "2026-10-01T10:00:00Z",
        vec![
            ("2026-10-01T10:01:00Z", approved(), none()),
            ("2026-10-01T10:01:30Z", started(1), none()),
            ("2026-10-01T10:02:00Z", succeeded(1), none()),
        ],
    )
    .await;
    stream(
        app,
        "p2",
        slack,
        &[],
        "2026-10-02T10:00:00Z",
        vec![
            ("2026-10-02T10:02:00Z", approved(), none()),
            ("2026-10-02T10:02:30Z", started(1), none()),
            (
                "2026-10-02T10:03:00Z",
                ProposalEvent::ExecutionFailed {
                    attempt: 1,
                    error: "500".into(),
                    retryable: false,
                },
                none(),
            ),
            (
                "2026-10-02T10:50:00Z",
                ProposalEvent::RetryRequested {
                    actor: "ada@example.com".into(),
                    role: Role::Approver,
                },
                none(),
            ),
            ("2026-10-02T10:59:00Z", started(2), none()),
            ("2026-10-02T11:00:00Z", succeeded(2), none()),
        ],
    )
    .await;
    stream(
        app,
        "p3",
        slack,
        &[],
        "2026-10-03T10:00:00Z",
        vec![("2026-10-03T10:10:00Z", rejected(), none())],
    )
    .await;
    stream(
        app,
        "p4",
        slack,
        &[],
        "2026-10-04T10:00:00Z",
        vec![
            ("2026-10-04T11:00:00Z", approved(), none()),
            ("2026-10-04T11:30:00Z", started(1), none()),
            (
                "2026-10-04T12:00:00Z",
                ProposalEvent::ExecutionUncertain {
                    attempt: 1,
                    reason: "timeout".into(),
                },
                none(),
            ),
        ],
    )
    .await;
    stream(
        app,
        "p5",
        retry,
        &["stripe:evt_fail_f1"],
        "2026-10-05T10:00:00Z",
        vec![
            ("2026-10-05T10:00:30Z", approved(), none()),
            ("2026-10-05T10:01:00Z", started(1), none()),
            ("2026-10-05T10:02:00Z", succeeded(1), none()),
            (
                "2026-11-09T12:00:00Z",
                outcome(12_000),
                json!({"caused_by": "stripe:evt_paid_f"}),
            ),
        ],
    )
    .await;
    stream(
        app,
        "p6",
        retry,
        &["stripe:evt_fail_h"],
        "2026-10-06T10:00:00Z",
        vec![
            ("2026-10-06T10:01:30Z", approved(), none()),
            ("2026-10-06T10:02:00Z", started(1), none()),
            ("2026-10-06T10:03:00Z", succeeded(1), none()),
            ("2026-11-28T12:00:00Z", outcome(5_000), none()),
        ],
    )
    .await;
    stream(
        app,
        "p7",
        retry,
        &["test:p7"],
        "2026-09-30T23:59:00Z",
        vec![
            ("2026-10-01T00:01:00Z", approved(), none()),
            ("2026-10-07T10:00:00Z", started(1), none()),
            ("2026-10-07T10:01:00Z", succeeded(1), none()),
            ("2026-11-10T12:00:00Z", outcome(700), none()),
        ],
    )
    .await;
    stream(
        app,
        "p8",
        "email.send",
        &[],
        "2026-09-20T10:00:00Z",
        vec![("2026-09-21T10:00:00Z", rejected(), none())],
    )
    .await;
    // Drafted in October, never decided.
    stream(app, "p9", slack, &[], "2026-10-09T10:00:00Z", vec![]).await;
    // Decided through the store today.
    let action = json!({"to": "a@example.com"});
    let id = crate::execution::draft(app, "p10", "email.send", action.clone()).await;
    app.store
        .proposal(
            &id,
            ProposalCommand::Reject {
                decision: Decision {
                    payload_hash: execops::domain::payload_hash(&action),
                    identities: vec![],
                    ..decision()
                },
                reason: "no".into(),
            },
            HashMap::new(),
        )
        .await
        .expect("rejected");

    settle(app).await;
    projections_idle(app.store.pool()).await;
}

/// The daily sums, kept a batch at a time, equal the sums of every day taken again from the
/// facts alone; and rebuilt from the events alone, the canvas tables come out the same, row
/// for row.
async fn assert_canvas_is_what_the_events_say(app: &TestApp) {
    async fn snapshot(conn: &mut sqlx::PgConnection) -> Vec<Value> {
        let mut all = vec![];
        for table in execops::projections::canvas::DAILY_TABLES {
            let rows: Value = sqlx::query_scalar(&format!(
                "SELECT coalesce(json_agg(t ORDER BY t::text), '[]') FROM {table} t"
            ))
            .fetch_one(&mut *conn)
            .await
            .expect("a daily table");
            all.push(json!({ *table: rows }));
        }
        all
    }
    let mut tx = app.store.pool().begin().await.expect("a transaction");
    let kept = snapshot(&mut tx).await;
    assert!(
        kept.iter().any(|t| t.to_string().contains("\"day\"")),
        "some days are kept: {kept:?}"
    );
    execops::projections::canvas::sum_every_day(&mut tx)
        .await
        .expect("summed again");
    let summed = snapshot(&mut tx).await;
    tx.rollback().await.expect("rolled back");
    assert_eq!(kept, summed);

    let verify = crate::audit::execops(
        &app.database_url,
        &["replay", "--verify", "--projection", "canvas"],
    );
    let report = crate::audit::stdout(&verify);
    assert!(
        verify.status.success() && report.contains("canvas: no difference"),
        "{report}{}",
        crate::audit::stderr(&verify)
    );
}

fn params(from: &str, to: &str) -> Params {
    Params {
        from: day(from),
        to: day(to),
        ..Params::defaults(day(to))
    }
}

async fn ask(app: &TestApp, query: QueryName, params: &Params) -> Answer {
    run(app.store.pool(), query, params).await.expect("answers")
}

/// The rows as people read them.
fn shown(answer: &Answer) -> Vec<Vec<String>> {
    answer
        .rows
        .iter()
        .map(|row| row.iter().map(Cell::display).collect())
        .collect()
}

fn rows(expected: &[&[&str]]) -> Vec<Vec<String>> {
    expected
        .iter()
        .map(|row| row.iter().map(|c| c.to_string()).collect())
        .collect()
}

#[tokio::test]
async fn canvas_queries_answer_a_known_history_exactly() {
    let app = TestApp::spawn_with(configured()).await;
    history(&app).await;
    let nov = params("2026-11-01", "2026-11-30");
    let oct = params("2026-10-01", "2026-10-31");

    // Runway as of 30 Nov. USD cash: Stripe 3,000.00 (10 Nov; 1 Oct's is older, 5 Dec's is
    // after `to`) + bank 2,000.00 (20 Nov) = 5,000.00. EUR: Stripe 500.00.
    // USD net outflow, Aug–Oct: Aug 300 spend = 300; Sep 300 spend − 200 in_A = 100;
    // Oct spend 300 + 100 Figma = 400, in 150 in_B + 50 ch_1 (ch_2 names in_B: not again),
    // refund 25 (ch_1's last cumulative) → 400 + 25 − 200 = 225. Total 625.00 = 62500,
    // ÷ 3 = 20833 a month; 500000 × 10 ÷ 20833 = 240 tenths = 24.0 months.
    // EUR: Aug −1,000 (in_E1), Sep +600 (O'Brien), Oct 0 → −400.00 ÷ 3 = −133.33: not burning.
    let runway = ask(&app, QueryName::Runway, &nov).await;
    assert_eq!(
        shown(&runway),
        rows(&[
            &["eur", "€500.00", "-€133.33", ""],
            &["usd", "$5,000.00", "$208.33", "24.0"],
        ])
    );
    assert!(
        runway.notes.iter().any(|n| n
            == "not burning in eur: net inflow of €133.33 a month over 2026-08-01 to 2026-10-31"),
        "{:?}",
        runway.notes
    );
    assert!(runway
        .notes
        .iter()
        .any(|n| n == "cash: $2,000.00 from bank on 2026-11-20"));

    // Burn by month, Sep–Nov. USD Nov: spend AWS 450 + 50 (same vendor, other case) +
    // Figma 50 (corrected from 99.99) + coffee 20 = 570; in: in_F paid 120. EUR Nov: O'Brien
    // 300; in: in_H paid 50. The payout is not counted.
    let burn = ask(&app, QueryName::Burn, &params("2026-09-01", "2026-11-30")).await;
    assert_eq!(
        shown(&burn),
        rows(&[
            &["2026-09", "eur", "€600.00", "€0.00", "€0.00", "€600.00"],
            &["2026-10", "eur", "€0.00", "€0.00", "€0.00", "€0.00"],
            &["2026-11", "eur", "€300.00", "€50.00", "€0.00", "€250.00"],
            &["2026-09", "usd", "$300.00", "$200.00", "$0.00", "$100.00"],
            &["2026-10", "usd", "$400.00", "$200.00", "$25.00", "$225.00"],
            &["2026-11", "usd", "$570.00", "$120.00", "$0.00", "$450.00"],
        ])
    );
    let chart = burn.chart.as_ref().expect("a chart");
    assert_eq!(chart.series[1].values, vec![10_000, 22_500, 45_000]);

    // MRR. sub_0 10.00 since Aug. Sep: sub_1 20 × 3 = 60, sub_2 1,200/yr = 100 → new 160,
    // end 170. Oct: sub_1 to × 5 = 100 (expansion 40) → 210; sub_3 30 EUR new. Nov: sub_2 to
    // 600/yr = 50 (past due still billed; contraction 50), sub_1 deleted (churn 100), sub_4
    // trialing (nothing) → 60.
    let mrr = ask(&app, QueryName::Mrr, &params("2026-09-01", "2026-11-30")).await;
    assert_eq!(
        shown(&mrr),
        rows(&[
            &["2026-09", "eur", "€0.00", "€0.00", "€0.00", "€0.00", "€0.00"],
            &["2026-10", "eur", "€30.00", "€30.00", "€0.00", "€0.00", "€0.00"],
            &["2026-11", "eur", "€30.00", "€0.00", "€0.00", "€0.00", "€0.00"],
            &["2026-09", "usd", "$170.00", "$160.00", "$0.00", "$0.00", "$0.00"],
            &["2026-10", "usd", "$210.00", "$0.00", "$40.00", "$0.00", "$0.00"],
            &["2026-11", "usd", "$60.00", "$0.00", "$0.00", "$50.00", "$100.00"],
        ])
    );

    // Failed payments in Nov: in_F (failed twice, first 3 Nov, paid 9 Nov), in_G (not paid),
    // in_H (EUR, paid 28 Nov). in_X failed in October. USD: 2, 200.00, 120.00 recovered =
    // 60.0 %; EUR: 1, 50.00, all recovered.
    let failed = ask(&app, QueryName::FailedPayments, &nov).await;
    assert_eq!(
        shown(&failed),
        rows(&[
            &["2026-11-03", "cus_F", "in_F", "$120.00", "usd", "yes"],
            &["2026-11-20", "cus_G", "in_G", "$80.00", "usd", "no"],
            &["2026-11-21", "cus_H", "in_H", "€50.00", "eur", "yes"],
        ])
    );
    assert_eq!(
        failed.notes,
        vec![
            "EUR: 1 failed, €50.00; 1 recovered, €50.00 (100.0 % of the amount)".to_string(),
            "USD: 2 failed, $200.00; 1 recovered, $120.00 (60.0 % of the amount)".to_string(),
        ]
    );
    let usd_only = Params {
        currency: Some("usd".into()),
        ..nov.clone()
    };
    assert_eq!(
        ask(&app, QueryName::FailedPayments, &usd_only)
            .await
            .rows
            .len(),
        2
    );

    // Spend by vendor in Nov against Aug–Oct ÷ 3. AWS 500 vs 300 → +66.66 %; Figma 50 vs
    // 33.33 → (5000 − 3333) ÷ 3333 = 5001 bp; coffee has no history; O'Brien 300 vs 200.
    let spend = ask(&app, QueryName::SpendByVendor, &nov).await;
    assert_eq!(
        shown(&spend),
        rows(&[
            &["O'Brien Consulting", "eur", "€300.00", "€200.00", "50.0 %"],
            &["AMAZON WEB SERVICES", "usd", "$500.00", "$300.00", "66.6 %"],
            &["Figma", "usd", "$50.00", "$33.33", "50.0 %"],
            &["100% Coffee_Co", "usd", "$20.00", "$0.00", ""],
        ])
    );
    assert_eq!(spend.rows[2][4], Cell::Percent { basis_points: 5001 });
    let top_one = Params {
        top: 1,
        ..nov.clone()
    };
    assert_eq!(
        shown(&ask(&app, QueryName::SpendByVendor, &top_one).await)
            .into_iter()
            .map(|r| r[0].clone())
            .collect::<Vec<_>>(),
        vec!["O'Brien Consulting", "AMAZON WEB SERVICES"]
    );
    let figma = Params {
        vendor: Some("fIGMA".into()),
        ..nov.clone()
    };
    assert_eq!(
        shown(&ask(&app, QueryName::SpendByVendor, &figma).await).len(),
        1
    );

    // Latency of decisions in October. slack: 60, 120, 600, 3600 s → p50 120 (the 2nd of
    // 4), p90 3600. stripe: 30, 90, 120 (p7 drafted 30 Sep, decided 1 Oct) → p50 90, p90 120.
    // p8 was decided in September, p9 never, p10 today.
    let latency = ask(&app, QueryName::ApprovalLatency, &oct).await;
    assert_eq!(
        latency.rows,
        vec![
            vec![
                Cell::Text {
                    value: "slack.post_message".into()
                },
                Cell::Count { value: 4 },
                Cell::Seconds { value: 120 },
                Cell::Seconds { value: 3_600 },
            ],
            vec![
                Cell::Text {
                    value: "stripe.retry_invoice".into()
                },
                Cell::Count { value: 3 },
                Cell::Seconds { value: 90 },
                Cell::Seconds { value: 120 },
            ],
        ]
    );

    // Precision from September to today: email 0 of 2 (p8, p10), slack 3 of 4, stripe 3 of 3.
    let today = Utc::now().date_naive();
    let since_sep = params("2026-09-01", &today.to_string());
    assert_eq!(
        shown(&ask(&app, QueryName::Precision, &since_sep).await),
        rows(&[
            &["email.send", "0", "2", "0.0 %"],
            &["slack.post_message", "3", "1", "75.0 %"],
            &["stripe.retry_invoice", "3", "0", "100.0 %"],
        ])
    );

    // Outcomes in November: p5's currency from the invoice paid that caused it (usd), p6's
    // from the failed invoice it was drafted from (eur), p7's from nothing: unknown.
    let outcomes = ask(&app, QueryName::Outcomes, &nov).await;
    assert_eq!(
        shown(&outcomes),
        rows(&[
            &["stripe.retry_invoice", "invoice_paid", "eur", "1", "€50.00"],
            &[
                "stripe.retry_invoice",
                "invoice_paid",
                "usd",
                "1",
                "$120.00"
            ],
            &[
                "stripe.retry_invoice",
                "invoice_paid",
                "unknown",
                "1",
                "700 (currency unknown)"
            ],
        ])
    );
    assert_eq!(
        ask(&app, QueryName::Outcomes, &usd_only).await.rows.len(),
        1
    );

    // Executions in October: slack p1 ok, p2 failed then ok, p4 uncertain → 2 of 4;
    // stripe p5, p6, p7 ok.
    assert_eq!(
        shown(&ask(&app, QueryName::ExecutionSuccess, &oct).await),
        rows(&[
            &["slack", "2", "1", "1", "50.0 %"],
            &["stripe", "3", "0", "0", "100.0 %"],
        ])
    );

    assert_canvas_is_what_the_events_say(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn canvas_refuses_or_safely_answers_hostile_parameters() {
    let app = TestApp::spawn_with(configured()).await;
    expense(&app, "e1", "100% Coffee_Co", 2_000, "usd", "2026-11-15").await;
    expense(&app, "e2", "O'Brien Consulting", 3_000, "usd", "2026-11-16").await;
    expense(&app, "e3", "Figma", 5_000, "usd", "2026-11-17").await;
    settle(&app).await;
    projections_idle(app.store.pool()).await;
    let events_before = crate::common::count(app.store.pool(), "SELECT count(*) FROM events").await;
    let today = day("2026-11-30");
    let raw = |f: &dyn Fn(&mut RawParams)| {
        let mut raw = RawParams {
            from: Some("2026-11-01".into()),
            to: Some("2026-11-30".into()),
            ..RawParams::default()
        };
        f(&mut raw);
        raw
    };
    type Change = Box<dyn Fn(&mut RawParams)>;
    // Each case: the change, and the vendors it finds, or the error it is refused with.
    let cases: Vec<(Change, Result<Vec<&str>, &str>)> = vec![
        (
            Box::new(|r| r.vendor = Some("'; DROP TABLE events; --".into())),
            Ok(vec![]),
        ),
        (Box::new(|r| r.vendor = Some("%".into())), Ok(vec![])),
        (Box::new(|r| r.vendor = Some("_".into())), Ok(vec![])),
        (Box::new(|r| r.vendor = Some("'".into())), Ok(vec![])),
        (
            Box::new(|r| r.vendor = Some("100% coffee_co".into())),
            Ok(vec!["100% Coffee_Co"]),
        ),
        (
            Box::new(|r| r.vendor = Some("o'brien consulting".into())),
            Ok(vec!["O'Brien Consulting"]),
        ),
        (
            Box::new(|r| r.currency = Some("us".into())),
            Err("currency: \"us\" is not a three-letter ISO code such as usd"),
        ),
        (
            Box::new(|r| r.currency = Some("usd'--".into())),
            Err("currency: \"usd'--\" is not a three-letter ISO code such as usd"),
        ),
        (Box::new(|r| r.currency = Some("EUR".into())), Ok(vec![])),
        (
            Box::new(|r| r.from = Some("0001-01-01".into())),
            Err("from: 0001-01-01 is outside 2000-01-01 to 2099-12-31"),
        ),
        (
            Box::new(|r| r.to = Some("2026-02-30".into())),
            Err("to: \"2026-02-30\" is not a date (YYYY-MM-DD)"),
        ),
        (
            Box::new(|r| r.to = Some("9999-12-31".into())),
            Err("to: 9999-12-31 is outside 2000-01-01 to 2099-12-31"),
        ),
        (
            Box::new(|r| r.top = Some("1000000".into())),
            Err("top: \"1000000\" is not a whole number from 1 to 50"),
        ),
        (Box::new(|r| r.top = Some("1".into())), Ok(vec!["Figma"])),
        (
            Box::new(|r| r.top = Some("50".into())),
            Ok(vec!["Figma", "O'Brien Consulting", "100% Coffee_Co"]),
        ),
    ];
    for (change, expected) in cases {
        let raw = raw(&*change);
        match (Params::parse(&raw, today), expected) {
            (Ok(params), Ok(vendors)) => {
                let answer = run(app.store.pool(), QueryName::SpendByVendor, &params)
                    .await
                    .expect("a safe answer");
                let found: Vec<String> = answer.rows.iter().map(|r| r[0].display()).collect();
                assert_eq!(found, vendors, "{raw:?}");
                // Every other query takes the same parameters safely too.
                for query in QueryName::ALL {
                    run(app.store.pool(), query, &params)
                        .await
                        .expect("a safe answer");
                }
            }
            (Err(error), Err(message)) => assert_eq!(error.to_string(), message, "{raw:?}"),
            (got, expected) => panic!("{raw:?}: got {got:?}, expected {expected:?}"),
        }
    }
    assert_eq!(
        crate::common::count(app.store.pool(), "SELECT count(*) FROM events").await,
        events_before,
        "the events are all still there"
    );
    app.stop().await;
}

/// The daily sums behind the queries follow the facts when a fact moves: an expense
/// corrected to another day and currency leaves its first day, and a refund reported out of
/// order counts once, on the day of the latest report.
#[tokio::test]
async fn canvas_daily_sums_follow_corrections_and_reports_out_of_order() {
    let app = TestApp::spawn_with(configured()).await;
    expense(&app, "exp_move", "Linear", 10_000, "usd", "2026-11-03").await;
    // One vendor spelled two ways, beyond ASCII too: one vendor to the day's sums, folded
    // as the queries fold it.
    for (id, vendor) in [
        ("exp_arzt_1", "Ärzte GmbH"),
        ("exp_arzt_2", "ärzte gmbh"),
        ("exp_aws_1", "aws"),
        ("exp_aws_2", "AWS"),
    ] {
        expense(&app, id, vendor, 1_000, "eur", "2026-10-15").await;
    }
    settle(&app).await;
    projections_idle(app.store.pool()).await;
    let early = params("2026-11-01", "2026-11-05");
    assert_eq!(
        shown(&ask(&app, QueryName::SpendByVendor, &early).await),
        rows(&[&["Linear", "usd", "$100.00", "$0.00", ""]])
    );
    expense(&app, "exp_move", "Linear", 7_000, "eur", "2026-11-20").await;
    for (evt, when, refunded) in [
        ("evt_rf_late", "2026-11-10T10:00:00Z", 3_000),
        ("evt_rf_early", "2026-11-08T10:00:00Z", 1_000),
    ] {
        send_changed(&app, "stripe/charge.succeeded.json", |json| {
            json["id"] = json!(evt);
            json["type"] = json!("charge.refunded");
            json["created"] = json!(at(when).timestamp());
            let o = &mut json["data"]["object"];
            o["id"] = json!("ch_rf");
            o["currency"] = json!("usd");
            o["amount"] = json!(5_000);
            o["amount_refunded"] = json!(refunded);
        })
        .await;
        settle(&app).await;
    }
    // Uncertain on 4 Nov, then a person marked it done: it happened.
    stream(
        &app,
        "p_done",
        "slack.post_message",
        &[],
        "2026-11-04T10:00:00Z",
        vec![
            ("2026-11-04T10:05:00Z", approved(), json!({})),
            ("2026-11-04T10:06:00Z", started(1), json!({})),
            (
                "2026-11-04T10:07:00Z",
                ProposalEvent::ExecutionUncertain {
                    attempt: 1,
                    reason: "timeout".into(),
                },
                json!({}),
            ),
            (
                "2026-11-12T09:00:00Z",
                ProposalEvent::MarkedDone {
                    actor: "ada@example.com".into(),
                    role: Role::Approver,
                    note: Some("it was posted".into()),
                },
                json!({}),
            ),
        ],
    )
    .await;
    projections_idle(app.store.pool()).await;
    assert_eq!(
        shown(&ask(&app, QueryName::ExecutionSuccess, &early).await),
        rows(&[&["slack", "1", "0", "0", "100.0 %"]])
    );
    let spend = ask(&app, QueryName::SpendByVendor, &early).await;
    assert!(spend.rows.is_empty(), "{:?}", shown(&spend));
    assert_eq!(
        shown(
            &ask(
                &app,
                QueryName::SpendByVendor,
                &params("2026-11-20", "2026-11-20")
            )
            .await
        ),
        rows(&[&["Linear", "eur", "€70.00", "€0.00", ""]])
    );
    assert_canvas_is_what_the_events_say(&app).await;
    let by_day = Params {
        granularity: execops::canvas::Granularity::Day,
        currency: Some("usd".into()),
        ..params("2026-11-03", "2026-11-10")
    };
    let burn = shown(&ask(&app, QueryName::Burn, &by_day).await);
    let day_of = |d: &str| burn.iter().find(|row| row[0] == d).cloned();
    assert_eq!(
        day_of("2026-11-03").map(|row| row[2].clone()),
        Some("$0.00".into()),
        "{burn:?}"
    );
    assert_eq!(
        day_of("2026-11-08").map(|row| row[4].clone()),
        Some("$0.00".into()),
        "{burn:?}"
    );
    assert_eq!(
        day_of("2026-11-10").map(|row| row[4].clone()),
        Some("$30.00".into()),
        "{burn:?}"
    );
    app.stop().await;
}
