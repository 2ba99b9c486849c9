//! Money: failed payments, disputes, cancellations (Stripe), and spend and runway (Stripe's
//! balance and any spend or cash feed sent as Standard Webhooks).

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use super::{i64_at, slack_escape, str_at, Facts, Outcome, Plan, PolicyConfig};
use crate::domain::inbound::Signal;
use crate::domain::priority::{money, revenue_factor, urgency_factor, Factor, Priority};
use crate::domain::values::{Urgency, Vertical};

pub(super) fn stripe(signal: &Signal, facts: &Facts, config: &PolicyConfig) -> Vec<Outcome> {
    let object = signal
        .payload
        .pointer("/data/object")
        .cloned()
        .unwrap_or(Value::Null);
    match signal.kind.as_str() {
        "invoice.payment_failed" => payment_failed(&object, facts, config),
        "invoice.paid" => invoice_paid(&object),
        "charge.dispute.created" => dispute(&object, config),
        "customer.subscription.deleted" => win_back(&object, facts),
        "balance.available" => runway(facts, config).into_iter().collect(),
        _ => Vec::new(),
    }
}

pub(super) fn feed(signal: &Signal, facts: &Facts, config: &PolicyConfig) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    if signal.kind == "expense.recorded" {
        outcomes.extend(spend_jump(&signal.payload, facts, config));
    }
    if matches!(signal.kind.as_str(), "expense.recorded" | "balance.updated") {
        outcomes.extend(runway(facts, config));
    }
    outcomes
}

fn day(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

/// Who an email to a Stripe customer goes to: the address when the event has it, else the
/// customer, whose address the email adapter looks up when it sends.
fn customer_recipient(object: &Value) -> (Value, String) {
    match str_at(object, "/customer_email").filter(|e| !e.is_empty()) {
        Some(email) => (json!({ "email": email }), email.to_string()),
        None => {
            let customer = str_at(object, "/customer").unwrap_or("unknown");
            (
                json!({ "stripe_customer": customer }),
                format!("customer {customer}"),
            )
        }
    }
}

fn card_update_subject(invoice: &str) -> String {
    format!("stripe:invoice:{invoice}:card_update_email")
}

fn owner_dm_subject(invoice: &str) -> String {
    format!("stripe:invoice:{invoice}:owner_dm")
}

fn retry_subject(invoice: &str) -> String {
    format!("stripe:invoice:{invoice}:retry")
}

/// The outcome key of everything proposed for an unpaid invoice: its payment.
pub(super) fn paid_key(invoice: &str) -> String {
    format!("stripe:invoice:{invoice}:paid")
}

fn payment_failed(invoice: &Value, facts: &Facts, config: &PolicyConfig) -> Vec<Outcome> {
    let Some(id) = str_at(invoice, "/id") else {
        return Vec::new();
    };
    let currency = str_at(invoice, "/currency").unwrap_or("usd");
    let amount = i64_at(invoice, "/amount_remaining")
        .or_else(|| i64_at(invoice, "/amount_due"))
        .unwrap_or(0);
    let attempts = i64_at(invoice, "/attempt_count").unwrap_or(1);
    let retry_at = i64_at(invoice, "/next_payment_attempt")
        .and_then(|t| DateTime::from_timestamp(t, 0))
        .filter(|t| *t > facts.recorded_at - Duration::days(3650));
    let (to, who) = customer_recipient(invoice);
    let link = str_at(invoice, "/hosted_invoice_url")
        .map(str::to_string)
        .unwrap_or_else(|| format!("the payment page of invoice {id}"));
    let amount_text = money(amount, currency);
    let urgency = if attempts >= 2 {
        Urgency::High
    } else {
        Urgency::Medium
    };
    let when = match retry_at {
        Some(t) => format!("before Stripe retries on {}", day(t)),
        None => "before Stripe gives up on it".to_string(),
    };
    let mut outcomes = vec![Outcome::Propose(Box::new(Plan {
        rule: "money.card_update_email",
        title: format!("Email {who} a card-update link"),
        vertical: Vertical::Money,
        action_type: "email.send",
        action: json!({
            "to": to,
            "template": "card_update",
            "subject": "Your payment didn't go through",
            "body": format!(
                "Hi,\n\nWe couldn't collect {amount_text} for invoice {id}. \
                 Please update your card here: {link}\n\nThank you!"
            ),
            "invoice": id,
        }),
        reasoning: format!(
            "Invoice {id} for {amount_text} failed to collect (attempt {attempts}). \
             A card-update email {when} recovers most failed payments."
        ),
        priority: Priority {
            revenue: revenue_factor(amount, currency, "is unpaid on this invoice"),
            urgency: urgency_factor(
                urgency,
                format!("the payment has failed {attempts} times, {when}"),
            ),
            effort: Factor::new(90, "it is one email"),
            strategic: Factor::new(70, "keeping a paying customer is cheaper than finding one"),
        },
        urgency,
        due_by: retry_at,
        owner: None,
        subject_key: card_update_subject(id),
        outcome_key: Some(paid_key(id)),
    }))];
    if amount >= config.owner_dm_threshold_cents || attempts >= 2 {
        outcomes.push(Outcome::Propose(Box::new(Plan {
            rule: "money.owner_dm",
            title: format!("DM the account owner: {amount_text} unpaid on {id}"),
            vertical: Vertical::Money,
            action_type: "slack.post_message",
            action: json!({
                "channel": config.owner_slack,
                "text": slack_escape(&format!(
                    "Invoice {id} ({amount_text}, {who}) has failed {attempts} times. \
                     A card-update email is proposed; a personal note may save the account."
                )),
            }),
            reasoning: format!(
                "The payment failed {attempts} times and {amount_text} is at stake: worth the \
                 owner's attention, not only an automatic email."
            ),
            priority: Priority {
                revenue: revenue_factor(amount, currency, "is unpaid on this invoice"),
                urgency: urgency_factor(
                    Urgency::High,
                    format!("the payment has failed {attempts} times"),
                ),
                effort: Factor::new(95, "it is one Slack message"),
                strategic: Factor::new(50, "the owner should know about a customer at risk"),
            },
            urgency: Urgency::High,
            due_by: retry_at,
            owner: Some(config.owner_slack.clone()),
            subject_key: owner_dm_subject(id),
            outcome_key: Some(paid_key(id)),
        })));
    }
    let automatic = str_at(invoice, "/collection_method") != Some("send_invoice");
    if retry_at.is_none() && automatic && str_at(invoice, "/status") == Some("open") {
        outcomes.push(Outcome::Propose(Box::new(Plan {
            rule: "money.retry_invoice",
            title: format!("Retry collecting {amount_text} on {id} now"),
            vertical: Vertical::Money,
            action_type: "stripe.retry_invoice",
            // The amount rides along for the quorum rules (`amount>=`); Stripe is sent the id.
            action: json!({ "invoice": id, "amount_cents": amount, "currency": currency }),
            reasoning: format!(
                "Stripe has no retry scheduled for invoice {id} ({amount_text}, {who}) after \
                 {attempts} failed attempts. Charging the card again now, once the customer \
                 had a chance to fix it, is the last automatic step before the invoice is lost."
            ),
            priority: Priority {
                revenue: revenue_factor(amount, currency, "is unpaid on this invoice"),
                urgency: urgency_factor(Urgency::High, "Stripe has stopped retrying".to_string()),
                effort: Factor::new(95, "it is one call to Stripe"),
                strategic: Factor::new(60, "an uncollected invoice is revenue already earned"),
            },
            urgency: Urgency::High,
            due_by: None,
            owner: None,
            subject_key: retry_subject(id),
            outcome_key: Some(paid_key(id)),
        })));
    }
    outcomes
}

fn invoice_paid(invoice: &Value) -> Vec<Outcome> {
    let Some(id) = str_at(invoice, "/id") else {
        return Vec::new();
    };
    [
        card_update_subject(id),
        owner_dm_subject(id),
        retry_subject(id),
    ]
    .into_iter()
    .map(|subject_key| Outcome::Supersede {
        subject_key,
        reason: format!("invoice {id} was paid"),
    })
    .collect()
}

fn dispute(dispute: &Value, config: &PolicyConfig) -> Vec<Outcome> {
    let Some(id) = str_at(dispute, "/id") else {
        return Vec::new();
    };
    let currency = str_at(dispute, "/currency").unwrap_or("usd");
    let amount = i64_at(dispute, "/amount").unwrap_or(0);
    let reason = str_at(dispute, "/reason").unwrap_or("unknown");
    let charge = str_at(dispute, "/charge").unwrap_or("unknown");
    let due_by =
        i64_at(dispute, "/evidence_details/due_by").and_then(|t| DateTime::from_timestamp(t, 0));
    let due_text = due_by
        .map(|t| format!("evidence is due by {}", day(t)))
        .unwrap_or_else(|| "evidence is due soon".into());
    let amount_text = money(amount, currency);
    vec![Outcome::Propose(Box::new(Plan {
        rule: "money.dispute_evidence",
        title: format!("Prepare dispute evidence for {amount_text}"),
        vertical: Vertical::Money,
        action_type: "slack.post_message",
        action: json!({
            "channel": config.owner_slack,
            "text": slack_escape(&format!(
                "Dispute {id} on charge {charge} for {amount_text} (reason: {reason}); {due_text}. \
                 Gather the receipt, the customer's messages, proof of delivery and the refund \
                 policy, and respond in the Stripe Dashboard."
            )),
        }),
        reasoning: format!(
            "A customer disputed {amount_text} (reason: {reason}). Unanswered disputes are lost \
             by default; {due_text}."
        ),
        priority: Priority {
            revenue: revenue_factor(amount, currency, "is disputed"),
            urgency: urgency_factor(Urgency::Critical, due_text.clone()),
            effort: Factor::new(40, "gathering evidence takes an hour or two"),
            strategic: Factor::new(
                80,
                "lost disputes cost the amount, a fee and standing with the card networks",
            ),
        },
        urgency: Urgency::Critical,
        due_by,
        owner: Some(config.owner_slack.clone()),
        subject_key: format!("stripe:dispute:{id}"),
        outcome_key: None,
    }))]
}

fn win_back(subscription: &Value, facts: &Facts) -> Vec<Outcome> {
    let Some(id) = str_at(subscription, "/id") else {
        return Vec::new();
    };
    let item = subscription
        .pointer("/items/data/0")
        .cloned()
        .unwrap_or(Value::Null);
    let unit = i64_at(&item, "/price/unit_amount")
        .or_else(|| i64_at(&item, "/plan/amount"))
        .unwrap_or(0);
    let quantity = i64_at(&item, "/quantity").unwrap_or(1).max(1);
    let interval = str_at(&item, "/plan/interval").unwrap_or("month");
    let yearly = unit * quantity * if interval == "year" { 1 } else { 12 };
    let currency = str_at(subscription, "/currency").unwrap_or("usd");
    let (to, who) = customer_recipient(subscription);
    vec![Outcome::Propose(Box::new(Plan {
        rule: "money.win_back_email",
        title: format!("Send a win-back email to {who}"),
        vertical: Vertical::Money,
        action_type: "email.send",
        action: json!({
            "to": to,
            "template": "win_back",
            "subject": "We'd love to have you back",
            "body": "Hi,\n\nWe saw you cancelled your subscription. Could you tell us what \
                     we could have done better? If you come back this month, your first month \
                     is on us.\n\nThank you for trying us.",
            "subscription": id,
        }),
        reasoning: format!(
            "Subscription {id} was cancelled, worth {} a year. A personal note within days of \
             cancelling wins back some customers and tells you why the others left.",
            money(yearly, currency)
        ),
        priority: Priority {
            revenue: revenue_factor(yearly, currency, "a year walked out"),
            urgency: urgency_factor(Urgency::Medium, "a win-back works best within a few days"),
            effort: Factor::new(85, "it is one email"),
            strategic: Factor::new(60, "every cancellation says something about the product"),
        },
        urgency: Urgency::Medium,
        due_by: Some(facts.recorded_at + Duration::days(3)),
        owner: None,
        subject_key: format!("stripe:subscription:{id}:win_back"),
        outcome_key: None,
    }))]
}

fn spend_jump(payload: &Value, facts: &Facts, config: &PolicyConfig) -> Option<Outcome> {
    let spend = facts.vendor_spend.as_ref()?;
    let vendor = str_at(payload, "/data/vendor")?;
    if spend.months_with_history == 0 || spend.trailing_average_cents <= 0 {
        return None;
    }
    let limit = spend.trailing_average_cents * (100 + config.spend_jump_percent);
    if spend.month_to_date_cents * 100 <= limit {
        return None;
    }
    let over = spend.month_to_date_cents - spend.trailing_average_cents;
    let percent = over * 100 / spend.trailing_average_cents;
    let month = spend.month.format("%Y-%m");
    let mtd = money(spend.month_to_date_cents, &spend.currency);
    let avg = money(spend.trailing_average_cents, &spend.currency);
    Some(Outcome::Propose(Box::new(Plan {
        rule: "money.spend_review",
        title: format!("Review spend with {vendor}"),
        vertical: Vertical::Money,
        action_type: "slack.post_message",
        action: json!({
            "channel": config.owner_slack,
            "text": slack_escape(&format!(
                "{vendor}: {mtd} so far in {month}, {percent}% over the {avg} monthly average of \
                 the last three months. Worth a look before the month closes."
            )),
        }),
        reasoning: format!(
            "Spend with {vendor} this month ({mtd}) is {percent}% over its trailing three-month \
             average ({avg}); the threshold is {}%.",
            config.spend_jump_percent
        ),
        priority: Priority {
            revenue: revenue_factor(over, &spend.currency, "more than usual is going out"),
            urgency: urgency_factor(Urgency::Medium, "the month is still open"),
            effort: Factor::new(70, "it is a look at one vendor's bill"),
            strategic: Factor::new(40, "spend creeps up unnoticed"),
        },
        urgency: Urgency::Medium,
        due_by: None,
        owner: Some(config.owner_slack.clone()),
        subject_key: format!("spend:{}:{month}", vendor.to_lowercase()),
        outcome_key: None,
    })))
}

fn runway(facts: &Facts, config: &PolicyConfig) -> Option<Outcome> {
    let runway = facts.runway.as_ref()?;
    if runway.monthly_net_burn_cents <= 0 {
        return None;
    }
    let tenths = runway.cash_cents * 10 / runway.monthly_net_burn_cents;
    if tenths >= config.runway_floor_months * 10 {
        return None;
    }
    let months = format!("{}.{}", tenths / 10, tenths % 10);
    let cash = money(runway.cash_cents, &runway.currency);
    let burn = money(runway.monthly_net_burn_cents, &runway.currency);
    let floor = config.runway_floor_months;
    Some(Outcome::Propose(Box::new(Plan {
        rule: "money.runway_alert",
        title: format!("Runway below {floor} months"),
        vertical: Vertical::Money,
        action_type: "slack.post_message",
        action: json!({
            "channel": config.owner_slack,
            "text": slack_escape(&format!(
                "Runway is {months} months: {cash} in cash against {burn} of net burn a month \
                 (average of the last three months). The floor is {floor} months."
            )),
        }),
        reasoning: format!(
            "Cash of {cash} lasts {months} months at the trailing three-month net burn of \
             {burn}, under the {floor}-month floor."
        ),
        priority: Priority {
            revenue: revenue_factor(runway.cash_cents, &runway.currency, "of cash is left"),
            urgency: urgency_factor(
                Urgency::High,
                format!("runway is {months} months, under the {floor}-month floor"),
            ),
            effort: Factor::new(30, "it needs a plan, not a click"),
            strategic: Factor::new(100, "running out of cash ends the company"),
        },
        urgency: Urgency::High,
        due_by: None,
        owner: Some(config.owner_slack.clone()),
        subject_key: "company:runway".into(),
        outcome_key: None,
    })))
}
