//! `/account/{secret}`: a single-use invite or password reset link. Opening it shows whose it
//! is and asks for a password; posting the password uses it (`commands::people`).

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Form;
use serde::Deserialize;

use super::page::{render, Chrome};
use super::AppState;
use crate::commands::people::{open_link, redeem_link, LinkError, Purpose};

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    chrome: Chrome,
    heading: String,
    message: String,
    show_form: bool,
    sign_in: bool,
}

fn page(status: StatusCode, heading: &str, message: String, show_form: bool) -> Response {
    let mut response = render(
        status,
        AccountPage {
            chrome: Chrome::anonymous(),
            heading: heading.into(),
            message,
            show_form,
            sign_in: !show_form && status.is_success(),
        },
    );
    // The address holds a credential: never cached, indexed or passed on as a referrer.
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "x-robots-tag",
        HeaderValue::from_static("noindex, nofollow"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    response
}

fn unusable() -> Response {
    page(
        StatusCode::GONE,
        "This link cannot be used",
        LinkError::Unusable.to_string(),
        false,
    )
}

/// `GET /account/{secret}`: whose link it is, and the password form. Uses nothing.
pub async fn show(State(state): State<AppState>, Path(secret): Path<String>) -> Response {
    match open_link(state.store.pool(), &secret, state.clock.now()).await {
        Ok(Some(link)) => {
            let (heading, what) = match link.purpose {
                Purpose::Invite(role) => (
                    "Join ExecOps",
                    format!(
                        "{} invited {} to ExecOps as {role}. Choose a password to join.",
                        crate::commands::people::who(&link.created_by),
                        link.email
                    ),
                ),
                Purpose::Reset => (
                    "Choose a new password",
                    format!(
                        "A new password for {}; your other sessions will end.",
                        link.email
                    ),
                ),
            };
            let until = link.expires_at.format("%Y-%m-%d %H:%M UTC");
            page(
                StatusCode::OK,
                heading,
                format!("{what} The link works once, until {until}."),
                true,
            )
        }
        Ok(None) => unusable(),
        Err(_) => page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Try again in a moment",
            "ExecOps cannot reach its database right now; the link is unchanged.".into(),
            false,
        ),
    }
}

#[derive(Deserialize)]
pub struct PasswordForm {
    password: String,
    confirm: String,
}

/// `POST /account/{secret}`: sets the password and uses the link.
pub async fn redeem(
    State(state): State<AppState>,
    Path(secret): Path<String>,
    Form(form): Form<PasswordForm>,
) -> Response {
    let retry = |message: &str| {
        page(
            StatusCode::BAD_REQUEST,
            "Choose a password",
            message.into(),
            true,
        )
    };
    if form.password.chars().count() < 12 {
        return retry("The password needs at least 12 characters; the link is unchanged.");
    }
    if form.password != form.confirm {
        return retry("The two passwords differ; the link is unchanged.");
    }
    match open_link(state.store.pool(), &secret, state.clock.now()).await {
        Ok(Some(_)) => {}
        Ok(None) => return unusable(),
        Err(_) => return unusable(),
    }
    // Hashing is slow on purpose: it takes a turn as a sign-in does, off the workers.
    let turn = match state.signin.turn("account link").await {
        Ok(turn) => turn,
        Err(_) => {
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again in a moment",
                "ExecOps is busy checking passwords; the link is unchanged.".into(),
                true,
            )
        }
    };
    let password = form.password;
    let hashed = tokio::task::spawn_blocking(move || {
        let hashed = crate::auth::hash_password(&password);
        drop(turn);
        hashed
    })
    .await;
    let Ok(Ok(password_hash)) = hashed else {
        return page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "The password could not be stored; the link is unchanged.".into(),
            true,
        );
    };
    match redeem_link(&state.store, &secret, password_hash, state.clock.now()).await {
        Ok(email) => page(
            StatusCode::OK,
            "Your password is set",
            format!("Sign in as {email} with your new password."),
            false,
        ),
        Err(LinkError::Unusable) => unusable(),
        Err(error) => {
            tracing::warn!(%error, "an account link could not be used");
            page(
                StatusCode::CONFLICT,
                "This link could not be used",
                format!("{error}."),
                false,
            )
        }
    }
}
