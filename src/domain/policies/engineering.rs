//! Engineering: a workflow that fails on the default branch calls for an issue and a post in
//! the repository's channel; the next success of the same workflow and branch makes them moot.

use serde_json::{json, Value};

use super::{i64_at, slack_escape, str_at, Facts, Outcome, Plan, PolicyConfig};
use crate::domain::inbound::Signal;
use crate::domain::priority::{urgency_factor, Factor, Priority};
use crate::domain::values::{Urgency, Vertical};

const FAILED: [&str; 3] = ["failure", "timed_out", "startup_failure"];

/// The outcome key of what is proposed for a red workflow: its next green run.
pub(super) fn green_key(repo: &str, workflow_id: i64, branch: &str) -> String {
    format!("github:{repo}:workflow:{workflow_id}:{branch}:green")
}

pub(super) fn github(signal: &Signal, _facts: &Facts, config: &PolicyConfig) -> Vec<Outcome> {
    if signal.kind != "workflow_run.completed" {
        return Vec::new();
    }
    let payload = &signal.payload;
    let run = payload.get("workflow_run").cloned().unwrap_or(Value::Null);
    let (Some(repo), Some(branch)) = (
        str_at(payload, "/repository/full_name"),
        str_at(&run, "/head_branch"),
    ) else {
        return Vec::new();
    };
    let default_branch = str_at(payload, "/repository/default_branch").unwrap_or("main");
    if branch != default_branch {
        return Vec::new();
    }
    let workflow_id = i64_at(&run, "/workflow_id").unwrap_or(0);
    let workflow = str_at(payload, "/workflow/name")
        .or_else(|| str_at(&run, "/name"))
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| format!("workflow {workflow_id}"));
    let subject = |what: &str| format!("github:{repo}:workflow:{workflow_id}:{branch}:{what}");
    debug_assert_eq!(subject("green"), green_key(repo, workflow_id, branch));
    let run_number = i64_at(&run, "/run_number").unwrap_or(0);
    let conclusion = str_at(&run, "/conclusion").unwrap_or_default();
    if conclusion == "success" {
        return ["issue", "slack"]
            .into_iter()
            .map(|what| Outcome::Supersede {
                subject_key: subject(what),
                reason: format!("{workflow} passed again on {branch} (run {run_number})"),
            })
            .collect();
    }
    if !FAILED.contains(&conclusion) {
        return Vec::new();
    }
    let url = str_at(&run, "/html_url").unwrap_or_default();
    let sha = str_at(&run, "/head_sha").unwrap_or_default();
    let short_sha = &sha[..sha.len().min(7)];
    let channel = config
        .repo_channels
        .get(repo)
        .unwrap_or(&config.default_engineering_channel)
        .clone();
    let reasoning = format!(
        "{workflow} {conclusion} on {branch} of {repo} at {short_sha} (run {run_number}). \
         A red default branch blocks every release until someone owns it."
    );
    let priority = |effort: Factor| Priority {
        revenue: Factor::new(30, "a red main branch holds back every release"),
        urgency: urgency_factor(Urgency::High, format!("{branch} is red: nothing can ship")),
        effort,
        strategic: Factor::new(60, "a broken build slows the whole team"),
    };
    vec![
        Outcome::Propose(Box::new(Plan {
            rule: "engineering.open_issue",
            title: format!("Open a GitHub issue: {workflow} failing on {branch}"),
            vertical: Vertical::Engineering,
            action_type: "github.create_issue",
            action: json!({
                "repo": repo,
                "title": format!("{workflow} is failing on {branch}"),
                "body": format!(
                    "{workflow} {conclusion} on `{branch}` at {short_sha}.\n\nRun: {url}\n\n\
                     Opened by ExecOps after a person approved it."
                ),
                "labels": ["ci", "execops"],
            }),
            reasoning: reasoning.clone(),
            priority: priority(Factor::new(80, "opening an issue is one click")),
            urgency: Urgency::High,
            due_by: None,
            owner: None,
            subject_key: subject("issue"),
            outcome_key: Some(subject("green")),
        })),
        Outcome::Propose(Box::new(Plan {
            rule: "engineering.slack_post",
            title: format!("Post to {channel}: {workflow} failing on {branch}"),
            vertical: Vertical::Engineering,
            action_type: "slack.post_message",
            action: json!({
                "channel": channel,
                "text": slack_escape(&format!(":red_circle: {workflow} {conclusion} on {branch} of {repo} at {short_sha}: {url}")),
            }),
            reasoning,
            priority: priority(Factor::new(95, "it is one Slack message")),
            urgency: Urgency::High,
            due_by: None,
            owner: None,
            subject_key: subject("slack"),
            outcome_key: Some(subject("green")),
        })),
    ]
}
