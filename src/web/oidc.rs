//! Sign-in with an OpenID Connect provider (Google Workspace, GitHub through an OIDC bridge,
//! Okta, Keycloak…): the authorization code flow with PKCE, a state and a nonce. The
//! `openidconnect` crate checks the ID token (the provider's signature from its published
//! keys, issuer, audience, expiry, nonce); ExecOps then asks for a verified email in an
//! allowed domain that belongs to a person it already knows and has not disabled. Nobody is
//! created by signing in: an admin invites people first.
//!
//! Bounds: the provider's metadata and keys are one cached entry, fetched again after
//! [`METADATA_TTL`] or when a token names a key the cache lacks; at most
//! [`EXCHANGES_AT_ONCE`] code exchanges are in flight (the rest are told to retry); the
//! flow's state lives in one cookie that expires after [`FLOW_TTL`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, IssuerUrl,
    Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use secrecy::ExposeSecret;
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tokio::sync::{RwLock, Semaphore};

use crate::config::OidcConfig;
use crate::web::error::ApiError;
use crate::web::session;
use crate::web::AppState;

/// How long the provider's metadata and signing keys are trusted before they are fetched
/// again.
pub const METADATA_TTL: Duration = Duration::from_secs(600);
/// How long a person has between leaving for the provider and coming back.
pub const FLOW_TTL: Duration = Duration::from_secs(600);
/// Code exchanges in flight at once: each is a call to the provider.
pub const EXCHANGES_AT_ONCE: usize = 8;
/// Where the provider sends people back.
pub const CALLBACK_PATH: &str = "/login/oidc/callback";

const FLOW_COOKIE: &str = "execops_oidc";
const SECURE_FLOW_COOKIE: &str = "__Host-execops_oidc";

/// The provider, as this instance knows it. Cheap to clone.
#[derive(Clone)]
pub struct Oidc {
    config: Arc<OidcConfig>,
    http: openidconnect::reqwest::Client,
    metadata: Arc<RwLock<Option<(Instant, CoreProviderMetadata)>>>,
    exchanges: Arc<Semaphore>,
}

/// Why a sign-in through the provider did not happen, as the login page says it.
#[derive(Debug)]
enum Failure {
    /// The provider could not be reached or answered nonsense.
    Provider(String),
    /// The flow's cookie is missing, expired, or names another flow.
    Flow,
    /// The provider sent the person back with an error of its own.
    Denied(String),
    /// The ID token did not verify.
    Token(String),
    /// A verified token, but not for anyone who may sign in here.
    Refused(String),
    /// Too many sign-ins through the provider at once.
    Busy,
    /// The database did not answer.
    Unavailable,
}

impl Oidc {
    pub fn new(config: OidcConfig) -> Self {
        let http = openidconnect::reqwest::Client::builder()
            // The crate's advice: following a redirect could be turned into a request to
            // wherever an attacker points it.
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client with rustls");
        Self {
            config: Arc::new(config),
            http,
            metadata: Arc::default(),
            exchanges: Arc::new(Semaphore::new(EXCHANGES_AT_ONCE)),
        }
    }

    /// What the sign-in button says.
    pub fn label(&self) -> &str {
        &self.config.label
    }

    async fn metadata(&self, fresh: bool) -> Result<CoreProviderMetadata, Failure> {
        if !fresh {
            if let Some((at, metadata)) = self.metadata.read().await.as_ref() {
                if at.elapsed() < METADATA_TTL {
                    return Ok(metadata.clone());
                }
            }
        }
        let issuer = IssuerUrl::new(self.config.issuer.clone())
            .map_err(|e| Failure::Provider(format!("the issuer URL is not valid: {e}")))?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| Failure::Provider(format!("discovery failed: {}", chain(&e))))?;
        *self.metadata.write().await = Some((Instant::now(), metadata.clone()));
        Ok(metadata)
    }

    fn redirect_url(&self, public_base: &str) -> Result<RedirectUrl, Failure> {
        RedirectUrl::new(format!("{public_base}{CALLBACK_PATH}"))
            .map_err(|e| Failure::Provider(format!("the callback URL is not valid: {e}")))
    }
}

/// The text of an error and its causes, for the log and the page.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

fn flow_cookie_name(state: &AppState) -> &'static str {
    if state.config.session.secure_cookie {
        SECURE_FLOW_COOKIE
    } else {
        FLOW_COOKIE
    }
}

fn flow_cookie(state: &AppState, value: &str, max_age: Duration) -> String {
    let secure = if state.config.session.secure_cookie {
        "; Secure"
    } else {
        ""
    };
    // Lax, not Strict: the provider sends the person back with a top-level GET from its own
    // site, and the cookie must come along.
    format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        flow_cookie_name(state),
        max_age.as_secs()
    )
}

/// `GET /login/oidc`: sends the person to the provider.
pub async fn start(State(state): State<AppState>) -> Response {
    let Some(oidc) = state.oidc.clone() else {
        return ApiError::NotFound("sign-in with a provider is not set up".into()).into_response();
    };
    let result = async {
        let metadata = oidc.metadata(false).await?;
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(oidc.config.client_id.clone()),
            Some(ClientSecret::new(
                oidc.config.client_secret.expose_secret().to_string(),
            )),
        )
        .set_redirect_uri(oidc.redirect_url(&state.config.public_base())?);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, csrf, nonce) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("email".into()))
            .set_pkce_challenge(challenge)
            .url();
        // The three values are URL-safe base64, so a dot separates them unambiguously.
        let value = format!("{}.{}.{}", csrf.secret(), nonce.secret(), verifier.secret());
        Ok::<_, Failure>(
            (
                [(header::SET_COOKIE, flow_cookie(&state, &value, FLOW_TTL))],
                Redirect::to(url.as_str()),
            )
                .into_response(),
        )
    }
    .await;
    result.unwrap_or_else(|failure| failed(&state, failure))
}

#[derive(Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /login/oidc/callback`: the provider sends the person back with a code; it is
/// exchanged for an ID token, which is verified, and the person it names is signed in.
pub async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<Callback>,
) -> Response {
    let Some(oidc) = state.oidc.clone() else {
        return ApiError::NotFound("sign-in with a provider is not set up".into()).into_response();
    };
    let result = finish(&state, &oidc, &headers, query).await;
    // The flow is over either way: its cookie goes.
    let forget = flow_cookie(&state, "", Duration::ZERO);
    let mut response = match result {
        Ok(response) => response,
        Err(failure) => failed(&state, failure),
    };
    if let Ok(value) = header::HeaderValue::from_str(&forget) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

async fn finish(
    state: &AppState,
    oidc: &Oidc,
    headers: &HeaderMap,
    query: Callback,
) -> Result<Response, Failure> {
    if let Some(error) = query.error {
        let detail = query.error_description.unwrap_or_default();
        return Err(Failure::Denied(
            format!("{error} {detail}").trim().to_string(),
        ));
    }
    let flow = session::cookie_value(headers, flow_cookie_name(state)).ok_or(Failure::Flow)?;
    let mut parts = flow.splitn(3, '.');
    let (Some(csrf), Some(nonce), Some(verifier)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(Failure::Flow);
    };
    let returned = query.state.unwrap_or_default();
    if !bool::from(returned.as_bytes().ct_eq(csrf.as_bytes())) {
        return Err(Failure::Flow);
    }
    let code = query.code.filter(|c| !c.is_empty()).ok_or(Failure::Flow)?;
    let _exchange = oidc.exchanges.try_acquire().map_err(|_| Failure::Busy)?;

    let client = |metadata: CoreProviderMetadata| -> Result<_, Failure> {
        Ok(CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(oidc.config.client_id.clone()),
            Some(ClientSecret::new(
                oidc.config.client_secret.expose_secret().to_string(),
            )),
        )
        .set_redirect_uri(oidc.redirect_url(&state.config.public_base())?))
    };
    let provider = client(oidc.metadata(false).await?)?;
    // A code is good once: it is exchanged once, whatever happens next.
    let tokens = provider
        .exchange_code(AuthorizationCode::new(code))
        .map_err(|e| Failure::Provider(chain(&e)))?
        .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_string()))
        .request_async(&oidc.http)
        .await
        .map_err(|e| Failure::Provider(format!("the code exchange failed: {}", chain(&e))))?;
    let token = tokens
        .id_token()
        .ok_or_else(|| Failure::Provider("the provider sent no ID token".into()))?;
    let nonce = Nonce::new(nonce.to_string());
    let now = state.clock.now();
    let verify = |client: &CoreClient<_, _, _, _, _, _>| {
        token
            .claims(&client.id_token_verifier().set_time_fn(move || now), &nonce)
            .cloned()
    };
    let claims = match verify(&provider) {
        // The provider may have started signing with a key published since the cache was
        // filled: fetch its keys once more before refusing.
        Err(ClaimsVerificationError::SignatureVerification(_)) => {
            verify(&client(oidc.metadata(true).await?)?)
        }
        other => other,
    }
    .map_err(|e| Failure::Token(chain(&e)))?;

    let email = claims
        .email()
        .map(|e| e.as_str().trim().to_lowercase())
        .ok_or_else(|| {
            Failure::Refused("the provider did not say who you are (no email)".into())
        })?;
    if claims.email_verified() != Some(true) {
        return Err(Failure::Refused(format!(
            "the provider has not verified {email}"
        )));
    }
    let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
    if !oidc.config.allowed_domains.iter().any(|d| d == domain) {
        return Err(Failure::Refused(format!(
            "addresses at {domain} may not sign in here"
        )));
    }
    let pool = state.store.pool();
    let known = crate::projections::users::credentials(pool, &email)
        .await
        .map_err(|_| Failure::Unavailable)?;
    if known.is_none() {
        return Err(Failure::Refused(format!(
            "no one here has the email {email}; ask an admin to invite you"
        )));
    }
    let cookie = session::start(pool, &email, &state.config.session, state.clock.now())
        .await
        .map_err(|_| Failure::Unavailable)?;
    tracing::info!(%email, "signed in through the provider");
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/inbox")).into_response())
}

fn failed(state: &AppState, failure: Failure) -> Response {
    let (status, text) = match &failure {
        Failure::Provider(why) => (
            StatusCode::BAD_GATEWAY,
            format!("The sign-in provider could not be used: {why}."),
        ),
        Failure::Flow => (
            StatusCode::BAD_REQUEST,
            "This sign-in was started elsewhere or took too long. Start again.".to_string(),
        ),
        Failure::Denied(why) => (
            StatusCode::FORBIDDEN,
            format!("The sign-in provider did not sign you in: {why}."),
        ),
        Failure::Token(why) => (
            StatusCode::UNAUTHORIZED,
            format!("The identity the provider sent did not verify: {why}."),
        ),
        Failure::Refused(why) => (StatusCode::FORBIDDEN, format!("Not signed in: {why}.")),
        Failure::Busy => (
            StatusCode::TOO_MANY_REQUESTS,
            "Too many sign-ins right now; try again in a few seconds.".to_string(),
        ),
        Failure::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "ExecOps cannot reach its database; try again shortly.".to_string(),
        ),
    };
    tracing::warn!(?failure, "a sign-in through the provider failed");
    let mut response = crate::web::pages::login_error(state, status, &text);
    if matches!(failure, Failure::Busy | Failure::Unavailable) {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(5));
    }
    response
}
