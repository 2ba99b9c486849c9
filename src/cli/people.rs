//! `execops user` and `execops token`: the people who may sign in, and their API tokens.
//! Each command returns once the users read model has applied it, so what it prints holds on
//! the next request.

use clap::Subcommand;

use super::Opened;
use crate::config::Config;
use crate::store::Metadata;

#[derive(Debug, Subcommand)]
pub(super) enum UserCli {
    /// Add a person. Without --password-stdin a password is generated and printed once.
    Add {
        email: String,
        #[arg(long, value_parser = ["admin", "approver", "viewer"])]
        role: String,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Say which Slack member a person is (their member id, `U…`, from "Copy member ID" in
    /// their Slack profile), so their Approve and Reject clicks in Slack count as theirs.
    LinkSlack {
        email: String,
        slack_user_id: String,
    },
    /// Forget a person's Slack member: their clicks in Slack are refused again.
    UnlinkSlack { email: String },
    /// Everyone, with role, status, Slack member, live tokens and newest session.
    List {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Change a person's role; it holds from their next request. The last admin stays one.
    SetRole {
        email: String,
        #[arg(value_parser = ["admin", "approver", "viewer"])]
        role: String,
    },
    /// Refuse a person everything from their next request: sign-in, sessions (ended now),
    /// tokens, Slack clicks and email links. Their past decisions stay. Not the last admin.
    Disable { email: String },
    /// Let a disabled person back in (with their old password and tokens).
    Enable { email: String },
    /// Invite someone new: a single-use sign-up link, valid 7 days, emailed when SMTP_URL
    /// is set and printed either way.
    Invite {
        email: String,
        #[arg(long, value_parser = ["admin", "approver", "viewer"])]
        role: String,
    },
    /// A single-use link to choose a new password, valid 2 hours, emailed when SMTP_URL is
    /// set and printed either way. Their sessions end when it is used.
    ResetPassword { email: String },
}

#[derive(Debug, Subcommand)]
pub(super) enum TokenCli {
    /// Issue an API token for a person; it is printed once and stored only as a hash.
    Create { email: String },
    /// Revoke a token by its id (the part between `eo_` and the next `_`).
    Revoke { email: String, token_id: String },
    /// A person's tokens: id, when issued, when revoked. Never a secret.
    List { email: String },
}

pub(super) async fn user(config: Config, command: UserCli) -> anyhow::Result<()> {
    match command {
        UserCli::Add {
            email,
            role,
            password_stdin,
        } => add_user(config, &email, &role, password_stdin).await,
        UserCli::LinkSlack {
            email,
            slack_user_id,
        } => link_slack(config, &email, Some(&slack_user_id)).await,
        UserCli::UnlinkSlack { email } => link_slack(config, &email, None).await,
        UserCli::List { json } => list(config, json).await,
        UserCli::SetRole { email, role } => set_role(config, &email, &role).await,
        UserCli::Disable { email } => {
            let email = crate::domain::user::Email::parse(&email)?;
            let command = crate::domain::user::UserCommand::Disable { by: "cli".into() };
            change(&config, &email, command).await?;
            println!("{email} disabled; their sessions are ended");
            Ok(())
        }
        UserCli::Invite { email, role } => {
            let role: crate::domain::Role =
                serde_json::from_value(serde_json::Value::String(role))?;
            send_link(
                &config,
                &email,
                crate::commands::people::Purpose::Invite(role),
            )
            .await
        }
        UserCli::ResetPassword { email } => {
            send_link(&config, &email, crate::commands::people::Purpose::Reset).await
        }
        UserCli::Enable { email } => {
            let email = crate::domain::user::Email::parse(&email)?;
            let command = crate::domain::user::UserCommand::Enable { by: "cli".into() };
            change(&config, &email, command).await?;
            println!("{email} enabled");
            Ok(())
        }
    }
}

pub(super) async fn token(config: Config, command: TokenCli) -> anyhow::Result<()> {
    match command {
        TokenCli::Create { email } => create_token(config, &email).await,
        TokenCli::Revoke { email, token_id } => revoke_token(config, &email, &token_id).await,
        TokenCli::List { email } => {
            let email = crate::domain::user::Email::parse(&email)?;
            let opened = Opened::open(&config).await?;
            let tokens = crate::projections::users::tokens(opened.pool(), email.as_str()).await;
            let tokens = opened.close(tokens.map_err(Into::into)).await?;
            for token in &tokens {
                let revoked = token.revoked_at.map_or("live".into(), |at| {
                    format!("revoked {}", at.format("%Y-%m-%d %H:%M"))
                });
                let used = token.last_used_at.map_or("never used".into(), |at| {
                    format!("last used {}", at.format("%Y-%m-%d %H:%M"))
                });
                println!(
                    "{}\tissued {}\t{used}\t{revoked}",
                    token.token_id,
                    token.issued_at.format("%Y-%m-%d %H:%M")
                );
            }
            if tokens.is_empty() {
                println!("{email} has no tokens");
            }
            Ok(())
        }
    }
}

async fn add_user(
    config: Config,
    email: &str,
    role: &str,
    password_stdin: bool,
) -> anyhow::Result<()> {
    use crate::domain::user::{Email, UserCommand};
    let email = Email::parse(email)?;
    let role: crate::domain::Role = serde_json::from_value(serde_json::Value::String(role.into()))?;
    let (password, show) = if password_stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        let password = line.trim_end_matches(['\n', '\r']).to_string();
        anyhow::ensure!(
            password.chars().count() >= 12,
            "the password must have at least 12 characters"
        );
        (password, false)
    } else {
        (crate::auth::generate_password(), true)
    };
    let password_hash = crate::auth::hash_password(&password).map_err(anyhow::Error::msg)?;
    let command = UserCommand::Add {
        email: email.clone(),
        role,
        password_hash,
        by: "cli".into(),
    };
    change(&config, &email, command).await?;
    println!("added {email} as {role}");
    if show {
        println!("password: {password}");
        println!("(shown once; it is stored only as a hash)");
    }
    Ok(())
}

/// Links a person to a Slack member, or unlinks them when `member` is `None`.
async fn link_slack(config: Config, email: &str, member: Option<&str>) -> anyhow::Result<()> {
    use crate::domain::user::{Email, SlackUserId, UserCommand, UserError};
    use crate::store::CommandError;
    let email = Email::parse(email)?;
    let member = member.map(SlackUserId::parse).transpose()?;
    let opened = Opened::open(&config).await?;
    let result = async {
        if let Some(member) = &member {
            let holder = crate::projections::users::linked_elsewhere(
                opened.pool(),
                member.as_str(),
                email.as_str(),
            )
            .await?;
            if let Some(holder) = holder {
                anyhow::bail!(
                    "Slack member {member} is already linked to {holder}; \
                     unlink it first with `execops user unlink-slack {holder}`"
                );
            }
        }
        let command = match &member {
            Some(member) => UserCommand::LinkSlack {
                slack_user_id: member.clone(),
                by: "cli".into(),
            },
            None => UserCommand::UnlinkSlack { by: "cli".into() },
        };
        let metadata = Metadata::via("cli").into();
        match opened.store.user(&email, command, metadata).await {
            Ok(()) => applied(opened.pool(), &email).await.map(|()| match &member {
                Some(member) => format!("linked {email} to Slack member {member}"),
                None => format!("unlinked {email} from Slack"),
            }),
            Err(CommandError::Refused(UserError::AlreadyLinked(member))) => {
                Ok(format!("{email} was already linked to Slack member {member}"))
            }
            Err(CommandError::Refused(UserError::NoSuchUser)) => Err(anyhow::anyhow!(
                "no ExecOps user {email}; add them first with `execops user add {email} --role approver`"
            )),
            Err(CommandError::Refused(UserError::NotLinked)) => {
                Err(anyhow::anyhow!("{email} is not linked to a Slack member"))
            }
            Err(other) => Err(other.into()),
        }
    }
    .await;
    println!("{}", opened.close(result).await?);
    Ok(())
}

async fn create_token(config: Config, email: &str) -> anyhow::Result<()> {
    use crate::domain::user::{Email, UserCommand};
    let email = Email::parse(email)?;
    let (token_id, token, token_hash) = crate::auth::new_token();
    let command = UserCommand::IssueToken {
        token_id,
        token_hash,
        by: "cli".into(),
    };
    change(&config, &email, command).await?;
    println!("{token}");
    Ok(())
}

async fn revoke_token(config: Config, email: &str, token_id: &str) -> anyhow::Result<()> {
    use crate::domain::user::{Email, UserCommand};
    let email = Email::parse(email)?;
    let command = UserCommand::RevokeToken {
        token_id: token_id.to_string(),
        by: "cli".into(),
    };
    change(&config, &email, command).await?;
    println!("token {token_id} revoked");
    Ok(())
}

async fn list(config: Config, json: bool) -> anyhow::Result<()> {
    let opened = Opened::open(&config).await?;
    let people = crate::projections::users::people(opened.pool()).await;
    let people = opened.close(people.map_err(Into::into)).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&people)?);
        return Ok(());
    }
    for person in &people {
        let status = match person.disabled_at {
            Some(at) => format!("disabled {}", at.format("%Y-%m-%d %H:%M")),
            None => "active".into(),
        };
        let signed_in = person
            .signed_in_at
            .map_or("-".into(), |at| at.format("%Y-%m-%d %H:%M").to_string());
        println!(
            "{}\t{}\t{status}\tslack {}\t{} tokens\tsession {signed_in}",
            person.email,
            person.role,
            person.slack_user_id.as_deref().unwrap_or("-"),
            person.live_tokens,
        );
    }
    if people.is_empty() {
        println!("nobody yet: add someone with `execops user add EMAIL --role admin`");
    }
    Ok(())
}

async fn set_role(config: Config, email: &str, role: &str) -> anyhow::Result<()> {
    use crate::domain::user::{Email, UserCommand};
    let email = Email::parse(email)?;
    let role: crate::domain::Role = serde_json::from_value(serde_json::Value::String(role.into()))?;
    let command = UserCommand::GrantRole {
        role,
        by: "cli".into(),
    };
    change(&config, &email, command).await?;
    println!("{email} is now {role}");
    Ok(())
}

async fn send_link(
    config: &Config,
    email: &str,
    purpose: crate::commands::people::Purpose,
) -> anyhow::Result<()> {
    let email = crate::domain::user::Email::parse(email)?;
    let opened = Opened::open(config).await?;
    let sent = crate::commands::people::send_link(
        &opened.store,
        config,
        &email,
        purpose,
        Metadata::via("cli"),
        chrono::Utc::now(),
    )
    .await;
    let (address, mailed) = opened.close(sent.map_err(Into::into)).await?;
    match mailed {
        Ok(true) => println!("emailed to {email}; the link, if they need it again:"),
        Ok(false) => println!("no SMTP_URL is set: give {email} this link yourself:"),
        Err(why) => println!("not emailed ({why}): give {email} this link yourself:"),
    }
    println!("{address}");
    println!("(it works once; it is not stored, only its hash)");
    Ok(())
}

/// Records `command` on `email`'s stream, and returns once it holds on the next request.
async fn change(
    config: &Config,
    email: &crate::domain::user::Email,
    command: crate::domain::user::UserCommand,
) -> anyhow::Result<()> {
    let opened = Opened::open(config).await?;
    let result =
        crate::commands::people::change(&opened.store, email, command, Metadata::via("cli")).await;
    opened.close(result.map_err(Into::into)).await
}

/// Returns once the users read model, which decides who may do what, has applied every
/// change to `email`: what a command prints (a token, a role) holds on the next request.
async fn applied(pool: &sqlx::PgPool, email: &crate::domain::user::Email) -> anyhow::Result<()> {
    crate::store::subscription::wait_applied(
        pool,
        crate::projections::Users,
        "User",
        email.as_str(),
        std::time::Duration::from_secs(10),
    )
    .await
    .map_err(Into::into)
}
