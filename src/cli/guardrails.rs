//! `execops guardrails`: action types switched off and on, kill switches, rate limits.

use clap::Subcommand;

use super::Opened;
use crate::config::Config;
use crate::store::Metadata;

#[derive(Debug, Subcommand)]
pub(super) enum GuardrailsCli {
    /// Stop drafting proposals of an action type; new drafts of it are recorded as suppressed.
    Disable {
        action_type: String,
        /// Who is doing it (recorded in the audit trail).
        #[arg(long)]
        by: String,
        #[arg(long)]
        reason: String,
    },
    /// Draft proposals of an action type again.
    Enable {
        action_type: String,
        #[arg(long)]
        by: String,
    },
    /// Engage a kill switch: approved proposals it covers wait until it is released.
    Engage {
        /// `global`, `action_type:NAME` (e.g. action_type:email.send) or `adapter:NAME`
        /// (slack, email, stripe, github, webhook).
        scope: String,
        #[arg(long)]
        by: String,
        #[arg(long)]
        reason: String,
    },
    /// Release a kill switch: what waited runs.
    Release {
        scope: String,
        #[arg(long)]
        by: String,
    },
    /// Set the executions an hour allowed for an action type (`default` to go back).
    RateLimit {
        action_type: String,
        per_hour: String,
        #[arg(long)]
        by: String,
    },
    /// Print the guardrails as their stream tells them.
    Show,
}

fn parse_scope(raw: &str) -> anyhow::Result<crate::domain::guardrails::Scope> {
    crate::adapters::parse_scope(raw).ok_or_else(|| {
        anyhow::anyhow!(
            "{raw:?} is not a scope: use global, action_type:NAME or adapter:NAME with a known name"
        )
    })
}

async fn show_guardrails(config: Config) -> anyhow::Result<()> {
    let opened = Opened::open(&config).await?;
    let store = &opened.store;
    let guardrails = store.load_guardrails().await;
    let guardrails = opened.close(guardrails.map_err(Into::into)).await?;
    for (scope, engaged) in guardrails.engaged() {
        println!(
            "kill switch for {scope}: engaged by {} ({})",
            engaged.actor, engaged.reason
        );
    }
    let mut disabled = 0;
    for (action_type, _) in crate::adapters::ACTION_TYPES {
        if let Some(reason) = guardrails.disabled_reason(action_type) {
            disabled += 1;
            println!("{action_type}: disabled ({reason})");
        }
    }
    for (action_type, limit) in guardrails.rate_limits() {
        println!("{action_type}: at most {limit} an hour");
    }
    for (adapter, until) in guardrails.circuits() {
        println!("{adapter}: circuit open, probe from {until}");
    }
    if guardrails.engaged().is_empty() && disabled == 0 {
        println!("no kill switch engaged, every action type enabled");
    }
    Ok(())
}

pub(super) async fn guardrails(config: Config, command: GuardrailsCli) -> anyhow::Result<()> {
    use crate::domain::guardrails::GuardrailsCommand;
    let (command, done) = match command {
        GuardrailsCli::Disable {
            action_type,
            by,
            reason,
        } => (
            GuardrailsCommand::DisableActionType {
                action_type: action_type.clone(),
                actor: by,
                reason,
            },
            format!("{action_type} disabled"),
        ),
        GuardrailsCli::Enable { action_type, by } => (
            GuardrailsCommand::EnableActionType {
                action_type: action_type.clone(),
                actor: by,
            },
            format!("{action_type} enabled"),
        ),
        GuardrailsCli::Engage { scope, by, reason } => {
            let scope = parse_scope(&scope)?;
            let done = format!("kill switch for {scope} engaged");
            (
                GuardrailsCommand::Engage {
                    scope,
                    actor: by,
                    reason,
                },
                done,
            )
        }
        GuardrailsCli::Release { scope, by } => {
            let scope = parse_scope(&scope)?;
            let done = format!("kill switch for {scope} released");
            (GuardrailsCommand::Release { scope, actor: by }, done)
        }
        GuardrailsCli::RateLimit {
            action_type,
            per_hour,
            by,
        } => {
            if crate::adapters::adapter_of(&action_type).is_none() {
                anyhow::bail!("{action_type:?} is not an action type ExecOps executes");
            }
            let per_hour = match per_hour.as_str() {
                "default" => None,
                raw => Some(raw.parse::<u32>().map_err(|_| {
                    anyhow::anyhow!("{raw:?} is not a whole number of executions an hour")
                })?),
            };
            let done = match per_hour {
                Some(n) => format!("{action_type}: at most {n} an hour"),
                None => format!("{action_type}: back to the default rate limit"),
            };
            (
                GuardrailsCommand::SetRateLimit {
                    action_type,
                    per_hour,
                    actor: by,
                },
                done,
            )
        }
        GuardrailsCli::Show => return show_guardrails(config).await,
    };
    let opened = Opened::open(&config).await?;
    let store = &opened.store;
    let metadata = Metadata::via("cli").into();
    let result = store.guardrails(command, metadata).await;
    opened.close(result.map_err(Into::into)).await?;
    println!("{done}");
    Ok(())
}
