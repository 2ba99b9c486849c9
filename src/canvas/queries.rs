//! The nine canvas queries over the `canvas_*` projection tables. Each is one function with
//! static SQL: the parameters are bound, never written into the text, so a vendor named
//! `%` matches only a vendor named `%`. Periods are whole UTC days, `from` and `to`
//! inclusive. Money stays in minor units per currency and is never summed across currencies.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, Utc};
use sqlx::PgPool;

use super::{money, Answer, Cell, Chart, ChartKind, Granularity, Params, QueryName, Series};

/// Runs `query` with `params`.
pub async fn run(pool: &PgPool, query: QueryName, params: &Params) -> Result<Answer, sqlx::Error> {
    match query {
        QueryName::Runway => runway(pool, params).await,
        QueryName::Burn => burn(pool, params).await,
        QueryName::Mrr => mrr(pool, params).await,
        QueryName::FailedPayments => failed_payments(pool, params).await,
        QueryName::SpendByVendor => spend_by_vendor(pool, params).await,
        QueryName::ApprovalLatency => approval_latency(pool, params).await,
        QueryName::Precision => precision(pool, params).await,
        QueryName::Outcomes => outcomes(pool, params).await,
        QueryName::ExecutionSuccess => execution_success(pool, params).await,
    }
}

/// Midnight UTC at the start of `day`.
fn start_of(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
}

/// Midnight UTC after `day`: the exclusive end of a period ending on `day`.
fn end_of(day: NaiveDate) -> DateTime<Utc> {
    start_of(day.checked_add_days(Days::new(1)).unwrap_or(day))
}

fn first_of_month(day: NaiveDate) -> NaiveDate {
    day.with_day(1).unwrap_or(day)
}

/// One period of a series: its label, first and last day (clipped to the parameters).
#[derive(Clone, Debug, PartialEq)]
struct Period {
    label: String,
    start: NaiveDate,
    stop: NaiveDate,
}

/// The periods `from..=to` is cut into: calendar days, ISO weeks (Monday first) or
/// calendar months, the first and last clipped to the range.
fn periods(from: NaiveDate, to: NaiveDate, granularity: Granularity) -> Vec<Period> {
    let mut out = Vec::new();
    let mut start = match granularity {
        Granularity::Day => from,
        Granularity::Week => from - Days::new(u64::from(from.weekday().num_days_from_monday())),
        Granularity::Month => first_of_month(from),
    };
    while start <= to {
        let next = match granularity {
            Granularity::Day => start + Days::new(1),
            Granularity::Week => start + Days::new(7),
            Granularity::Month => start + Months::new(1),
        };
        let label = match granularity {
            Granularity::Month => start.format("%Y-%m").to_string(),
            _ => start.max(from).to_string(),
        };
        out.push(Period {
            label,
            start: start.max(from),
            stop: (next - Days::new(1)).min(to),
        });
        start = next;
    }
    out
}

/// The index of the period `day` falls in; periods are in order and do not overlap.
fn period_of(periods: &[Period], day: NaiveDate) -> Option<usize> {
    let n = periods.partition_point(|p| p.stop < day);
    periods.get(n).filter(|p| p.start <= day).map(|_| n)
}

fn text(value: impl Into<String>) -> Cell {
    Cell::Text {
        value: value.into(),
    }
}

fn cash(minor: i64, currency: &str) -> Cell {
    Cell::Money {
        minor,
        currency: currency.to_string(),
    }
}

/// `part / whole` in basis points, rounded down; `None` when `whole` is zero.
fn share(part: i64, whole: i64) -> Option<i64> {
    (whole != 0).then(|| part.saturating_mul(10_000) / whole)
}

fn answer(query: QueryName, params: &Params, title: String, columns: &[&str]) -> Answer {
    Answer {
        query,
        params: params.clone(),
        title,
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows: vec![],
        chart: None,
        notes: vec![],
    }
}

fn period_title(params: &Params) -> String {
    format!("{} to {}", params.from, params.to)
}

/// Money in and out of one currency over one period.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Flows {
    spend: i64,
    revenue: i64,
    refunds: i64,
}

impl Flows {
    /// Spend plus refunds, less revenue: positive when more went out than came in.
    fn net_outflow(self) -> i64 {
        self.spend + self.refunds - self.revenue
    }
}

/// Flows per (period index, currency). Spend is the `expense.recorded` feed by the
/// expense's date; revenue is invoices paid plus charges succeeded that name no invoice
/// (a charge that names one is already counted by its invoice); refunds are a charge's
/// cumulative `amount_refunded` as last reported, on the day of that report. Payouts move
/// money from Stripe to the bank and are neither.
async fn flows(
    pool: &PgPool,
    periods: &[Period],
    currency: Option<&str>,
) -> Result<BTreeMap<(usize, String), Flows>, sqlx::Error> {
    let (Some(first), Some(last)) = (periods.first(), periods.last()) else {
        return Ok(BTreeMap::new());
    };
    let rows: Vec<(NaiveDate, String, i64, i64, i64)> = sqlx::query_as(
        "SELECT day, currency, spend, revenue, refunds FROM canvas_daily_flows \
         WHERE day BETWEEN $1 AND $2 AND ($3::text IS NULL OR currency = $3)",
    )
    .bind(first.start)
    .bind(last.stop)
    .bind(currency)
    .fetch_all(pool)
    .await?;
    let mut flows: BTreeMap<(usize, String), Flows> = BTreeMap::new();
    for (day, currency, spend, revenue, refunds) in rows {
        let Some(n) = period_of(periods, day) else {
            continue;
        };
        let f = flows.entry((n, currency)).or_default();
        f.spend += spend;
        f.revenue += revenue;
        f.refunds += refunds;
    }
    Ok(flows)
}

/// Monthly burn: per period of the granularity and per currency, money out (spend),
/// money in (invoices paid, charges succeeded outside invoices), refunds, and the net
/// outflow `spend + refunds − revenue`. Payouts are not spend: they move the company's own
/// money from Stripe to its bank. A currency with no flow in a period shows zeros there.
pub async fn burn(pool: &PgPool, params: &Params) -> Result<Answer, sqlx::Error> {
    let periods = periods(params.from, params.to, params.granularity);
    let flows = flows(pool, &periods, params.currency.as_deref()).await?;
    let mut out = answer(
        QueryName::Burn,
        params,
        format!(
            "Burn by {}, {}",
            params.granularity.as_str(),
            period_title(params)
        ),
        &[
            "period",
            "currency",
            "spend",
            "revenue",
            "refunds",
            "net outflow",
        ],
    );
    let currencies: Vec<String> = {
        let mut c: Vec<String> = flows.keys().map(|(_, c)| c.clone()).collect();
        c.sort();
        c.dedup();
        c
    };
    let mut series = vec![];
    for currency in &currencies {
        let mut values = vec![];
        for (i, period) in periods.iter().enumerate() {
            let f = flows
                .get(&(i, currency.clone()))
                .copied()
                .unwrap_or_default();
            values.push(f.net_outflow());
            out.rows.push(vec![
                text(period.label.clone()),
                text(currency.clone()),
                cash(f.spend, currency),
                cash(f.revenue, currency),
                cash(f.refunds, currency),
                cash(f.net_outflow(), currency),
            ]);
        }
        series.push(Series {
            label: format!("net outflow {}", currency.to_ascii_uppercase()),
            values,
        });
    }
    if currencies.is_empty() {
        out.notes
            .push("no spend, revenue or refunds recorded in the period".into());
    } else {
        out.chart = Some(Chart {
            kind: ChartKind::Line,
            unit: currencies.join("/").to_ascii_uppercase(),
            x: periods.iter().map(|p| p.label.clone()).collect(),
            series,
        });
    }
    out.notes.push(
        "payouts are not counted: they move money from Stripe to the bank, they do not spend it"
            .into(),
    );
    Ok(out)
}

/// Runway per currency. Cash is, for each source (Stripe's `balance.available`, a bank's
/// `balance.updated`), the latest balance reported at or before the end of `to`, summed
/// over the sources. Net burn is the average monthly net outflow (as in [`burn`]) over the
/// three whole calendar months before `to`'s month, rounded toward zero. Months of runway are
/// `cash / burn` in tenths, rounded down; when the currency is not burning (net burn zero or
/// less) a note says so and no months are given.
pub async fn runway(pool: &PgPool, params: &Params) -> Result<Answer, sqlx::Error> {
    let mut out = answer(
        QueryName::Runway,
        params,
        format!("Runway as of {}", params.to),
        &["currency", "cash", "monthly net burn", "months of runway"],
    );
    let balances: Vec<(String, String, i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT DISTINCT ON (source, currency) source, currency, amount, occurred_at \
         FROM canvas_balances WHERE occurred_at < $1 AND ($2::text IS NULL OR currency = $2) \
         ORDER BY source, currency, occurred_at DESC, inbound_id DESC",
    )
    .bind(end_of(params.to))
    .bind(params.currency.as_deref())
    .fetch_all(pool)
    .await?;
    let month = first_of_month(params.to);
    let months: Vec<Period> = (1..=3)
        .rev()
        .map(|back| {
            let start = month - Months::new(back);
            Period {
                label: start.format("%Y-%m").to_string(),
                start,
                stop: start + Months::new(1) - Days::new(1),
            }
        })
        .collect();
    let flows = flows(pool, &months, params.currency.as_deref()).await?;
    let mut cash_by: BTreeMap<String, i64> = BTreeMap::new();
    for (source, currency, amount, at) in &balances {
        *cash_by.entry(currency.clone()).or_default() += amount;
        out.notes.push(format!(
            "cash: {} from {source} on {}",
            money(*amount, currency),
            at.date_naive()
        ));
    }
    let mut burn_by: BTreeMap<String, i64> = BTreeMap::new();
    for ((_, currency), f) in &flows {
        *burn_by.entry(currency.clone()).or_default() += f.net_outflow();
    }
    let mut currencies: Vec<String> = cash_by.keys().chain(burn_by.keys()).cloned().collect();
    currencies.sort();
    currencies.dedup();
    let window = format!("{} to {}", months[0].start, months[2].stop);
    let mut bars = vec![];
    for currency in &currencies {
        let total = burn_by.get(currency).copied().unwrap_or(0);
        let burn = total / 3;
        out.notes.push(format!(
            "net burn {}: {} over {window}, {} a month",
            currency.to_ascii_uppercase(),
            money(total, currency),
            money(burn, currency)
        ));
        let Some(cash_now) = cash_by.get(currency).copied() else {
            out.notes.push(format!(
                "no balance recorded in {currency} by {}",
                params.to
            ));
            out.rows.push(vec![
                text(currency.clone()),
                Cell::Empty,
                cash(burn, currency),
                Cell::Empty,
            ]);
            bars.push(0);
            continue;
        };
        let months_left = if burn > 0 {
            let tenths = cash_now.saturating_mul(10) / burn;
            bars.push(tenths);
            Cell::Tenths { value: tenths }
        } else {
            out.notes.push(format!(
                "not burning in {currency}: net inflow of {} a month over {window}",
                money(-burn, currency)
            ));
            bars.push(0);
            Cell::Empty
        };
        out.rows.push(vec![
            text(currency.clone()),
            cash(cash_now, currency),
            cash(burn, currency),
            months_left,
        ]);
    }
    if currencies.is_empty() {
        out.notes
            .push("no balance and no spend or revenue recorded".into());
    } else {
        out.chart = Some(Chart {
            kind: ChartKind::Bar,
            unit: "tenths of a month".into(),
            x: currencies.iter().map(|c| c.to_ascii_uppercase()).collect(),
            series: vec![Series {
                label: "months of runway".into(),
                values: bars,
            }],
        });
    }
    Ok(out)
}

/// MRR per period and currency: the MRR at the period's end (each subscription's MRR after
/// its last change before the end, summed), and the movements during the period: `new`
/// (from nothing), `expansion` (up), `contraction` (down, not to nothing), `churn` (to
/// nothing). A subscription's MRR is its items' `unit_amount × quantity` normalised to a
/// month (a year ÷ 12), counted while it is `active` or `past_due`. So
/// `end = previous end + new + expansion − contraction − churn`.
pub async fn mrr(pool: &PgPool, params: &Params) -> Result<Answer, sqlx::Error> {
    let periods = periods(params.from, params.to, params.granularity);
    // The MRR at a day's end is every movement's `after - before` summed up to it.
    let rows: Vec<(NaiveDate, String, i64, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT $1::date - 1, currency, sum(net)::bigint, 0::bigint, 0::bigint, 0::bigint, \
           0::bigint \
         FROM canvas_daily_mrr WHERE day < $1 AND ($3::text IS NULL OR currency = $3) \
         GROUP BY currency \
         UNION ALL \
         SELECT day, currency, net, new, expansion, contraction, churn FROM canvas_daily_mrr \
         WHERE day BETWEEN $1 AND $2 AND ($3::text IS NULL OR currency = $3) \
         ORDER BY 1",
    )
    .bind(params.from)
    .bind(params.to)
    .bind(params.currency.as_deref())
    .fetch_all(pool)
    .await?;
    let mut running: BTreeMap<String, i64> = BTreeMap::new();
    let mut opening: BTreeMap<String, i64> = BTreeMap::new();
    let mut by: BTreeMap<(String, i64), [i64; 5]> = BTreeMap::new();
    for (day, currency, net, new, expansion, contraction, churn) in rows {
        let mrr = running.entry(currency.clone()).or_default();
        *mrr += net;
        let Some(n) = period_of(&periods, day) else {
            opening.insert(currency, *mrr);
            continue;
        };
        let v = by.entry((currency, n as i64 + 1)).or_default();
        v[0] = *mrr;
        v[1] += new;
        v[2] += expansion;
        v[3] += contraction;
        v[4] += churn;
    }
    let mut out = answer(
        QueryName::Mrr,
        params,
        format!(
            "MRR by {}, {}",
            params.granularity.as_str(),
            period_title(params)
        ),
        &[
            "period",
            "currency",
            "MRR at end",
            "new",
            "expansion",
            "contraction",
            "churn",
        ],
    );
    let currencies: Vec<String> = running.keys().cloned().collect();
    let mut series = vec![];
    for currency in &currencies {
        let mut values = vec![];
        // A period without movements ends where the one before it ended.
        let mut end = opening.get(currency).copied().unwrap_or(0);
        for (i, period) in periods.iter().enumerate() {
            let v = match by.get(&(currency.clone(), i as i64 + 1)) {
                Some(v) => {
                    end = v[0];
                    *v
                }
                None => [end, 0, 0, 0, 0],
            };
            values.push(v[0]);
            let mut row = vec![text(period.label.clone()), text(currency.clone())];
            row.extend(v.iter().map(|m| cash(*m, currency)));
            out.rows.push(row);
        }
        series.push(Series {
            label: format!("MRR {}", currency.to_ascii_uppercase()),
            values,
        });
    }
    if currencies.is_empty() {
        out.notes.push("no subscriptions recorded".into());
    } else {
        out.chart = Some(Chart {
            kind: ChartKind::Line,
            unit: currencies.join("/").to_ascii_uppercase(),
            x: periods.iter().map(|p| p.label.clone()).collect(),
            series,
        });
    }
    Ok(out)
}

/// First failure, customer, invoice, amount due, currency, recovered.
type FailedRow = (DateTime<Utc>, Option<String>, String, i64, String, bool);

/// Invoices whose first failed payment falls in the period, the `top` most recent of them
/// listed oldest first: when, the customer, the invoice, the amount due and whether it was
/// recovered (the same invoice was paid after it failed, at any time since). Notes give,
/// over every failure in the period, per currency, the count, the amount, and the share of
/// that amount recovered.
pub async fn failed_payments(pool: &PgPool, params: &Params) -> Result<Answer, sqlx::Error> {
    // The totals over every failure; the list only the `top` most recent, oldest first.
    let sums: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT currency, count(*), sum(amount)::bigint, \
                count(*) FILTER (WHERE paid_at IS NOT NULL), \
                coalesce(sum(amount) FILTER (WHERE paid_at IS NOT NULL), 0)::bigint \
         FROM canvas_failed_invoices \
         WHERE first_failed_at >= $1 AND first_failed_at < $2 \
           AND ($3::text IS NULL OR currency = $3) \
         GROUP BY currency ORDER BY currency",
    )
    .bind(start_of(params.from))
    .bind(end_of(params.to))
    .bind(params.currency.as_deref())
    .fetch_all(pool)
    .await?;
    let mut rows: Vec<FailedRow> = sqlx::query_as(
        "SELECT first_failed_at, customer, invoice_id, amount, currency, paid_at IS NOT NULL \
         FROM canvas_failed_invoices \
         WHERE first_failed_at >= $1 AND first_failed_at < $2 \
           AND ($3::text IS NULL OR currency = $3) \
         ORDER BY first_failed_at DESC, invoice_id DESC LIMIT $4",
    )
    .bind(start_of(params.from))
    .bind(end_of(params.to))
    .bind(params.currency.as_deref())
    .bind(i64::from(params.top))
    .fetch_all(pool)
    .await?;
    rows.reverse();
    let mut out = answer(
        QueryName::FailedPayments,
        params,
        format!("Failed payments, {}", period_title(params)),
        &[
            "date",
            "customer",
            "invoice",
            "amount",
            "currency",
            "recovered",
        ],
    );
    let listed = rows.len() as i64;
    for (at, customer, invoice, amount, currency, recovered) in rows {
        out.rows.push(vec![
            Cell::Date {
                value: at.date_naive(),
            },
            customer.map(text).unwrap_or(Cell::Empty),
            text(invoice),
            cash(amount, &currency),
            text(currency),
            text(if recovered { "yes" } else { "no" }),
        ]);
    }
    let all: i64 = sums.iter().map(|s| s.1).sum();
    if all > listed {
        out.notes.push(format!(
            "the {listed} most recent of {all} failed payments are listed (top {})",
            params.top
        ));
    }
    let totals: BTreeMap<String, (i64, i64, i64, i64)> = sums
        .into_iter()
        .map(|(currency, count, amount, recovered_count, recovered)| {
            (currency, (count, amount, recovered_count, recovered))
        })
        .collect();
    let mut bars = (vec![], vec![]);
    for (currency, (count, amount, recovered_count, recovered)) in &totals {
        let pct = share(*recovered, *amount)
            .map(|bp| Cell::Percent { basis_points: bp }.display())
            .unwrap_or_else(|| "n/a".into());
        out.notes.push(format!(
            "{}: {count} failed, {}; {recovered_count} recovered, {} ({pct} of the amount)",
            currency.to_ascii_uppercase(),
            money(*amount, currency),
            money(*recovered, currency),
        ));
        bars.0.push(currency.to_ascii_uppercase());
        bars.1.push(share(*recovered, *amount).unwrap_or(0));
    }
    if totals.is_empty() {
        out.notes.push("no failed payments in the period".into());
    } else {
        out.chart = Some(Chart {
            kind: ChartKind::Bar,
            unit: "%".into(),
            x: bars.0,
            series: vec![Series {
                label: "share recovered".into(),
                values: bars.1,
            }],
        });
    }
    Ok(out)
}

/// Spend per vendor and currency in the period (expenses by their own date), the top N of
/// each currency by amount, against the vendor's average month over the three whole
/// calendar months before `from`'s month (their total ÷ 3, rounded down). Variance is
/// `(spend − average) ÷ average` in basis points; none when the vendor had no spend before.
/// It compares the period's total with one month, so it is like for like for a one-month
/// period. Vendors are grouped and matched case-insensitively; `vendor` narrows to exactly
/// that name (no patterns).
pub async fn spend_by_vendor(pool: &PgPool, params: &Params) -> Result<Answer, sqlx::Error> {
    let before = first_of_month(params.from);
    let trailing = before - Months::new(3);
    let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "WITH cur AS ( \
           SELECT vendor_key AS key, min(vendor) AS vendor, currency, \
             sum(amount)::bigint AS amount \
           FROM canvas_daily_vendor_spend \
           WHERE day BETWEEN $1 AND $2 AND ($3::text IS NULL OR currency = $3) \
             AND ($4::text IS NULL OR vendor_key = lower($4)) \
           GROUP BY vendor_key, currency), \
         prior AS ( \
           SELECT vendor_key AS key, currency, sum(amount)::bigint AS amount \
           FROM canvas_daily_vendor_spend WHERE day >= $5 AND day < $6 \
           GROUP BY vendor_key, currency), \
         ranked AS ( \
           SELECT cur.vendor, cur.currency, cur.amount, coalesce(prior.amount, 0) AS prior, \
             row_number() OVER (PARTITION BY cur.currency ORDER BY cur.amount DESC, cur.key) AS rank \
           FROM cur LEFT JOIN prior ON prior.key = cur.key AND prior.currency = cur.currency) \
         SELECT vendor, currency, amount, prior FROM ranked WHERE rank <= $7 \
         ORDER BY currency, rank",
    )
    .bind(params.from)
    .bind(params.to)
    .bind(params.currency.as_deref())
    .bind(params.vendor.as_deref())
    .bind(trailing)
    .bind(before)
    .bind(i64::from(params.top))
    .fetch_all(pool)
    .await?;
    let mut out = answer(
        QueryName::SpendByVendor,
        params,
        format!("Spend by vendor, {}", period_title(params)),
        &[
            "vendor",
            "currency",
            "spend",
            "trailing monthly average",
            "variance",
        ],
    );
    out.notes.push(format!(
        "trailing average: {} to {}, total ÷ 3",
        trailing,
        before - Days::new(1)
    ));
    let mut chart = Chart {
        kind: ChartKind::Bar,
        unit: String::new(),
        x: vec![],
        series: vec![Series {
            label: "spend".into(),
            values: vec![],
        }],
    };
    let mut units: Vec<String> = vec![];
    for (vendor, currency, amount, prior) in rows {
        let average = prior / 3;
        let variance = share(amount - average, average)
            .map(|bp| Cell::Percent { basis_points: bp })
            .unwrap_or(Cell::Empty);
        if average == 0 {
            out.notes.push(format!(
                "{vendor}: no spend in {currency} in the trailing months"
            ));
        }
        chart
            .x
            .push(format!("{vendor} ({})", currency.to_ascii_uppercase()));
        chart.series[0].values.push(amount);
        units.push(currency.to_ascii_uppercase());
        out.rows.push(vec![
            text(vendor),
            text(currency.clone()),
            cash(amount, &currency),
            cash(average, &currency),
            variance,
        ]);
    }
    if out.rows.is_empty() {
        out.notes.push(match &params.vendor {
            Some(vendor) => format!("no spend with {vendor:?} in the period"),
            None => "no spend recorded in the period".into(),
        });
    } else {
        units.dedup();
        chart.unit = units.join("/");
        out.chart = Some(chart);
    }
    Ok(out)
}

/// Per action type, the proposals decided (approved or rejected) in the period: how many,
/// and the p50 and p90 of the seconds from draft to decision (whole seconds, rounded down;
/// nearest rank: the smallest time at least that share of decisions took no longer than).
/// Times are when the draft and the decision were recorded in the log.
pub async fn approval_latency(pool: &PgPool, params: &Params) -> Result<Answer, sqlx::Error> {
    let counts: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT action_type, seconds, sum(approved + rejected)::bigint \
         FROM canvas_daily_decisions WHERE day BETWEEN $1 AND $2 \
         GROUP BY action_type, seconds ORDER BY action_type, seconds",
    )
    .bind(params.from)
    .bind(params.to)
    .fetch_all(pool)
    .await?;
    let mut latencies: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    for (action_type, seconds, decided) in counts {
        latencies
            .entry(action_type)
            .or_default()
            .push((seconds, decided));
    }
    let rows = latencies.into_iter().map(|(action_type, histogram)| {
        let decided = histogram.iter().map(|(_, n)| n).sum();
        (
            action_type,
            decided,
            nearest_rank(&histogram, decided, 50),
            nearest_rank(&histogram, decided, 90),
        )
    });
    let mut out = answer(
        QueryName::ApprovalLatency,
        params,
        format!("Time to decision, {}", period_title(params)),
        &["action type", "decided", "p50", "p90"],
    );
    let mut chart = Chart {
        kind: ChartKind::Bar,
        unit: "seconds".into(),
        x: vec![],
        series: vec![
            Series {
                label: "p50".into(),
                values: vec![],
            },
            Series {
                label: "p90".into(),
                values: vec![],
            },
        ],
    };
    for (action_type, decided, p50, p90) in rows {
        chart.x.push(action_type.clone());
        chart.series[0].values.push(p50);
        chart.series[1].values.push(p90);
        out.rows.push(vec![
            text(action_type),
            Cell::Count { value: decided },
            Cell::Seconds { value: p50 },
            Cell::Seconds { value: p90 },
        ]);
    }
    if out.rows.is_empty() {
        out.notes.push("no proposal decided in the period".into());
    } else {
        out.chart = Some(chart);
    }
    Ok(out)
}

/// The smallest value that at least `percent` of `total` observations do not exceed, from
/// (value, count) pairs in ascending order of value: `percentile_disc`.
fn nearest_rank(histogram: &[(i64, i64)], total: i64, percent: i64) -> i64 {
    let mut seen = 0;
    for (value, count) in histogram {
        seen += count;
        if seen * 100 >= total * percent {
            return *value;
        }
    }
    histogram.last().map(|(value, _)| *value).unwrap_or(0)
}

/// Per action type, the proposals decided in the period: approved, rejected, and the share
/// approved (basis points, rounded down). Expired and superseded proposals were never
/// decided and are left out.
pub async fn precision(pool: &PgPool, params: &Params) -> Result<Answer, sqlx::Error> {
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT action_type, sum(approved)::bigint, sum(rejected)::bigint \
         FROM canvas_daily_decisions WHERE day BETWEEN $1 AND $2 \
         GROUP BY action_type ORDER BY action_type",
    )
    .bind(params.from)
    .bind(params.to)
    .fetch_all(pool)
    .await?;
    let mut out = answer(
        QueryName::Precision,
        params,
        format!("Share approved, {}", period_title(params)),
        &["action type", "approved", "rejected", "share approved"],
    );
    let mut chart = Chart {
        kind: ChartKind::Bar,
        unit: "%".into(),
        x: vec![],
        series: vec![Series {
            label: "share approved".into(),
            values: vec![],
        }],
    };
    for (action_type, approved, rejected) in rows {
        let bp = share(approved, approved + rejected).unwrap_or(0);
        chart.x.push(action_type.clone());
        chart.series[0].values.push(bp);
        out.rows.push(vec![
            text(action_type),
            Cell::Count { value: approved },
            Cell::Count { value: rejected },
            Cell::Percent { basis_points: bp },
        ]);
    }
    if out.rows.is_empty() {
        out.notes.push("no proposal decided in the period".into());
    } else {
        out.chart = Some(chart);
    }
    Ok(out)
}

/// Action type, kind, currency if known, count, total value.
type OutcomeRow = (String, String, Option<String>, i64, Option<i64>);

/// Per action type, outcome kind and currency, the outcomes recorded in the period: how
/// many, and their total value. `OutcomeRecorded` carries a value but no currency: it is
/// taken from the signal that showed the outcome (its `caused_by`, e.g. the invoice paid),
/// else from the money signals the proposal was drafted from; when neither names one the
/// currency is `unknown` and the value is shown as bare minor units, never as money.
pub async fn outcomes(pool: &PgPool, params: &Params) -> Result<Answer, sqlx::Error> {
    let rows: Vec<OutcomeRow> = sqlx::query_as(
        "SELECT action_type, kind, nullif(currency, ''), sum(outcomes)::bigint, \
           sum(value)::bigint \
         FROM canvas_daily_outcomes \
         WHERE day BETWEEN $1 AND $2 AND ($3::text IS NULL OR currency = $3) \
         GROUP BY action_type, kind, currency \
         ORDER BY action_type, kind, nullif(currency, '') NULLS LAST",
    )
    .bind(params.from)
    .bind(params.to)
    .bind(params.currency.as_deref())
    .fetch_all(pool)
    .await?;
    let mut out = answer(
        QueryName::Outcomes,
        params,
        format!("Outcomes, {}", period_title(params)),
        &["action type", "kind", "currency", "outcomes", "value"],
    );
    for (action_type, kind, currency, count, value) in rows {
        let value = match (value, &currency) {
            (None, _) => Cell::Empty,
            (Some(v), Some(c)) => cash(v, c),
            (Some(v), None) => {
                out.notes.push(format!(
                    "{action_type} {kind}: {v} minor units in an unknown currency"
                ));
                text(format!("{v} (currency unknown)"))
            }
        };
        out.rows.push(vec![
            text(action_type),
            text(kind),
            text(currency.unwrap_or_else(|| "unknown".into())),
            Cell::Count { value: count },
            value,
        ]);
    }
    if out.rows.is_empty() {
        out.notes.push("no outcome recorded in the period".into());
    }
    if params.currency.is_some() {
        out.notes
            .push("outcomes of unknown currency are left out when a currency is chosen".into());
    }
    Ok(out)
}

/// Per adapter (the action type's prefix: `slack`, `email`, `stripe`, `github`, `webhook`),
/// the execution attempts that ended in the period: succeeded, failed, uncertain, and the
/// share succeeded (basis points, rounded down). A retried proposal counts every attempt; an
/// uncertain attempt that a person then marked done counts as succeeded.
pub async fn execution_success(pool: &PgPool, params: &Params) -> Result<Answer, sqlx::Error> {
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT adapter, sum(succeeded)::bigint, sum(failed)::bigint, sum(uncertain)::bigint \
         FROM canvas_daily_executions WHERE day BETWEEN $1 AND $2 \
         GROUP BY adapter ORDER BY adapter",
    )
    .bind(params.from)
    .bind(params.to)
    .fetch_all(pool)
    .await?;
    let mut out = answer(
        QueryName::ExecutionSuccess,
        params,
        format!("Executions, {}", period_title(params)),
        &[
            "adapter",
            "succeeded",
            "failed",
            "uncertain",
            "success share",
        ],
    );
    let mut chart = Chart {
        kind: ChartKind::Bar,
        unit: "%".into(),
        x: vec![],
        series: vec![Series {
            label: "success share".into(),
            values: vec![],
        }],
    };
    for (adapter, succeeded, failed, uncertain) in rows {
        let bp = share(succeeded, succeeded + failed + uncertain).unwrap_or(0);
        chart.x.push(adapter.clone());
        chart.series[0].values.push(bp);
        out.rows.push(vec![
            text(adapter),
            Cell::Count { value: succeeded },
            Cell::Count { value: failed },
            Cell::Count { value: uncertain },
            Cell::Percent { basis_points: bp },
        ]);
    }
    if out.rows.is_empty() {
        out.notes.push("no execution ended in the period".into());
    } else {
        out.chart = Some(chart);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_default()
    }

    #[test]
    fn canvas_periods_are_calendar_months_clipped_to_the_range() {
        let cut = periods(day("2026-09-15"), day("2026-11-03"), Granularity::Month);
        let spans: Vec<(String, NaiveDate, NaiveDate)> = cut
            .into_iter()
            .map(|p| (p.label, p.start, p.stop))
            .collect();
        assert_eq!(
            spans,
            vec![
                ("2026-09".into(), day("2026-09-15"), day("2026-09-30")),
                ("2026-10".into(), day("2026-10-01"), day("2026-10-31")),
                ("2026-11".into(), day("2026-11-01"), day("2026-11-03")),
            ]
        );
    }

    #[test]
    fn canvas_weeks_start_on_monday() {
        // 2026-11-04 is a Wednesday.
        let cut = periods(day("2026-11-04"), day("2026-11-10"), Granularity::Week);
        let spans: Vec<(NaiveDate, NaiveDate)> = cut.iter().map(|p| (p.start, p.stop)).collect();
        assert_eq!(
            spans,
            vec![
                (day("2026-11-04"), day("2026-11-08")),
                (day("2026-11-09"), day("2026-11-10")),
            ]
        );
    }

    #[test]
    fn canvas_net_outflow_counts_refunds_as_money_out() {
        let f = Flows {
            spend: 1000,
            revenue: 300,
            refunds: 50,
        };
        assert_eq!(f.net_outflow(), 750);
        assert_eq!(share(1, 3), Some(3333));
        assert_eq!(share(1, 0), None);
    }
}
