//! Opens GitHub issues through the REST API, and undoes one by saying why on the issue and
//! closing it as not planned: GitHub lets no token delete an issue, and a closed issue with
//! its reason keeps the record honest for whoever already saw it.

use chrono::Utc;
use reqwest::{Method, StatusCode};
use secrecy::SecretString;
use serde_json::{json, Value};

use super::{
    field, retry_after, status_error, truncate, Adapter, AdapterError, HttpAnswer, HttpRequest,
    RequestPreview,
};
use crate::config::AdapterConfig;

const API_VERSION: &str = "2022-11-28";

#[derive(Clone)]
pub struct GitHub {
    http: reqwest::Client,
    token: Option<SecretString>,
    base: String,
}

impl GitHub {
    pub fn new(config: &AdapterConfig, http: reqwest::Client) -> Self {
        Self {
            http,
            token: config.github_token.clone(),
            base: config.github_api_base.clone(),
        }
    }

    fn call(&self, method: Method, path: &str, body: &Value) -> Result<HttpRequest, AdapterError> {
        let token = self.token.as_ref().ok_or_else(|| {
            super::not_set(
                "GITHUB_TOKEN",
                "ExecOps has no token to open GitHub issues with",
            )
        })?;
        Ok(HttpRequest::json(
            method,
            format!("{}{path}", self.base),
            Some(token),
            "application/json",
            body,
        )
        .header("Accept", "application/vnd.github+json")
        .header("X-GitHub-Api-Version", API_VERSION))
    }

    fn create_issue(&self, action: &Value) -> Result<HttpRequest, AdapterError> {
        let repo = repo(action)?;
        let title = field(action, "title")?;
        let body = action.get("body").and_then(Value::as_str).unwrap_or("");
        let labels: Vec<&str> = match action.get("labels") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(labels)) => labels
                .iter()
                .map(|l| {
                    l.as_str()
                        .ok_or_else(|| AdapterError::Permanent(format!("label {l} is not text")))
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(AdapterError::Permanent(format!(
                    "the action's labels are not a list: {other}"
                )))
            }
        };
        self.call(
            Method::POST,
            &format!("/repos/{repo}/issues"),
            &json!({ "title": title, "body": body, "labels": labels }),
        )
    }
}

/// The action's `owner/name`, checked so that it can only ever name a repository's path.
fn repo(value: &Value) -> Result<&str, AdapterError> {
    let repo = field(value, "repo")?;
    let part_ok = |part: &str| {
        !part.is_empty()
            && part != "."
            && part != ".."
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match repo.split_once('/') {
        Some((owner, name)) if part_ok(owner) && part_ok(name) => Ok(repo),
        _ => Err(AdapterError::Permanent(format!(
            "{repo:?} is not a GitHub repository as owner/name"
        ))),
    }
}

/// GitHub's answer as JSON on success (201 for what is created, 200 for a change), else
/// the error sorted.
fn judge(answer: &HttpAnswer) -> Result<Value, AdapterError> {
    if answer.status.is_success() {
        return Ok(answer.json());
    }
    let body = answer.json();
    let message = body
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_else(|| truncate(&answer.text, 500));
    let headers = &answer.headers;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let exhausted = header("x-ratelimit-remaining") == Some("0");
    // GitHub signals its primary and secondary rate limits with 403 as well as 429; only
    // those headers tell them from a token that lacks a permission.
    let rate_limited = matches!(answer.status.as_u16(), 403 | 429)
        && (exhausted || headers.contains_key(reqwest::header::RETRY_AFTER));
    if rate_limited {
        let reset = header("x-ratelimit-reset")
            .and_then(|t| t.trim().parse::<i64>().ok())
            .map(|reset| (reset - Utc::now().timestamp()).max(1))
            .and_then(|secs| u64::try_from(secs).ok())
            .map(std::time::Duration::from_secs);
        return Err(AdapterError::Transient {
            message: format!("GitHub's rate limit: {message}"),
            retry_after: retry_after(headers).or(reset),
        });
    }
    if answer.status.is_server_error() || answer.status == StatusCode::TOO_MANY_REQUESTS {
        return Err(status_error("GitHub", answer.status, headers, &answer.text));
    }
    Err(AdapterError::Permanent(format!(
        "GitHub answered {}: {message}",
        answer.status
    )))
}

impl Adapter for GitHub {
    fn name(&self) -> &'static str {
        "github"
    }

    fn dedupes(&self) -> bool {
        false
    }

    fn rollback_limit(&self) -> Option<&'static str> {
        None
    }

    fn preview(&self, action: &Value, _key: &str) -> Result<Vec<RequestPreview>, AdapterError> {
        Ok(vec![self.create_issue(action)?.preview()])
    }

    async fn execute(&self, action: &Value, _key: &str) -> Result<Value, AdapterError> {
        let repo = repo(action)?;
        let answer = self
            .create_issue(action)?
            .send(&self.http, "GitHub")
            .await?;
        let issue = judge(&answer)?;
        let number = issue.get("number").and_then(Value::as_u64).ok_or_else(|| {
            AdapterError::Permanent(format!(
                "GitHub created an issue but named no number: {}",
                truncate(&answer.text, 300)
            ))
        })?;
        Ok(json!({ "repo": repo, "number": number, "html_url": issue["html_url"] }))
    }

    async fn rollback(
        &self,
        _action: &Value,
        result: &Value,
        key: &str,
    ) -> Result<Value, AdapterError> {
        let repo = repo(result)?;
        let number = result
            .get("number")
            .and_then(Value::as_u64)
            .ok_or_else(|| AdapterError::Permanent("the result names no issue number".into()))?;
        let issue = format!("/repos/{repo}/issues/{number}");
        let comment = self
            .call(
                Method::POST,
                &format!("{issue}/comments"),
                &json!({
                    "body": format!(
                        "The approval that opened this issue was undone in ExecOps \
                         (execution {key}), so it is closed as not planned."
                    ),
                }),
            )?
            .send(&self.http, "GitHub")
            .await?;
        let comment = judge(&comment)?;
        let closed = self
            .call(
                Method::PATCH,
                &issue,
                &json!({ "state": "closed", "state_reason": "not_planned" }),
            )?
            .send(&self.http, "GitHub")
            .await?;
        judge(&closed)?;
        Ok(json!({
            "repo": repo,
            "number": number,
            "state": "closed",
            "comment_url": comment["html_url"],
        }))
    }
}
