//! `execops send FIXTURE`: sign a fixture as its sender would and post it. The sender is told
//! by where the fixture lives (see `fixtures/README.md`); ids a sender puts in headers are
//! derived from the body, so sending a fixture twice is a redelivery.

use std::path::Path;

use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::ingest::{github, hubspot, intercom, slack, standard, stripe};

/// A delivery ready to post: where to, its headers and its body.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(
        "cannot tell the sender of {0}: put it under fixtures/<sender>/ (see fixtures/README.md)"
    )]
    UnknownSender(String),
    #[error("{0} is not set, so {1} deliveries cannot be signed")]
    NoSecret(&'static str, String),
    #[error("reading {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0}")]
    BadSecret(String),
}

/// Which sender a fixture belongs to, from its directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sender {
    Stripe,
    GitHub { event: String },
    SlackEvents,
    SlackCommands,
    SlackInteractions,
    HubSpot,
    Intercom,
    Standard { source: String },
}

pub fn sender_of(path: &Path) -> Option<Sender> {
    let name = path.file_name()?.to_str()?;
    let parent = path.parent()?.file_name()?.to_str()?;
    let grandparent = path
        .parent()?
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    Some(match (grandparent, parent) {
        ("slack", "events") => Sender::SlackEvents,
        ("slack", "commands") => Sender::SlackCommands,
        ("slack", "interactions") => Sender::SlackInteractions,
        ("std", source) => Sender::Standard {
            source: source.to_string(),
        },
        (_, "stripe") => Sender::Stripe,
        (_, "github") => Sender::GitHub {
            event: name.split('.').next()?.to_string(),
        },
        (_, "hubspot") => Sender::HubSpot,
        (_, "intercom") => Sender::Intercom,
        _ => return None,
    })
}

fn body_digest(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// Signs `body` as `sender` would at `now`. `base_url` is where it will be posted, which
/// HubSpot's signature covers unless `EXECOPS_PUBLIC_URL` says otherwise.
pub fn sign(
    sender: &Sender,
    body: Vec<u8>,
    config: &Config,
    base_url: &str,
    now: DateTime<Utc>,
) -> Result<Delivery, SendError> {
    let secrets = &config.webhooks;
    let need = |secret: Option<&secrecy::SecretString>, key: &'static str, who: &str| {
        secret
            .map(|s| s.expose_secret().to_string())
            .ok_or_else(|| SendError::NoSecret(key, who.to_string()))
    };
    let ts = now.timestamp();
    let mut headers = vec![];
    let path = match sender {
        Sender::Stripe => {
            let secret = need(secrets.stripe.as_ref(), "STRIPE_WEBHOOK_SECRET", "stripe")?;
            headers.push((stripe::SIGNATURE.into(), stripe::sign(&secret, ts, &body)));
            "/webhooks/stripe".to_string()
        }
        Sender::GitHub { event } => {
            let secret = need(secrets.github.as_ref(), "GITHUB_WEBHOOK_SECRET", "github")?;
            let delivery = github::body_digest(&body);
            headers.push((github::SIGNATURE.into(), github::sign(&secret, &body)));
            headers.push((github::EVENT.into(), event.clone()));
            headers.push((github::DELIVERY.into(), delivery.to_string()));
            "/webhooks/github".to_string()
        }
        Sender::SlackEvents | Sender::SlackCommands | Sender::SlackInteractions => {
            let secret = need(secrets.slack.as_ref(), "SLACK_SIGNING_SECRET", "slack")?;
            headers.push((slack::TIMESTAMP.into(), ts.to_string()));
            headers.push((slack::SIGNATURE.into(), slack::sign(&secret, ts, &body)));
            match sender {
                Sender::SlackEvents => "/webhooks/slack/events",
                Sender::SlackCommands => "/webhooks/slack/commands",
                _ => "/webhooks/slack/interactions",
            }
            .to_string()
        }
        Sender::HubSpot => {
            let secret = need(secrets.hubspot.as_ref(), "HUBSPOT_CLIENT_SECRET", "hubspot")?;
            let path = "/webhooks/hubspot";
            let base = config.public_url.as_deref().unwrap_or(base_url);
            let uri = format!("{}{path}", base.trim_end_matches('/'));
            let ms = now.timestamp_millis();
            headers.push((hubspot::TIMESTAMP.into(), ms.to_string()));
            headers.push((
                hubspot::SIGNATURE.into(),
                hubspot::sign(&secret, "POST", &uri, &body, ms),
            ));
            path.to_string()
        }
        Sender::Intercom => {
            let secret = need(
                secrets.intercom.as_ref(),
                "INTERCOM_CLIENT_SECRET",
                "intercom",
            )?;
            headers.push((intercom::SIGNATURE.into(), intercom::sign(&secret, &body)));
            "/webhooks/intercom".to_string()
        }
        Sender::Standard { source } => {
            let secret = secrets
                .standard
                .get(source)
                .ok_or_else(|| SendError::NoSecret("EXECOPS_WEBHOOK_SECRETS", source.clone()))?;
            let key =
                standard::decode_secret(secret.expose_secret()).map_err(SendError::BadSecret)?;
            let id = format!("msg_{}", &body_digest(&body)[..24]);
            headers.push((
                standard::SIGNATURE.into(),
                standard::sign(&key, &id, ts, &body),
            ));
            headers.push((standard::ID.into(), id));
            headers.push((standard::TIMESTAMP.into(), ts.to_string()));
            format!("/webhooks/std/{source}")
        }
    };
    let content_type = match sender {
        Sender::SlackCommands | Sender::SlackInteractions => "application/x-www-form-urlencoded",
        _ => "application/json",
    };
    headers.push(("content-type".into(), content_type.into()));
    Ok(Delivery {
        path,
        headers,
        body,
    })
}

/// Reads and signs the fixture at `path`.
pub fn prepare(
    path: &Path,
    config: &Config,
    base_url: &str,
    now: DateTime<Utc>,
) -> Result<Delivery, SendError> {
    let sender =
        sender_of(path).ok_or_else(|| SendError::UnknownSender(path.display().to_string()))?;
    let body = std::fs::read(path).map_err(|e| SendError::Read(path.display().to_string(), e))?;
    sign(&sender, body, config, base_url, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sender_is_told_by_the_fixtures_directory() {
        let cases = [
            ("fixtures/stripe/invoice.paid.json", Some(Sender::Stripe)),
            (
                "fixtures/github/workflow_run.completed.failure.json",
                Some(Sender::GitHub {
                    event: "workflow_run".into(),
                }),
            ),
            (
                "fixtures/slack/events/app_mention.json",
                Some(Sender::SlackEvents),
            ),
            (
                "fixtures/slack/commands/weather.txt",
                Some(Sender::SlackCommands),
            ),
            (
                "fixtures/slack/interactions/block_actions.txt",
                Some(Sender::SlackInteractions),
            ),
            (
                "fixtures/hubspot/contact.creation.json",
                Some(Sender::HubSpot),
            ),
            (
                "fixtures/intercom/conversation.user.created.json",
                Some(Sender::Intercom),
            ),
            (
                "fixtures/std/bank/expense.recorded.json",
                Some(Sender::Standard {
                    source: "bank".into(),
                }),
            ),
            ("elsewhere/thing.json", None),
        ];
        for (path, expected) in cases {
            assert_eq!(sender_of(Path::new(path)), expected, "{path}");
        }
    }
}
