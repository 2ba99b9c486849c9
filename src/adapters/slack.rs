//! Posts to Slack with the Web API's `chat.postMessage` and undoes it with `chat.delete`.
//! Slack answers most failures with HTTP 200 and `"ok": false`, so the error string, not
//! the status, decides whether a failure is worth retrying.

use reqwest::Method;
use secrecy::SecretString;
use serde_json::{json, Value};

use super::{
    field, retry_after, status_error, truncate, Adapter, AdapterError, HttpAnswer, HttpRequest,
    RequestPreview,
};
use crate::config::AdapterConfig;

/// Slack errors that mean the request was not processed and may be sent again.
const TRANSIENT_ERRORS: &[&str] = &["ratelimited", "service_unavailable"];

#[derive(Clone)]
pub struct Slack {
    http: reqwest::Client,
    token: Option<SecretString>,
    base: String,
    /// Where a `response_url` must point: Slack's hooks.
    response_base: String,
}

impl Slack {
    pub fn new(config: &AdapterConfig, http: reqwest::Client) -> Self {
        Self {
            http,
            token: config.slack_bot_token.clone(),
            base: config.slack_api_base.clone(),
            response_base: config.slack_response_base.clone(),
        }
    }

    fn call(&self, method: &str, body: &Value) -> Result<HttpRequest, AdapterError> {
        let token = self.token.as_ref().ok_or_else(|| {
            super::not_set(
                "SLACK_BOT_TOKEN",
                "ExecOps has no bot token to post to Slack with",
            )
        })?;
        Ok(HttpRequest::json(
            Method::POST,
            format!("{}/{method}", self.base),
            Some(token),
            "application/json; charset=utf-8",
            body,
        ))
    }

    fn post_message(&self, action: &Value) -> Result<HttpRequest, AdapterError> {
        let channel = field(action, "channel")?;
        let text = field(action, "text")?;
        self.call(
            "chat.postMessage",
            &json!({ "channel": channel, "text": text }),
        )
    }
}

/// What Slack's `users.info` says about a member's email address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberEmail {
    pub email: Option<String>,
    /// Slack confirmed the member owns the address (`is_email_confirmed`).
    pub confirmed: bool,
}

impl Slack {
    /// Whether a bot token is set, without which nothing can be posted or looked up.
    pub fn configured(&self) -> bool {
        self.token.is_some()
    }

    /// `chat.postMessage` with Block Kit `blocks` and `text` as the notification fallback.
    pub async fn post_blocks(
        &self,
        channel: &str,
        text: &str,
        blocks: &Value,
    ) -> Result<Value, AdapterError> {
        let body = json!({ "channel": channel, "text": text, "blocks": blocks });
        let answer = self
            .call("chat.postMessage", &body)?
            .send(&self.http, "Slack")
            .await?;
        judge(&answer)
    }

    /// `users.info`: a member's email address and whether Slack confirmed it. Needs the
    /// `users:read` and `users:read.email` scopes.
    pub async fn member_email(&self, user_id: &str) -> Result<MemberEmail, AdapterError> {
        let token = self.token.as_ref().ok_or_else(|| {
            super::not_set(
                "SLACK_BOT_TOKEN",
                "ExecOps has no bot token to look Slack members up with",
            )
        })?;
        let mut url = url::Url::parse(&format!("{}/users.info", self.base))
            .map_err(|e| AdapterError::Permanent(format!("SLACK_API_BASE is not a URL: {e}")))?;
        url.query_pairs_mut().append_pair("user", user_id);
        let request = HttpRequest {
            method: Method::GET,
            url: url.to_string(),
            headers: vec![],
            bearer: Some(token.clone()),
            body: vec![],
        };
        let body = judge(&request.send(&self.http, "Slack").await?)?;
        let user = &body["user"];
        Ok(MemberEmail {
            email: user
                .pointer("/profile/email")
                .and_then(Value::as_str)
                .map(str::to_string),
            confirmed: user["is_email_confirmed"].as_bool() == Some(true),
        })
    }

    /// Answers an interaction or a slash command through its `response_url`: Slack takes a
    /// JSON message there (no token) for 30 minutes, up to five times. A URL that is not
    /// Slack's (not under `SLACK_RESPONSE_URL_BASE`) is refused, never called.
    pub async fn respond(&self, response_url: &str, message: &Value) -> Result<(), AdapterError> {
        if !response_url.starts_with(&self.response_base) {
            return Err(AdapterError::Permanent(format!(
                "the response_url is not under {}; it was not called",
                self.response_base
            )));
        }
        let request = HttpRequest::json(
            Method::POST,
            response_url.to_string(),
            None,
            "application/json; charset=utf-8",
            message,
        );
        let answer = request.send(&self.http, "Slack").await?;
        if answer.status.is_success() {
            Ok(())
        } else {
            Err(status_error(
                "Slack",
                answer.status,
                &answer.headers,
                &answer.text,
            ))
        }
    }
}

/// Slack's answer as JSON when it says `"ok": true`, else the error sorted.
fn judge(answer: &HttpAnswer) -> Result<Value, AdapterError> {
    if !answer.status.is_success() {
        return Err(status_error(
            "Slack",
            answer.status,
            &answer.headers,
            &answer.text,
        ));
    }
    let body = answer.json();
    if body.get("ok").and_then(Value::as_bool) == Some(true) {
        return Ok(body);
    }
    let error = body
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or_else(|| truncate(&answer.text, 200));
    let message = format!("Slack refused the call: {error}");
    if TRANSIENT_ERRORS.contains(&error) {
        Err(AdapterError::Transient {
            message,
            retry_after: retry_after(&answer.headers),
        })
    } else {
        Err(AdapterError::Permanent(message))
    }
}

impl Adapter for Slack {
    fn name(&self) -> &'static str {
        "slack"
    }

    fn dedupes(&self) -> bool {
        false
    }

    fn rollback_limit(&self) -> Option<&'static str> {
        None
    }

    fn preview(&self, action: &Value, _key: &str) -> Result<Vec<RequestPreview>, AdapterError> {
        Ok(vec![self.post_message(action)?.preview()])
    }

    async fn execute(&self, action: &Value, _key: &str) -> Result<Value, AdapterError> {
        let answer = self.post_message(action)?.send(&self.http, "Slack").await?;
        let body = judge(&answer)?;
        // The answer's channel is the id (C…/D…) that `chat.delete` needs; the action may
        // name it as `#founders` or by a user's id.
        Ok(json!({ "channel": body["channel"], "ts": body["ts"] }))
    }

    async fn rollback(
        &self,
        _action: &Value,
        result: &Value,
        _key: &str,
    ) -> Result<Value, AdapterError> {
        let channel = field(result, "channel")?;
        let ts = field(result, "ts")?;
        let answer = self
            .call("chat.delete", &json!({ "channel": channel, "ts": ts }))?
            .send(&self.http, "Slack")
            .await?;
        // An earlier attempt deleted it and its answer was lost: the undo is done.
        let already = answer.json()["error"] == "message_not_found";
        if !already {
            judge(&answer)?;
        }
        Ok(json!({ "deleted": true, "channel": channel, "ts": ts }))
    }
}
