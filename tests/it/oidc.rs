//! Sign-in through an OpenID Connect provider. The provider is a small server this test
//! runs: it publishes its metadata and keys, sends the person back with a code, and answers
//! the code exchange with an ID token signed by its own RSA key. ExecOps verifies that token
//! with the `openidconnect` crate, as it would Google's or Okta's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use chrono::Utc;
use execops::domain::user::{Email, UserCommand};
use execops::domain::Role;
use openidconnect::core::{
    CoreIdToken, CoreIdTokenClaims, CoreJsonWebKeySet, CoreJwsSigningAlgorithm,
    CoreRsaPrivateSigningKey,
};
use openidconnect::{
    Audience, EmptyAdditionalClaims, EndUserEmail, IssuerUrl, JsonWebKeyId, Nonce,
    PrivateSigningKey, StandardClaims, SubjectIdentifier,
};
use reqwest::redirect::Policy;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::api::person;
use crate::common::{config, TestApp};
use crate::pages::page;

const CLIENT_ID: &str = "execops-test-client";
const CLIENT_SECRET: &str = "a client secret the provider checks";
const KEY_ID: &str = "provider-key-1";

/// How the provider's next ID token is made.
#[derive(Clone, Copy, PartialEq)]
enum Token {
    /// Signed by the provider's published key, for ExecOps's client id.
    Honest,
    /// Signed by another key under the provider's key id.
    Forged,
    /// Signed by the provider, but for another client.
    ForSomeoneElse,
}

struct Issued {
    nonce: String,
    challenge: String,
    redirect_uri: String,
}

struct Provider {
    issuer: String,
    token: Token,
    email: String,
    email_verified: bool,
    codes: HashMap<String, Issued>,
    exchanges: usize,
    /// Whether the provider has moved to its next signing key.
    rotated: bool,
}

type Shared = Arc<Mutex<Provider>>;

fn key(name: &str, kid: &str) -> CoreRsaPrivateSigningKey {
    let pem = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("fixtures/oidc/{name}.pem")),
    )
    .expect("the test key");
    CoreRsaPrivateSigningKey::from_pem(&pem, Some(JsonWebKeyId::new(kid.into())))
        .expect("a PKCS#1 RSA key")
}

async fn discovery(State(provider): State<Shared>) -> Json<serde_json::Value> {
    let issuer = provider.lock().expect("provider").issuer.clone();
    Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
}

/// The provider's signing key: the first one, or after a rotation the next one under a new
/// key id.
fn signing_key(rotated: bool) -> CoreRsaPrivateSigningKey {
    if rotated {
        key("forger", "provider-key-2")
    } else {
        key("provider", KEY_ID)
    }
}

async fn jwks(State(provider): State<Shared>) -> Json<CoreJsonWebKeySet> {
    let rotated = provider.lock().expect("provider").rotated;
    Json(CoreJsonWebKeySet::new(vec![
        signing_key(rotated).as_verification_key()
    ]))
}

async fn authorize(
    State(provider): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let field = |name: &str| query.get(name).cloned().unwrap_or_default();
    // What a real provider insists on before it signs anyone in.
    if field("client_id") != CLIENT_ID
        || field("response_type") != "code"
        || field("code_challenge_method") != "S256"
        || !field("scope").split(' ').any(|s| s == "openid")
        || field("state").is_empty()
        || field("nonce").is_empty()
    {
        return (
            StatusCode::BAD_REQUEST,
            format!("bad authorize request: {query:?}"),
        )
            .into_response();
    }
    let code = format!("code-{}", uuid::Uuid::new_v4());
    let redirect_uri = field("redirect_uri");
    provider.lock().expect("provider").codes.insert(
        code.clone(),
        Issued {
            nonce: field("nonce"),
            challenge: field("code_challenge"),
            redirect_uri: redirect_uri.clone(),
        },
    );
    Redirect::to(&format!(
        "{redirect_uri}?code={code}&state={}",
        field("state")
    ))
    .into_response()
}

#[derive(Deserialize)]
struct TokenRequest {
    grant_type: String,
    code: String,
    redirect_uri: String,
    code_verifier: String,
}

async fn token(
    State(provider): State<Shared>,
    headers: HeaderMap,
    Form(request): Form<TokenRequest>,
) -> Response {
    let refuse = |why: &str| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant", "error_description": why})),
        )
            .into_response()
    };
    // RFC 6749 2.3.1: Basic authentication of the form-encoded client id and secret.
    let client = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|pair| {
            let (id, secret) = pair.split_once(':')?;
            let decode = |part: &str| {
                url::form_urlencoded::parse(format!("x={part}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
            };
            Some((decode(id)?, decode(secret)?))
        });
    if client != Some((CLIENT_ID.to_string(), CLIENT_SECRET.to_string())) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let mut provider = provider.lock().expect("provider");
    provider.exchanges += 1;
    let Some(issued) = provider.codes.remove(&request.code) else {
        return refuse("unknown or used code");
    };
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(request.code_verifier.as_bytes()));
    if request.grant_type != "authorization_code"
        || request.redirect_uri != issued.redirect_uri
        || challenge != issued.challenge
    {
        return refuse("the verifier or redirect URI does not match");
    }
    let audience = match provider.token {
        Token::ForSomeoneElse => "another-client",
        _ => CLIENT_ID,
    };
    let now = Utc::now();
    let claims = CoreIdTokenClaims::new(
        IssuerUrl::new(provider.issuer.clone()).expect("issuer"),
        vec![Audience::new(audience.into())],
        now + chrono::Duration::minutes(5),
        now,
        StandardClaims::new(SubjectIdentifier::new("subject-1".into()))
            .set_email(Some(EndUserEmail::new(provider.email.clone())))
            .set_email_verified(Some(provider.email_verified)),
        EmptyAdditionalClaims {},
    )
    .set_nonce(Some(Nonce::new(issued.nonce)));
    let signer = match provider.token {
        // Another key under the published key's id: only the signature can tell.
        Token::Forged => key("forger", KEY_ID),
        _ => signing_key(provider.rotated),
    };
    let id_token = CoreIdToken::new(
        claims,
        &signer,
        CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        None,
        None,
    )
    .expect("signs");
    Json(json!({
        "access_token": "an access token",
        "token_type": "bearer",
        "expires_in": 300,
        "id_token": id_token,
    }))
    .into_response()
}

async fn provider() -> (SocketAddr, Shared) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let addr = listener.local_addr().expect("an address");
    let shared = Arc::new(Mutex::new(Provider {
        issuer: format!("http://{addr}"),
        token: Token::Honest,
        email: "ada@example.com".into(),
        email_verified: true,
        codes: HashMap::new(),
        exchanges: 0,
        rotated: false,
    }));
    let router = Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/authorize", get(authorize))
        .route("/token", post(token))
        .with_state(shared.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, shared)
}

async fn app_for(provider: SocketAddr) -> TestApp {
    let issuer = format!("http://{provider}");
    let app = TestApp::spawn_with(config(&[
        ("EXECOPS_PUBLIC_URL", "http://execops.test"),
        ("EXECOPS_OIDC_ISSUER", issuer.as_str()),
        ("EXECOPS_OIDC_CLIENT_ID", CLIENT_ID),
        ("EXECOPS_OIDC_CLIENT_SECRET", CLIENT_SECRET),
        ("EXECOPS_OIDC_ALLOWED_DOMAINS", "example.com"),
        ("EXECOPS_OIDC_LABEL", "Example SSO"),
    ]))
    .await;
    person(&app, "ada@example.com", Role::Approver).await;
    person(&app, "gone@example.com", Role::Approver).await;
    app
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("a client")
}

fn cookies(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect()
}

/// What the callback answered: its status, page, and the cookies it set.
struct Ending {
    status: u16,
    location: Option<String>,
    body: String,
    cookies: Vec<String>,
}

/// Leaves for the provider and comes back, as a browser would, letting `tamper` change the
/// callback's query first.
async fn sign_in_through(app: &TestApp, tamper: impl FnOnce(String) -> String) -> Ending {
    let client = browser();
    let start = client
        .get(app.url("/login/oidc"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(start.status().as_u16(), 303, "sent to the provider");
    let flow = cookies(&start)
        .into_iter()
        .find(|c| c.starts_with("execops_oidc="))
        .expect("the flow's cookie");
    assert!(
        flow.contains("HttpOnly") && flow.contains("SameSite=Lax"),
        "{flow}"
    );
    let flow = flow.split(';').next().expect("name=value").to_string();
    let authorize = start.headers()["location"]
        .to_str()
        .expect("a URL")
        .to_string();
    let back = client
        .get(&authorize)
        .send()
        .await
        .expect("the provider answers");
    assert_eq!(
        back.status().as_u16(),
        303,
        "the provider sends the person back"
    );
    let callback =
        url::Url::parse(back.headers()["location"].to_str().expect("a URL")).expect("a URL");
    assert_eq!(
        callback.as_str().split('?').next(),
        Some("http://execops.test/login/oidc/callback")
    );
    let query = tamper(callback.query().unwrap_or_default().to_string());
    let end = client
        .get(app.url(&format!("/login/oidc/callback?{query}")))
        .header("cookie", flow)
        .send()
        .await
        .expect("an answer");
    let status = end.status().as_u16();
    let location = end
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let cookies = cookies(&end);
    let body = end.text().await.expect("a page");
    Ending {
        status,
        location,
        body,
        cookies,
    }
}

fn session_cookie(ending: &Ending) -> Option<String> {
    ending
        .cookies
        .iter()
        .find(|c| c.starts_with("execops_session="))
        .map(|c| c.split(';').next().expect("name=value").to_string())
}

#[tokio::test]
async fn a_token_the_provider_signed_signs_a_known_person_in() {
    let (addr, provider) = provider().await;
    let app = app_for(addr).await;
    let (_, login, _) = page(&app, None, "/login").await;
    assert!(
        login.contains("href=\"/login/oidc\"") && login.contains("Example SSO"),
        "the sign-in page offers the provider"
    );

    let ending = sign_in_through(&app, |q| q).await;
    assert_eq!(
        (ending.status, ending.location.as_deref()),
        (303, Some("/inbox")),
        "{}",
        ending.body
    );
    let cookie = session_cookie(&ending).expect("a session");
    assert!(
        ending
            .cookies
            .iter()
            .any(|c| c.starts_with("execops_oidc=;") && c.contains("Max-Age=0")),
        "the flow's cookie is forgotten: {:?}",
        ending.cookies
    );
    let (status, inbox, _) = page(&app, Some(&cookie), "/inbox").await;
    assert_eq!(status, 200);
    assert!(
        inbox.contains("ada@example.com"),
        "signed in as the person the token names"
    );
    assert_eq!(provider.lock().expect("provider").exchanges, 1);

    // The provider moves to a new key while ExecOps holds the old one in its cache: the
    // next token names a key it has not seen, and ExecOps fetches the keys again.
    provider.lock().expect("provider").rotated = true;
    let ending = sign_in_through(&app, |q| q).await;
    assert_eq!(
        (ending.status, ending.location.as_deref()),
        (303, Some("/inbox")),
        "{}",
        ending.body
    );
    assert!(session_cookie(&ending).is_some());
    app.stop().await;
}

#[tokio::test]
async fn a_forged_or_misaddressed_token_and_a_refused_person_sign_no_one_in() {
    let (addr, provider) = provider().await;
    let app = app_for(addr).await;
    execops::commands::people::change(
        &app.store,
        &Email::parse("gone@example.com").expect("an email"),
        UserCommand::Disable { by: "test".into() },
        Default::default(),
    )
    .await
    .expect("disabled");

    struct Case {
        name: &'static str,
        token: Token,
        email: &'static str,
        verified: bool,
        status: u16,
        says: &'static str,
    }
    let cases = [
        Case {
            name: "signed by another key",
            token: Token::Forged,
            email: "ada@example.com",
            verified: true,
            status: 401,
            says: "did not verify",
        },
        Case {
            name: "for another client",
            token: Token::ForSomeoneElse,
            email: "ada@example.com",
            verified: true,
            status: 401,
            says: "did not verify",
        },
        Case {
            name: "an unverified email",
            token: Token::Honest,
            email: "ada@example.com",
            verified: false,
            status: 403,
            says: "has not verified",
        },
        Case {
            name: "another domain",
            token: Token::Honest,
            email: "ada@elsewhere.com",
            verified: true,
            status: 403,
            says: "elsewhere.com may not sign in",
        },
        Case {
            name: "a stranger",
            token: Token::Honest,
            email: "stranger@example.com",
            verified: true,
            status: 403,
            says: "ask an admin to invite you",
        },
        Case {
            name: "a disabled person",
            token: Token::Honest,
            email: "gone@example.com",
            verified: true,
            status: 403,
            says: "ask an admin to invite you",
        },
    ];
    for case in cases {
        {
            let mut provider = provider.lock().expect("provider");
            provider.token = case.token;
            provider.email = case.email.into();
            provider.email_verified = case.verified;
        }
        let ending = sign_in_through(&app, |q| q).await;
        assert_eq!(ending.status, case.status, "{}: {}", case.name, ending.body);
        assert!(
            ending.body.contains(case.says),
            "{}: {}",
            case.name,
            ending.body
        );
        assert_eq!(session_cookie(&ending), None, "{}: no session", case.name);
    }

    // A callback that does not carry the state its flow was started with.
    provider.lock().expect("provider").token = Token::Honest;
    provider.lock().expect("provider").email = "ada@example.com".into();
    provider.lock().expect("provider").email_verified = true;
    let before = provider.lock().expect("provider").exchanges;
    let ending = sign_in_through(&app, |q| q.replace("state=", "state=x")).await;
    assert_eq!(ending.status, 400, "{}", ending.body);
    assert!(ending.body.contains("Start again"), "{}", ending.body);
    assert_eq!(session_cookie(&ending), None);
    assert_eq!(
        provider.lock().expect("provider").exchanges,
        before,
        "a callback from another flow is not exchanged"
    );
    app.stop().await;
}
