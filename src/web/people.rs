//! `/settings/people` (admins manage the team) and `/settings/me` (anyone: their own
//! password and tokens). Every change goes through `commands::people`, as the command line's
//! do, and is recorded with who made it.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use super::error::ApiError;
use super::page::{csrf_refused, header_token, page_error, render, Chrome};
use super::session::Session;
use super::AppState;
use crate::auth::Permission;
use crate::commands::people::{change, send_link, LinkError, PeopleError, Purpose};
use crate::domain::user::{Email, UserCommand, UserError};
use crate::domain::Role;
use crate::projections::users::{people, tokens, Person, TokenRow};
use crate::store::{CommandError, Metadata};

const ROLES: [&str; 3] = ["admin", "approver", "viewer"];

impl From<PeopleError> for ApiError {
    fn from(error: PeopleError) -> Self {
        match error {
            PeopleError::LastAdmin(_) => ApiError::Conflict {
                code: "last_admin",
                message: format!("{error}."),
            },
            PeopleError::Command(CommandError::Refused(refusal)) => match refusal {
                UserError::NoSuchUser => ApiError::NotFound("no such person".into()),
                other => ApiError::Conflict {
                    code: "refused",
                    message: format!("Refused: {other}."),
                },
            },
            // Conflicts, an unreachable store and failures read as everywhere else.
            PeopleError::Command(other) => other.into(),
            PeopleError::NotApplied(wait) => ApiError::Unavailable(wait.to_string()),
            PeopleError::Database(error) => error.into(),
        }
    }
}

pub struct PersonRow {
    pub person: Person,
    pub tokens: Vec<TokenRow>,
}

#[derive(Template)]
#[template(path = "people.html")]
struct PeoplePage {
    chrome: Chrome,
    people: Vec<PersonRow>,
    roles: [&'static str; 3],
}

#[derive(Deserialize)]
pub struct NoticeQuery {
    notice: Option<String>,
}

/// `GET /settings/people`: everyone, for admins.
pub async fn page(
    State(state): State<AppState>,
    session: Session,
    Query(query): Query<NoticeQuery>,
) -> Response {
    if let Err(refusal) = session.actor.may(Permission::Administer) {
        return page_error(&session, refusal.into());
    }
    let pool = state.store.pool();
    let rows = async {
        let mut rows = Vec::new();
        for person in people(pool).await? {
            let tokens = tokens(pool, &person.email).await?;
            rows.push(PersonRow { person, tokens });
        }
        Ok::<_, sqlx::Error>(rows)
    }
    .await;
    match rows {
        Ok(people) => render(
            StatusCode::OK,
            PeoplePage {
                chrome: Chrome::of(&session).with_notice(query.notice),
                people,
                roles: ROLES,
            },
        ),
        Err(error) => page_error(&session, error.into()),
    }
}

#[derive(Deserialize)]
pub struct PeopleForm {
    csrf: Option<String>,
    email: String,
    /// `set_role`, `disable`, `enable` or `revoke_token`.
    change: String,
    role: Option<String>,
    token_id: Option<String>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::BadRequest {
        code: "bad_change",
        message: message.into(),
    }
}

/// `POST /settings/people`: one change to one person, by an admin.
pub async fn change_person(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<PeopleForm>,
) -> Response {
    if !session.check_csrf(form.csrf.as_deref().or_else(|| header_token(&headers))) {
        return csrf_refused(&session);
    }
    if let Err(refusal) = session.actor.may(Permission::Administer) {
        return page_error(&session, refusal.into());
    }
    if matches!(form.change.as_str(), "invite" | "reset") {
        return send(&state, &session, &headers, &form).await;
    }
    let by = session.actor.email.clone();
    let prepared = Email::parse(&form.email)
        .map_err(|_| bad(format!("{:?} is not an email address.", form.email)))
        .and_then(|email| {
            let (command, done) = match form.change.as_str() {
                "set_role" => {
                    let role = form
                        .role
                        .as_deref()
                        .filter(|r| ROLES.contains(r))
                        .and_then(|r| serde_json::from_value::<Role>(r.into()).ok())
                        .ok_or_else(|| bad("Choose admin, approver or viewer."))?;
                    (
                        UserCommand::GrantRole { role, by },
                        format!("{email} is now {role}."),
                    )
                }
                "disable" => (
                    UserCommand::Disable { by },
                    format!("{email} is disabled; their sessions are ended."),
                ),
                "enable" => (UserCommand::Enable { by }, format!("{email} is enabled.")),
                "revoke_token" => {
                    let token_id = form
                        .token_id
                        .clone()
                        .filter(|t| !t.is_empty())
                        .ok_or_else(|| bad("Choose a token to revoke."))?;
                    let done = format!("Token {token_id} of {email} is revoked.");
                    (UserCommand::RevokeToken { token_id, by }, done)
                }
                other => return Err(bad(format!("{other:?} is not a change ExecOps knows."))),
            };
            Ok((email, command, done))
        });
    let (email, command, done) = match prepared {
        Ok(prepared) => prepared,
        Err(error) => return page_error(&session, error),
    };
    match change(&state.store, &email, command, metadata(&session, &headers)).await {
        Ok(()) => notice_redirect("/settings/people", &done),
        Err(error) => page_error(&session, error.into()),
    }
}

#[derive(Template)]
#[template(path = "link_sent.html")]
struct LinkSentPage {
    chrome: Chrome,
    heading: String,
    mailed: String,
    address: String,
}

/// An invite or a reset link made on the page: shown once on the answer (never put in an
/// address, where it would stay in the history), and emailed when a mail server is set.
async fn send(
    state: &AppState,
    session: &Session,
    headers: &HeaderMap,
    form: &PeopleForm,
) -> Response {
    let Ok(email) = Email::parse(&form.email) else {
        return page_error(
            session,
            bad(format!("{:?} is not an email address.", form.email)),
        );
    };
    let purpose = if form.change == "reset" {
        Purpose::Reset
    } else {
        match form
            .role
            .as_deref()
            .filter(|r| ROLES.contains(r))
            .and_then(|r| serde_json::from_value::<Role>(r.into()).ok())
        {
            Some(role) => Purpose::Invite(role),
            None => return page_error(session, bad("Choose admin, approver or viewer.")),
        }
    };
    let heading = match purpose {
        Purpose::Invite(_) => format!("Invite for {email}"),
        Purpose::Reset => format!("Password reset link for {email}"),
    };
    let sent = send_link(
        &state.store,
        &state.config,
        &email,
        purpose,
        metadata(session, headers),
        state.clock.now(),
    )
    .await;
    match sent {
        Ok((address, mailed)) => {
            let mailed = match mailed {
                Ok(true) => format!("It was emailed to {email}."),
                Ok(false) => {
                    "No mail server is set (SMTP_URL): give them this link yourself.".into()
                }
                Err(why) => {
                    format!("It could not be emailed ({why}): give them this link yourself.")
                }
            };
            let mut response = render(
                StatusCode::OK,
                LinkSentPage {
                    chrome: Chrome::of(session),
                    heading,
                    mailed,
                    address,
                },
            );
            response.headers_mut().insert(
                axum::http::header::CACHE_CONTROL,
                axum::http::HeaderValue::from_static("no-store"),
            );
            response
        }
        Err(LinkError::People(error)) => page_error(session, error.into()),
        Err(LinkError::Database(error)) => page_error(session, error.into()),
        Err(other) => page_error(
            session,
            ApiError::Conflict {
                code: "link_refused",
                message: format!("{other}."),
            },
        ),
    }
}

fn metadata(session: &Session, headers: &HeaderMap) -> Metadata {
    Metadata::via("page")
        .actor(&session.actor.email)
        .request(super::request_id(headers))
}

fn notice_redirect(path: &str, notice: &str) -> Response {
    let query = serde_urlencoded::to_string([("notice", notice)]).unwrap_or_default();
    Redirect::to(&format!("{path}?{query}")).into_response()
}

#[derive(Template)]
#[template(path = "me.html")]
struct MePage {
    chrome: Chrome,
    email: String,
    role: String,
    tokens: Vec<TokenRow>,
}

/// `GET /settings/me`: the signed-in person's own account.
pub async fn me(
    State(state): State<AppState>,
    session: Session,
    Query(query): Query<NoticeQuery>,
) -> Response {
    match tokens(state.store.pool(), &session.actor.email).await {
        Ok(tokens) => render(
            StatusCode::OK,
            MePage {
                chrome: Chrome::of(&session).with_notice(query.notice),
                email: session.actor.email.clone(),
                role: session.actor.role.to_string(),
                tokens,
            },
        ),
        Err(error) => page_error(&session, error.into()),
    }
}

#[derive(Deserialize)]
pub struct MeForm {
    csrf: Option<String>,
    /// `password` or `revoke_token`.
    change: String,
    current: Option<String>,
    new: Option<String>,
    confirm: Option<String>,
    token_id: Option<String>,
}

/// `POST /settings/me`: a new password (the current one checked first; every other session
/// ends), or one of the person's own tokens revoked.
pub async fn change_me(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<MeForm>,
) -> Response {
    if !session.check_csrf(form.csrf.as_deref().or_else(|| header_token(&headers))) {
        return csrf_refused(&session);
    }
    let Ok(email) = Email::parse(&session.actor.email) else {
        return page_error(&session, ApiError::Internal("a session's email".into()));
    };
    let by = session.actor.email.clone();
    let result = match form.change.as_str() {
        "password" => new_password(&state, &session, &headers, &email, &form).await,
        "revoke_token" => match form.token_id.clone().filter(|t| !t.is_empty()) {
            Some(token_id) => {
                let done = format!("Token {token_id} is revoked.");
                let command = UserCommand::RevokeToken { token_id, by };
                change(&state.store, &email, command, metadata(&session, &headers))
                    .await
                    .map(|()| done)
                    .map_err(ApiError::from)
            }
            None => Err(bad("Choose a token to revoke.")),
        },
        other => Err(bad(format!("{other:?} is not a change ExecOps knows."))),
    };
    match result {
        Ok(done) => notice_redirect("/settings/me", &done),
        Err(error) => page_error(&session, error),
    }
}

async fn new_password(
    state: &AppState,
    session: &Session,
    headers: &HeaderMap,
    email: &Email,
    form: &MeForm,
) -> Result<String, ApiError> {
    let new = form.new.clone().unwrap_or_default();
    if new.chars().count() < 12 {
        return Err(bad("The new password needs at least 12 characters."));
    }
    if form.confirm.as_deref() != Some(new.as_str()) {
        return Err(bad("The two new passwords differ."));
    }
    let pool = state.store.pool();
    let Some((_, stored)) = crate::projections::users::credentials(pool, email.as_str()).await?
    else {
        return Err(ApiError::Forbidden("no such person".into()));
    };
    // Both hashes are slow on purpose: they take a turn as a sign-in does, off the workers.
    let client = format!("me:{}", email.as_str());
    let turn = state.signin.turn(&client).await.map_err(|_| {
        ApiError::Unavailable("password checks are busy; try again in a moment".into())
    })?;
    let current = form.current.clone().unwrap_or_default();
    let hashed = tokio::task::spawn_blocking(move || {
        let hashed = crate::auth::verify_password(&current, &stored)
            .then(|| crate::auth::hash_password(&new));
        drop(turn);
        hashed
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let password_hash = match hashed {
        None => return Err(bad("The current password is not right.")),
        Some(hash) => hash.map_err(ApiError::Internal)?,
    };
    let command = UserCommand::SetPassword {
        password_hash,
        by: email.to_string(),
    };
    change(&state.store, email, command, metadata(session, headers)).await?;
    sqlx::query("DELETE FROM sessions WHERE email = $1 AND id_hash <> $2")
        .bind(email.as_str())
        .bind(session.key())
        .execute(pool)
        .await?;
    Ok("Your password is changed; you are signed out everywhere else.".into())
}
