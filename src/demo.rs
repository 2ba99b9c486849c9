//! `execops demo`: the product with something in it. Serves on the embedded Postgres (or
//! `DATABASE_URL`), makes a demo admin with a fresh password, sends every fixture through
//! the real signed webhook path, and prints where to sign in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use secrecy::SecretString;

use crate::auth::{generate_password, hash_password};
use crate::config::Config;
use crate::domain::user::{Email, UserCommand, UserError};
use crate::domain::Role;
use crate::store::{CommandError, Store};

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
