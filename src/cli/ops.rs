//! `execops audit` and `execops replay`: a proposal's story, the audit chain verified, and
//! the read models rebuilt or checked beside the live ones.

use clap::Subcommand;

/// Data subjects' requests.
#[derive(Debug, Subcommand)]
pub(super) enum PrivacyCommand {
    /// Print everything held about a subject (an email address, a customer id, any id a
    /// sender uses) as one JSON document: every event that mentions it, in log order, and
    /// every row of every other table that does. Secrets are never printed. Read only.
    Export { subject: String },
}

pub(super) async fn privacy(pool: &sqlx::PgPool, command: PrivacyCommand) -> anyhow::Result<()> {
    match command {
        PrivacyCommand::Export { subject } => {
            let export = crate::ops::privacy::export(pool, &subject, chrono::Utc::now()).await?;
            println!("{}", serde_json::to_string_pretty(&export)?);
            eprintln!(
                "{} events and {} tables mention {:?}",
                export.events.len(),
                export.records.len(),
                export.subject
            );
            Ok(())
        }
    }
}

#[derive(Debug, Subcommand)]
pub(super) enum AuditCommand {
    /// A proposal's story in order: signals, draft, dry runs, decisions, attempts, outcomes.
    Show {
        proposal_id: String,
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Recompute the audit chain from the events; name the first row altered, removed or
    /// moved. Read only; exits non-zero on a break.
    Verify,
}

pub(super) async fn audit(pool: &sqlx::PgPool, command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Show { proposal_id, json } => {
            let story = crate::ops::audit::story(pool, &proposal_id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&story)?);
            } else {
                print!("{}", crate::ops::audit::render_text(&story));
            }
            Ok(())
        }
        AuditCommand::Verify => {
            let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log")
                .fetch_one(pool)
                .await?;
            eprintln!(
                "Recomputing the audit chain ({rows} rows) from the event log and comparing it \
                 row by row; nothing is written."
            );
            let verification = crate::ops::audit::verify(pool).await?;
            println!("{verification}");
            match verification.first_break {
                None => Ok(()),
                Some(_) => anyhow::bail!("the audit log does not match the events"),
            }
        }
    }
}

pub(super) async fn replay(
    pool: &sqlx::PgPool,
    projection: Option<&str>,
    verify: bool,
    yes: bool,
) -> anyhow::Result<()> {
    use crate::ops::replay::{Mode, PROJECTIONS};
    use std::io::IsTerminal;
    let projections = match projection {
        Some(name) => vec![crate::ops::replay::find(name)?],
        None => PROJECTIONS.to_vec(),
    };
    let mode = if verify { Mode::Verify } else { Mode::Swap };
    eprint!(
        "{}",
        crate::ops::replay::plan(pool, &projections, mode).await?
    );
    if !verify && !yes {
        anyhow::bail!("nothing done: add --yes to rebuild and swap, or --verify to compare");
    }
    let progress = std::io::stderr().is_terminal();
    let reports = crate::ops::replay::run(pool, &projections, mode, progress).await?;
    let mut differing = 0;
    for report in &reports {
        println!("{report}");
        differing += report.differing_rows;
    }
    if differing > 0 {
        anyhow::bail!("{differing} rows differ from what the events say");
    }
    Ok(())
}
