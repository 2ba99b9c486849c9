//! The facts the policies need, kept by the router from the signals it has seen, in its own
//! transaction: monthly spend and revenue, spend by vendor, cash balances, deal amounts.

use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use serde_json::Value;
use sqlx::{PgConnection, Row};

use crate::domain::policies::{Facts, Runway, VendorSpend};
use crate::domain::Signal;

fn month_of(date: NaiveDate) -> NaiveDate {
    date.with_day(1).unwrap_or(date)
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

/// An expense's vendor, amount, currency and month.
fn expense(signal: &Signal) -> Option<(String, i64, String, NaiveDate)> {
    let data = signal.payload.get("data")?;
    let vendor = str_at(data, "/vendor")?.trim().to_string();
    let amount = data.get("amount")?.as_i64()?;
    let currency = str_at(data, "/currency").unwrap_or("usd").to_lowercase();
    let date = str_at(data, "/date")
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        .unwrap_or_else(|| signal.occurred_at.date_naive());
    Some((vendor, amount, currency, month_of(date)))
}

/// Records what `signal` tells about money and deals.
pub async fn record(conn: &mut PgConnection, signal: &Signal) -> Result<(), sqlx::Error> {
    let object = signal.payload.pointer("/data/object");
    match (signal.source.as_str(), signal.kind.as_str()) {
        ("stripe", "invoice.paid") => {
            let Some(invoice) = object else { return Ok(()) };
            let amount = invoice
                .get("amount_paid")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let currency = str_at(invoice, "/currency").unwrap_or("usd").to_lowercase();
            add_monthly(
                conn,
                "revenue",
                month_of(signal.occurred_at.date_naive()),
                &currency,
                amount,
            )
            .await
        }
        ("stripe", "balance.available") => {
            let Some(balances) = object
                .and_then(|o| o.get("available"))
                .and_then(Value::as_array)
            else {
                return Ok(());
            };
            for balance in balances {
                let amount = balance.get("amount").and_then(Value::as_i64).unwrap_or(0);
                let currency = str_at(balance, "/currency").unwrap_or("usd").to_lowercase();
                set_cash(conn, "stripe", &currency, amount, signal.occurred_at).await?;
            }
            Ok(())
        }
        ("hubspot", "deal.propertyChange") => {
            let event = &signal.payload;
            if str_at(event, "/propertyName") != Some("amount") {
                return Ok(());
            }
            let Some(cents) = str_at(event, "/propertyValue")
                .and_then(|v| v.trim().parse::<f64>().ok())
                .map(|v| (v * 100.0).round() as i64)
            else {
                return Ok(());
            };
            let deal = event
                .get("objectId")
                .map(|v| v.to_string())
                .unwrap_or_default();
            sqlx::query(
                "INSERT INTO facts_deals (deal_id, amount_cents) VALUES ($1, $2) \
                 ON CONFLICT (deal_id) DO UPDATE SET amount_cents = excluded.amount_cents",
            )
            .bind(deal)
            .bind(cents)
            .execute(conn)
            .await
            .map(|_| ())
        }
        (_, "expense.recorded") => {
            let Some((vendor, amount, currency, month)) = expense(signal) else {
                return Ok(());
            };
            sqlx::query(
                "INSERT INTO facts_vendor_spend (vendor, month, currency, cents) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (vendor, month, currency) DO UPDATE SET cents = facts_vendor_spend.cents + excluded.cents",
            )
            .bind(&vendor)
            .bind(month)
            .bind(&currency)
            .bind(amount)
            .execute(&mut *conn)
            .await?;
            add_monthly(conn, "spend", month, &currency, amount).await
        }
        (source, "balance.updated") => {
            let Some(data) = signal.payload.get("data") else {
                return Ok(());
            };
            let Some(amount) = data.get("amount").and_then(Value::as_i64) else {
                return Ok(());
            };
            let currency = str_at(data, "/currency").unwrap_or("usd").to_lowercase();
            set_cash(conn, source, &currency, amount, signal.occurred_at).await
        }
        _ => Ok(()),
    }
}

async fn add_monthly(
    conn: &mut PgConnection,
    kind: &str,
    month: NaiveDate,
    currency: &str,
    cents: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO facts_monthly (kind, month, currency, cents) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (kind, month, currency) DO UPDATE SET cents = facts_monthly.cents + excluded.cents",
    )
    .bind(kind)
    .bind(month)
    .bind(currency)
    .bind(cents)
    .execute(conn)
    .await
    .map(|_| ())
}

async fn set_cash(
    conn: &mut PgConnection,
    source: &str,
    currency: &str,
    cents: i64,
    as_of: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO facts_cash (source, currency, cents, as_of) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (source, currency) DO UPDATE SET cents = excluded.cents, as_of = excluded.as_of \
         WHERE facts_cash.as_of <= excluded.as_of",
    )
    .bind(source)
    .bind(currency)
    .bind(cents)
    .bind(as_of)
    .execute(conn)
    .await
    .map(|_| ())
}

/// The facts for `signal`, as they will stand once it is recorded: read before
/// [`record`], with the signal's own part added here, so that the router can finish its
/// slow work (wording) before its transaction writes anything.
///
/// Every window is the signal's own: a vendor's month is its expense's, and the runway's
/// three months are the full months before the one the signal occurred in. `recorded_at`
/// is when ExecOps recorded the signal, which due dates count from. Nothing here reads the
/// wall clock, so the same signals give the same facts whenever they are processed.
pub async fn look_up(
    conn: &mut PgConnection,
    signal: &Signal,
    recorded_at: DateTime<Utc>,
) -> Result<Facts, sqlx::Error> {
    let mut facts = Facts {
        recorded_at,
        ..Facts::default()
    };
    let signal_month = month_of(signal.occurred_at.date_naive());
    if signal.kind == "expense.recorded" {
        if let Some((vendor, amount, currency, month)) = expense(signal) {
            let mut spend = vendor_spend(conn, &vendor, &currency, month).await?;
            spend.month_to_date_cents += amount;
            facts.vendor_spend = Some(spend);
        }
    }
    if matches!(
        signal.kind.as_str(),
        "expense.recorded" | "balance.updated" | "balance.available"
    ) {
        let currency = str_at(&signal.payload, "/data/currency")
            .or_else(|| str_at(&signal.payload, "/data/object/available/0/currency"))
            .unwrap_or("usd")
            .to_lowercase();
        facts.runway = runway(conn, signal, &currency, signal_month).await?;
    }
    if signal.kind == "deal.propertyChange" {
        let deal = signal
            .payload
            .get("objectId")
            .map(|v| v.to_string())
            .unwrap_or_default();
        facts.deal_amount_cents =
            sqlx::query_scalar("SELECT amount_cents FROM facts_deals WHERE deal_id = $1")
                .bind(deal)
                .fetch_optional(&mut *conn)
                .await?;
    }
    Ok(facts)
}

/// The balance `signal` reports for `currency`, and from which source.
fn reported_cash(signal: &Signal, currency: &str) -> Option<(String, i64)> {
    match (signal.source.as_str(), signal.kind.as_str()) {
        ("stripe", "balance.available") => signal
            .payload
            .pointer("/data/object/available")?
            .as_array()?
            .iter()
            .find(|b| str_at(b, "/currency").is_some_and(|c| c.eq_ignore_ascii_case(currency)))
            .and_then(|b| b.get("amount")?.as_i64())
            .map(|amount| ("stripe".to_string(), amount)),
        (source, "balance.updated") => {
            let data = signal.payload.get("data")?;
            let same = str_at(data, "/currency")
                .unwrap_or("usd")
                .eq_ignore_ascii_case(currency);
            same.then(|| Some((source.to_string(), data.get("amount")?.as_i64()?)))?
        }
        _ => None,
    }
}

fn three_months_before(month: NaiveDate) -> NaiveDate {
    month.checked_sub_months(Months::new(3)).unwrap_or(month)
}

async fn vendor_spend(
    conn: &mut PgConnection,
    vendor: &str,
    currency: &str,
    month: NaiveDate,
) -> Result<VendorSpend, sqlx::Error> {
    let row = sqlx::query(
        "SELECT \
           coalesce(sum(cents) FILTER (WHERE month = $3), 0)::bigint AS this_month, \
           coalesce(sum(cents) FILTER (WHERE month >= $4 AND month < $3), 0)::bigint AS trailing, \
           count(*) FILTER (WHERE month >= $4 AND month < $3 AND cents > 0) AS months \
         FROM facts_vendor_spend WHERE vendor = $1 AND currency = $2",
    )
    .bind(vendor)
    .bind(currency)
    .bind(month)
    .bind(three_months_before(month))
    .fetch_one(conn)
    .await?;
    Ok(VendorSpend {
        month_to_date_cents: row.try_get("this_month")?,
        trailing_average_cents: row.try_get::<i64, _>("trailing")? / 3,
        months_with_history: row.try_get::<i64, _>("months")? as u32,
        currency: currency.to_string(),
        month,
    })
}

async fn runway(
    conn: &mut PgConnection,
    signal: &Signal,
    currency: &str,
    month: NaiveDate,
) -> Result<Option<Runway>, sqlx::Error> {
    let mut balances: Vec<(String, i64, DateTime<Utc>)> =
        sqlx::query_as("SELECT source, cents, as_of FROM facts_cash WHERE currency = $1")
            .bind(currency)
            .fetch_all(&mut *conn)
            .await?;
    if let Some((source, cents)) = reported_cash(signal, currency) {
        match balances.iter_mut().find(|(s, _, _)| *s == source) {
            Some(known) if known.2 <= signal.occurred_at => known.1 = cents,
            Some(_) => {}
            None => balances.push((source, cents, signal.occurred_at)),
        }
    }
    if balances.is_empty() {
        return Ok(None);
    }
    let cash = balances.iter().map(|(_, cents, _)| cents).sum();
    let since = three_months_before(month);
    let mut burn: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(CASE kind WHEN 'spend' THEN cents ELSE -cents END), 0)::bigint \
         FROM facts_monthly WHERE currency = $1 AND month >= $2 AND month < $3",
    )
    .bind(currency)
    .bind(since)
    .bind(month)
    .fetch_one(conn)
    .await?;
    if let Some((_, amount, expense_currency, expense_month)) = expense(signal) {
        if expense_currency == currency && expense_month >= since && expense_month < month {
            burn += amount;
        }
    }
    Ok(Some(Runway {
        cash_cents: cash,
        monthly_net_burn_cents: burn / 3,
        currency: currency.to_string(),
    }))
}
