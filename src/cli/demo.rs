//! `execops demo`: the product with something in it. Serves on the embedded Postgres (or
//! `DATABASE_URL`), makes a demo admin with a fresh password, sends every fixture through
//! the real signed webhook path, and prints where to sign in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use secrecy::SecretString;

use crate::auth::{generate_password, hash_password};
use crate::commands::Store;
use crate::config::Config;
use crate::domain::user::{Email, UserCommand, UserError};
use crate::domain::Role;
use crate::store::CommandError;

pub const DEMO_ADMIN: &str = "demo@execops.local";

/// Gives every sender a secret for the demo where none is configured, so every fixture can
/// be signed and verified.
pub fn with_demo_secrets(mut config: Config) -> Config {
    let fresh = || SecretString::from(format!("whsec_demo_{}", uuid::Uuid::new_v4().simple()));
    let secrets = &mut config.webhooks;
    for slot in [
        &mut secrets.stripe,
        &mut secrets.github,
        &mut secrets.slack,
        &mut secrets.hubspot,
        &mut secrets.intercom,
    ] {
        if slot.is_none() {
            *slot = Some(fresh());
        }
    }
    if secrets.standard.is_empty() {
        let key = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            uuid::Uuid::new_v4().as_bytes(),
        );
        secrets.standard = BTreeMap::from([(
            "bank".to_string(),
            SecretString::from(format!("whsec_{key}")),
        )]);
    }
    // HubSpot's signatures cover the URL it called: in the demo, the local one.
    if config.public_url.is_none() {
        config.public_url = Some(format!("http://{}", config.addr));
    }
    config
}

/// Creates the demo admin, or gives it a new password; returns the password.
pub async fn demo_admin(store: &Store) -> anyhow::Result<String> {
    let email = Email::parse(DEMO_ADMIN)?;
    let password = generate_password();
    let password_hash = hash_password(&password).map_err(anyhow::Error::msg)?;
    let added = store
        .user(
            &email,
            UserCommand::Add {
                email: email.clone(),
                role: Role::Admin,
                password_hash: password_hash.clone(),
                by: "demo".into(),
            },
            Default::default(),
        )
        .await;
    match added {
        Ok(()) => {}
        Err(CommandError::Refused(UserError::AlreadyExists)) => {
            store
                .user(
                    &email,
                    UserCommand::SetPassword {
                        password_hash,
                        by: "demo".into(),
                    },
                    Default::default(),
                )
                .await?;
        }
        Err(other) => return Err(other.into()),
    }
    // Print nothing before the password works: wait until sign-in can see it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let known = crate::projections::users::credentials(store.pool(), DEMO_ADMIN).await?;
        if known.is_some_and(|(_, stored)| crate::auth::verify_password(&password, &stored)) {
            return Ok(password);
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the demo admin did not reach the users table within a minute"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Enables the action types that write to the outside world, which a fresh install leaves
/// for an admin to enable: the demo shows them running (or failing for want of a provider's
/// credentials) once approved. Returns those it enabled.
pub async fn enable_writes(store: &Store) -> anyhow::Result<Vec<&'static str>> {
    use crate::domain::guardrails::{needs_opt_in, GuardrailsCommand, GuardrailsError};
    let mut enabled = Vec::new();
    for (action_type, _) in crate::adapters::ACTION_TYPES {
        if !needs_opt_in(action_type) {
            continue;
        }
        let command = GuardrailsCommand::EnableActionType {
            action_type: action_type.to_string(),
            actor: DEMO_ADMIN.into(),
        };
        match store.guardrails(command, Default::default()).await {
            Ok(()) => enabled.push(*action_type),
            Err(CommandError::Refused(GuardrailsError::NotDisabled(_))) => {}
            Err(other) => return Err(other.into()),
        }
    }
    Ok(enabled)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "json" || e == "txt") {
            out.push(path);
        }
    }
    Ok(())
}

/// Sends every fixture under `dir` to `base`; returns how many were taken.
pub async fn send_fixtures(config: &Config, dir: &Path, base: &str) -> anyhow::Result<usize> {
    let mut paths = Vec::new();
    walk(dir, &mut paths).with_context(|| {
        format!(
            "reading {} (run the demo from the repository)",
            dir.display()
        )
    })?;
    paths.sort();
    let client = reqwest::Client::new();
    let mut taken = 0;
    for path in paths {
        let delivery = crate::send::prepare(&path, config, base, chrono::Utc::now())?;
        let mut request = client.post(format!("{base}{}", delivery.path));
        for (name, value) in &delivery.headers {
            request = request.header(name, value);
        }
        let response = request.body(delivery.body).send().await?;
        if response.status().is_success() {
            taken += 1;
        } else {
            tracing::warn!(fixture = %path.display(), status = %response.status(), "a fixture was refused");
        }
    }
    Ok(taken)
}

/// One delivery of the recent history: a fixture with some fields changed.
struct Made {
    fixture: &'static str,
    at: chrono::DateTime<chrono::Utc>,
    change: Box<dyn Fn(&mut serde_json::Value) + Send>,
}

/// A few months of money up to `now`, so that the canvas has recent figures to show: cash
/// in Stripe, subscriptions started, grown and cancelled, invoices paid and failed (one
/// recovered), and the bank feed's expenses, with a jump at one vendor this month and one
/// vendor billed in euros. Returns how many deliveries were taken.
pub async fn send_recent_history(
    config: &Config,
    dir: &Path,
    base: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<usize> {
    use chrono::{Datelike, Months, TimeZone, Utc};
    use serde_json::json;
    let this_month = now.date_naive().with_day(1).unwrap_or(now.date_naive());
    let day = |back: u32, day: u32| {
        let month = this_month
            .checked_sub_months(Months::new(back))
            .unwrap_or(this_month);
        let date = month.with_day(day).unwrap_or(month);
        let at = Utc.from_utc_datetime(&date.and_hms_opt(10, 0, 0).unwrap_or_default());
        at.min(now)
    };
    let mut made: Vec<Made> = Vec::new();
    let stripe = |fixture: &'static str, at, object: serde_json::Value| Made {
        fixture,
        at,
        change: Box::new(move |json| {
            if let (Some(target), Some(fields)) = (
                json.pointer_mut("/data/object")
                    .and_then(|o| o.as_object_mut()),
                object.as_object(),
            ) {
                for (key, value) in fields {
                    target.insert(key.clone(), value.clone());
                }
            }
        }),
    };
    for back in (0..4).rev() {
        for (n, (vendor, usd)) in [
            (
                "Amazon Web Services",
                if back == 0 { 612_000 } else { 480_000 },
            ),
            ("Figma", 45_000),
            ("Google Workspace", 14_400),
            ("Linear", 8_000),
            ("Notion", 9_600),
        ]
        .into_iter()
        .enumerate()
        {
            let date = day(back, 3 + n as u32).date_naive().to_string();
            made.push(Made {
                fixture: "std/bank/expense.recorded.json",
                at: day(back, 3 + n as u32),
                change: Box::new(move |json| {
                    json["data"] = json!({
                        "id": format!("exp_demo_{back}_{n}"), "vendor": vendor,
                        "category": "software", "amount": usd, "currency": "usd",
                        "date": date, "memo": "monthly bill",
                    });
                }),
            });
        }
        let date = day(back, 9).date_naive().to_string();
        made.push(Made {
            fixture: "std/bank/expense.recorded.json",
            at: day(back, 9),
            change: Box::new(move |json| {
                json["data"] = json!({
                    "id": format!("exp_demo_{back}_eur"), "vendor": "Hetzner",
                    "category": "infrastructure", "amount": 90_000, "currency": "eur",
                    "date": date, "memo": "servers",
                });
            }),
        });
        for (customer, amount) in [
            ("cus_demo_1", 49_000),
            ("cus_demo_2", 129_000),
            ("cus_demo_3", 29_900),
        ] {
            made.push(stripe(
                "stripe/invoice.paid.json",
                day(back, 1),
                json!({"id": format!("in_demo_{back}_{customer}"), "customer": customer,
                       "amount_due": amount, "amount_paid": amount, "currency": "usd"}),
            ));
        }
    }
    let subscription = |id: &str, customer: &str, unit: i64, quantity: i64, status: &str| {
        json!({"id": id, "customer": customer, "status": status, "currency": "usd",
               "items": {"object": "list", "data": [{"id": format!("si_{id}"), "quantity": quantity,
                 "price": {"id": "price_demo", "currency": "usd", "unit_amount": unit,
                           "recurring": {"interval": "month", "interval_count": 1}}}]}})
    };
    made.push(stripe(
        "stripe/customer.subscription.created.json",
        day(3, 2),
        subscription("sub_demo_1", "cus_demo_1", 49_000, 1, "active"),
    ));
    made.push(stripe(
        "stripe/customer.subscription.created.json",
        day(3, 2),
        subscription("sub_demo_2", "cus_demo_2", 129_000, 1, "active"),
    ));
    made.push(stripe(
        "stripe/customer.subscription.created.json",
        day(2, 6),
        subscription("sub_demo_3", "cus_demo_3", 29_900, 1, "active"),
    ));
    made.push(stripe(
        "stripe/customer.subscription.updated.json",
        day(1, 12),
        subscription("sub_demo_1", "cus_demo_1", 49_000, 2, "active"),
    ));
    made.push(stripe(
        "stripe/customer.subscription.deleted.json",
        day(0, 2),
        subscription("sub_demo_3", "cus_demo_3", 29_900, 1, "canceled"),
    ));
    made.push(stripe("stripe/invoice.payment_failed.json", day(2, 14), json!({"id": "in_demo_failed_1", "customer": "cus_demo_2", "amount_due": 129_000, "amount_paid": 0, "currency": "usd"})));
    made.push(stripe("stripe/invoice.paid.json", day(2, 18), json!({"id": "in_demo_failed_1", "customer": "cus_demo_2", "amount_due": 129_000, "amount_paid": 129_000, "currency": "usd"})));
    made.push(stripe("stripe/invoice.payment_failed.json", day(1, 20), json!({"id": "in_demo_failed_2", "customer": "cus_demo_3", "amount_due": 29_900, "amount_paid": 0, "currency": "usd"})));
    made.push(stripe("stripe/balance.available.json", day(0, 1), json!({"available": [{"amount": 18_240_000, "currency": "usd", "source_types": {"card": 18_240_000}}]})));
    made.sort_by_key(|m| m.at);

    let client = reqwest::Client::new();
    let mut taken = 0;
    for (n, item) in made.iter().enumerate() {
        let path = dir.join(item.fixture);
        let mut json: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        )?;
        (item.change)(&mut json);
        if item.fixture.starts_with("stripe/") {
            // Stable within the month: running the demo again is a redelivery.
            json["id"] = json!(format!("evt_demo_{}_{n:03}", this_month.format("%Y%m")));
            json["created"] = json!(item.at.timestamp());
        } else {
            json["timestamp"] = json!(item.at.to_rfc3339());
        }
        let sender = crate::send::sender_of(&path)
            .with_context(|| format!("no sender for {}", path.display()))?;
        let delivery = crate::send::sign(&sender, serde_json::to_vec(&json)?, config, base, now)?;
        let mut request = client.post(format!("{base}{}", delivery.path));
        for (name, value) in &delivery.headers {
            request = request.header(name, value);
        }
        let response = request.body(delivery.body).send().await?;
        if response.status().is_success() {
            taken += 1;
        } else {
            tracing::warn!(fixture = item.fixture, status = %response.status(), "a demo delivery was refused");
        }
    }
    Ok(taken)
}
