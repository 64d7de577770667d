//! The example plugins that call other services (`add-to-group`,
//! `captcha-verify`, `migrate-user`) through the real host, against local
//! fake services on 127.0.0.1 that record what they are sent: the requests
//! the READMEs document, the answers they expect, and the error paths (a
//! missing config key, a host the tenant does not allow, a service that
//! cannot be reached).

use crate::common::*;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use triggerfish::dispatch::ErrorKind;
use triggerfish::tenant::registry::Tenants;
use triggerfish::tenant::Tenant;

// ------------------------------------------------------- fake services

/// At most this many requests are recorded; later ones are answered `503`.
const MAX_CALLS: usize = 100;
/// The fake services stop after this long even if nothing drops them.
const LIFETIME: Duration = Duration::from_secs(120);

const ADMIN_TOKEN: &str = "admin-t0ken";
const CAPTCHA_SECRET: &str = "s3cret";
const GOOD_CAPTCHA: &str = "good-token";
const DIRECTORY_TOKEN: &str = "dir-t0ken";
const PASSWORD: &str = "correct horse";

/// A request the fake services were sent.
#[derive(Debug, Clone, PartialEq)]
struct Call {
    method: String,
    path: String,
    content_type: String,
    authorization: Option<String>,
    body: String,
}

impl Call {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// An identity server's admin endpoint (`/admin/add-user-to-group`), a
/// CAPTCHA verifier (`/recaptcha/api/siteverify`) and a user directory
/// (`/users/authenticate`, `/users/lookup`) on a loopback port, each
/// answering as the plugin's README says its service does. Stops when
/// dropped, or after [`LIFETIME`].
struct FakeServices {
    authority: String,
    calls: Arc<Mutex<Vec<Call>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeServices {
    async fn start() -> FakeServices {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let record = calls.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: String| {
                let record = record.clone();
                async move {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .map(|v| v.to_str().unwrap_or("(not text)").to_owned())
                    };
                    let call = Call {
                        method: method.to_string(),
                        path: uri.path().to_owned(),
                        content_type: header("content-type").unwrap_or_default(),
                        authorization: header("authorization"),
                        body,
                    };
                    {
                        let mut calls = record.lock().unwrap();
                        if calls.len() >= MAX_CALLS {
                            return StatusCode::SERVICE_UNAVAILABLE.into_response();
                        }
                        calls.push(call.clone());
                    }
                    answer(&call).into_response()
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let _ = tokio::time::timeout(LIFETIME, axum::serve(listener, app)).await;
        });
        FakeServices {
            authority,
            calls,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.authority)
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

impl Drop for FakeServices {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What each fake service answers.
fn answer(call: &Call) -> (StatusCode, String) {
    let ok = |body: Value| (StatusCode::OK, body.to_string());
    let error =
        |status: StatusCode, message: &str| (status, json!({ "message": message }).to_string());
    let json = || serde_json::from_str::<Value>(&call.body).unwrap_or_default();
    let bearer = |token: &str| call.authorization.as_deref() == Some(&format!("Bearer {token}"));
    match (call.method.as_str(), call.path.as_str()) {
        ("POST", "/admin/add-user-to-group") => {
            if !bearer(ADMIN_TOKEN) {
                error(StatusCode::UNAUTHORIZED, "bad token")
            } else if json()["groupName"] == "missing" {
                error(StatusCode::NOT_FOUND, "no such group")
            } else {
                ok(json!({}))
            }
        }
        ("POST", "/recaptcha/api/siteverify") => {
            if call.body == format!("secret={CAPTCHA_SECRET}&response={GOOD_CAPTCHA}") {
                ok(
                    json!({"success": true, "challenge_ts": "2025-01-01T00:00:00Z", "hostname": "localhost"}),
                )
            } else {
                ok(json!({"success": false, "error-codes": ["invalid-input-response"]}))
            }
        }
        ("POST", path @ ("/users/authenticate" | "/users/lookup")) => {
            let request = json();
            if !bearer(DIRECTORY_TOKEN) {
                error(StatusCode::FORBIDDEN, "bad token")
            } else if request["username"] != "jane.doe" {
                error(StatusCode::NOT_FOUND, "no such user")
            } else if path == "/users/authenticate" && request["password"] != PASSWORD {
                error(StatusCode::UNAUTHORIZED, "wrong password")
            } else {
                ok(json!({"userAttributes": {
                    "email": "jane@example.com",
                    "name": "Jane Doe",
                    "sub": "legacy-0001",
                    "custom:tier": "gold"
                }}))
            }
        }
        ("POST", path) if path.starts_with("/broken/") => {
            error(StatusCode::INTERNAL_SERVER_ERROR, "database down")
        }
        _ => error(StatusCode::NOT_FOUND, "no such route"),
    }
}

/// An address on which nothing listens: a port bound, then let go.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

// ------------------------------------------------------------ helpers

/// Loopback is what the tenants may call (any port).
const ALLOW_LOOPBACK: &str = "[outbound]\nallowed-hosts = [\"127.0.0.1\"]\n";

/// A host whose tenants each have `guest` as `file` with the `tenant.toml`
/// text given.
async fn tenants_with(
    file: &str,
    guest: &str,
    settings: &[(&str, String)],
) -> (PluginsDir, Arc<Tenants>) {
    let dir = PluginsDir::new();
    for (name, toml) in settings {
        dir.plugin(name, file, guest).settings(name, toml);
    }
    let tenants = tenants(&dir).await;
    for (name, _) in settings {
        let tenant = tenants.tenant(name).expect("the tenant");
        assert!(tenant.failures.is_empty(), "{name}: {:?}", tenant.failures);
    }
    (dir, tenants)
}

/// Asserts the chain was denied with a message containing every one of
/// `parts`, and returns the message.
async fn denied(tenant: &Tenant, event: Value, parts: &[&str]) -> String {
    let error = chain_error(tenant, event).await;
    assert_eq!(error.kind, ErrorKind::Denied, "{}", error.message);
    for part in parts {
        assert!(
            error.message.contains(part),
            "{part:?} in {}",
            error.message
        );
    }
    error.message
}

// ------------------------------------------------------- add-to-group

fn post_confirmation(source: &str) -> Value {
    cognito_event(
        "1",
        source,
        json!({
            "userAttributes": {
                "sub": "a1b2c3d4-5678-90ab-cdef-EXAMPLE11111",
                "cognito:user_status": "CONFIRMED",
                "email_verified": "true",
                "email": "jane@example.com"
            },
            "clientMetadata": {}
        }),
        json!({}),
    )
}

fn add_to_group_toml(group: &str, admin_url: &str, token: Option<&str>) -> String {
    let mut toml = format!(
        "[plugins.20-add-to-group.config]\ngroup = \"{group}\"\nadmin-url = \"{admin_url}\"\n"
    );
    if let Some(token) = token {
        toml.push_str(&format!(
            "[plugins.20-add-to-group.secrets]\ntoken = \"{token}\"\n"
        ));
    }
    toml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_to_group_posts_the_confirmed_user_to_the_admin_endpoint() {
    let services = FakeServices::start().await;
    let admin = services.url("/admin/add-user-to-group");
    let (_dir, tenants) = tenants_with(
        "20-add-to-group.wasm",
        guests::ADD_TO_GROUP,
        &[(
            "t",
            format!(
                "{ALLOW_LOOPBACK}{}",
                add_to_group_toml("customers", &admin, Some(ADMIN_TOKEN))
            ),
        )],
    )
    .await;
    let tenant = tenants.tenant("t").unwrap();

    let event = post_confirmation("PostConfirmation_ConfirmSignUp");
    assert_eq!(run(&tenant, event.clone()).await, event);
    let calls = services.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    assert_eq!(
        (call.method.as_str(), call.path.as_str()),
        ("POST", "/admin/add-user-to-group")
    );
    assert_eq!(call.content_type, "application/json");
    assert_eq!(
        call.authorization.as_deref(),
        Some(format!("Bearer {ADMIN_TOKEN}").as_str())
    );
    assert_eq!(
        call.json(),
        json!({"userPoolId": "us-east-1_EXAMPLE", "username": "jane.doe", "groupName": "customers"})
    );

    // A password reset confirms no sign-up: no call.
    let event = post_confirmation("PostConfirmation_ConfirmForgotPassword");
    assert_eq!(run(&tenant, event.clone()).await, event);
    assert_eq!(services.calls().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_to_group_fails_the_confirmation_when_the_group_cannot_be_joined() {
    let services = FakeServices::start().await;
    let admin = services.url("/admin/add-user-to-group");
    let down = format!("http://{}/admin/add-user-to-group", closed_port());
    let (_dir, tenants) = tenants_with(
        "20-add-to-group.wasm",
        guests::ADD_TO_GROUP,
        &[
            (
                "missing-group",
                format!(
                    "{ALLOW_LOOPBACK}{}",
                    add_to_group_toml("missing", &admin, Some(ADMIN_TOKEN))
                ),
            ),
            (
                "no-token",
                format!(
                    "{ALLOW_LOOPBACK}{}",
                    add_to_group_toml("customers", &admin, None)
                ),
            ),
            (
                "down",
                format!(
                    "{ALLOW_LOOPBACK}{}",
                    add_to_group_toml("customers", &down, Some(ADMIN_TOKEN))
                ),
            ),
            (
                "not-allowed",
                format!(
                    "[outbound]\nallowed-hosts = [\"127.0.0.1:1\"]\n{}",
                    add_to_group_toml("customers", &admin, Some(ADMIN_TOKEN))
                ),
            ),
            (
                "unconfigured",
                format!(
                    "{ALLOW_LOOPBACK}[plugins.20-add-to-group.config]\nadmin-url = \"{admin}\"\n"
                ),
            ),
        ],
    )
    .await;
    let event = || post_confirmation("PostConfirmation_ConfirmSignUp");
    let tenant = |name| tenants.tenant(name).unwrap();

    let message = denied(
        &tenant("missing-group"),
        event(),
        &[
            "Could not add jane.doe to group missing",
            "answered 404",
            "no such group",
        ],
    )
    .await;
    let error = chain_error(&tenant("missing-group"), event()).await;
    assert_eq!(
        error.cognito_message(),
        format!("PostConfirmation failed with error {message}.")
    );
    denied(&tenant("no-token"), event(), &["answered 401", "bad token"]).await;
    assert_eq!(services.calls().len(), 3);

    denied(
        &tenant("down"),
        event(),
        &["Could not add jane.doe to group customers", &down],
    )
    .await;
    denied(
        &tenant("not-allowed"),
        event(),
        &["Could not add jane.doe", "denied", "allowed-hosts"],
    )
    .await;
    denied(&tenant("unconfigured"), event(), &["`group`"]).await;
    assert_eq!(
        services.calls().len(),
        3,
        "a refused or unconfigured request never reached the endpoint"
    );
}

// ------------------------------------------------------ captcha-verify

async fn answer_correct(tenant: &Tenant, answer: &str) -> Value {
    run(tenant, verify_event(json!({}), answer)).await["response"]["answerCorrect"].clone()
}

fn captcha_toml(verify_url: &str) -> String {
    format!(
        "[plugins.30-captcha.config]\nsite-key = \"site-key-1\"\nverify-url = \"{verify_url}\"\n\
         [plugins.30-captcha.secrets]\nsecret = \"{CAPTCHA_SECRET}\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captcha_verify_signs_in_after_the_password_and_a_solved_captcha() {
    let services = FakeServices::start().await;
    let verifier = services.url("/recaptcha/api/siteverify");
    let (_dir, tenants) = tenants_with(
        "30-captcha.wasm",
        guests::CAPTCHA_VERIFY,
        &[("t", format!("{ALLOW_LOOPBACK}{}", captcha_toml(&verifier)))],
    )
    .await;
    let tenant = tenants.tenant("t").unwrap();
    let next = |name: &str| (json!(name), json!(false), json!(false));
    let failed = (Value::Null, json!(false), json!(true));

    // CUSTOM_WITH_SRP: the password, then the CAPTCHA.
    let srp = challenge("SRP_A", true, None);
    let password = challenge("PASSWORD_VERIFIER", true, None);
    assert_eq!(
        define(&tenant, vec![srp.clone()]).await,
        next("PASSWORD_VERIFIER")
    );
    assert_eq!(
        define(&tenant, vec![srp.clone(), password.clone()]).await,
        next("CUSTOM_CHALLENGE")
    );

    let created = run(&tenant, create_event(vec![srp.clone(), password.clone()])).await;
    assert_eq!(
        created["response"],
        json!({
            "publicChallengeParameters": {"siteKey": "site-key-1"},
            "privateChallengeParameters": {},
            "challengeMetadata": "CAPTCHA_CHALLENGE"
        })
    );

    assert_eq!(answer_correct(&tenant, GOOD_CAPTCHA).await, true);
    assert_eq!(answer_correct(&tenant, "forged-token").await, false);
    let calls = services.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    for (call, token) in calls.iter().zip([GOOD_CAPTCHA, "forged-token"]) {
        assert_eq!(
            (call.method.as_str(), call.path.as_str()),
            ("POST", "/recaptcha/api/siteverify")
        );
        assert_eq!(call.content_type, "application/x-www-form-urlencoded");
        assert_eq!(
            call.body,
            format!("secret={CAPTCHA_SECRET}&response={token}")
        );
    }

    // Tokens after a solved CAPTCHA; a failed one ends the sign-in.
    let solved = vec![
        srp.clone(),
        password.clone(),
        challenge("CUSTOM_CHALLENGE", true, None),
    ];
    assert_eq!(
        define(&tenant, solved).await,
        (Value::Null, json!(true), json!(false))
    );
    let unsolved = vec![
        srp.clone(),
        password.clone(),
        challenge("CUSTOM_CHALLENGE", false, None),
    ];
    assert_eq!(define(&tenant, unsolved).await, failed);
    // A CAPTCHA is no password.
    assert_eq!(define(&tenant, vec![]).await, failed);
    assert_eq!(
        define(&tenant, vec![challenge("CUSTOM_CHALLENGE", true, None)]).await,
        failed
    );
    assert_eq!(
        define(
            &tenant,
            vec![srp, challenge("PASSWORD_VERIFIER", false, None)]
        )
        .await,
        failed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captcha_verify_never_lets_a_sign_in_through_on_an_error() {
    let services = FakeServices::start().await;
    let verifier = services.url("/recaptcha/api/siteverify");
    let (_dir, tenants) = tenants_with(
        "30-captcha.wasm",
        guests::CAPTCHA_VERIFY,
        &[
            (
                "down",
                format!(
                    "{ALLOW_LOOPBACK}{}",
                    captcha_toml(&format!(
                        "http://{}/recaptcha/api/siteverify",
                        closed_port()
                    ))
                ),
            ),
            (
                "error-answer",
                format!(
                    "{ALLOW_LOOPBACK}{}",
                    captcha_toml(&services.url("/broken/siteverify"))
                ),
            ),
            ("not-allowed", captcha_toml(&verifier)),
            (
                "unconfigured",
                format!(
                    "{ALLOW_LOOPBACK}[plugins.30-captcha.config]\nverify-url = \"{verifier}\"\n"
                ),
            ),
        ],
    )
    .await;
    let tenant = |name| tenants.tenant(name).unwrap();

    // A verifier that cannot be reached, or answers an error: wrong.
    assert_eq!(answer_correct(&tenant("down"), GOOD_CAPTCHA).await, false);
    assert_eq!(
        answer_correct(&tenant("error-answer"), GOOD_CAPTCHA).await,
        false
    );
    assert_eq!(services.calls().len(), 1);

    // A host the tenant does not allow: an error, and nothing sent.
    let message = denied(
        &tenant("not-allowed"),
        verify_event(json!({}), GOOD_CAPTCHA),
        &["Cannot verify the CAPTCHA", "denied", "allowed-hosts"],
    )
    .await;
    assert!(message.contains(&verifier), "{message}");
    assert_eq!(
        services.calls().len(),
        1,
        "the refused request was not sent"
    );

    // Missing keys are named, by the trigger that needs them.
    denied(
        &tenant("unconfigured"),
        verify_event(json!({}), GOOD_CAPTCHA),
        &["`secret`"],
    )
    .await;
    let error = chain_error(&tenant("unconfigured"), create_event(vec![])).await;
    assert!(error.message.contains("`site-key`"), "{}", error.message);
    assert!(
        error
            .cognito_message()
            .starts_with("CreateAuthChallenge failed with error "),
        "{}",
        error.cognito_message()
    );
    assert_eq!(services.calls().len(), 1);
}

// -------------------------------------------------------- migrate-user

fn migration_event(source: &str, password: Option<&str>) -> Value {
    let mut request = json!({"validationData": null, "clientMetadata": {}});
    if let Some(password) = password {
        request["password"] = json!(password);
    }
    cognito_event(
        "1",
        source,
        request,
        json!({
            "userAttributes": null,
            "finalUserStatus": null,
            "messageAction": null,
            "desiredDeliveryMediums": null,
            "forceAliasCreation": null,
            "enableSMSMFA": null
        }),
    )
}

fn sign_in(password: &str) -> Value {
    migration_event("UserMigration_Authentication", Some(password))
}

fn forgot_password() -> Value {
    migration_event("UserMigration_ForgotPassword", None)
}

fn migrate_toml(directory_url: &str) -> String {
    format!(
        "[plugins.10-migrate-user.config]\ndirectory-url = \"{directory_url}\"\n\
         [plugins.10-migrate-user.secrets]\ntoken = \"{DIRECTORY_TOKEN}\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_user_brings_users_in_from_the_directory() {
    let services = FakeServices::start().await;
    let (_dir, tenants) = tenants_with(
        "10-migrate-user.wasm",
        guests::MIGRATE_USER,
        &[(
            "t",
            format!("{ALLOW_LOOPBACK}{}", migrate_toml(&services.url("/users"))),
        )],
    )
    .await;
    let tenant = tenants.tenant("t").unwrap();
    let attributes = json!({
        "email": "jane@example.com",
        "name": "Jane Doe",
        "custom:tier": "gold",
        "email_verified": "true"
    });

    let out = run(&tenant, sign_in(PASSWORD)).await;
    let response = &out["response"];
    assert_eq!(response["userAttributes"], attributes);
    assert_eq!(response["finalUserStatus"], "CONFIRMED");
    assert_eq!(response["messageAction"], "SUPPRESS");
    let calls = services.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        (calls[0].method.as_str(), calls[0].path.as_str()),
        ("POST", "/users/authenticate")
    );
    assert_eq!(calls[0].content_type, "application/json");
    assert_eq!(
        calls[0].authorization.as_deref(),
        Some(format!("Bearer {DIRECTORY_TOKEN}").as_str())
    );
    assert_eq!(
        calls[0].json(),
        json!({"username": "jane.doe", "password": PASSWORD})
    );

    let out = run(&tenant, forgot_password()).await;
    let response = &out["response"];
    assert_eq!(response["userAttributes"], attributes);
    assert_eq!(response["finalUserStatus"], "RESET_REQUIRED");
    assert_eq!(response["messageAction"], "SUPPRESS");
    let calls = services.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[1].path, "/users/lookup");
    assert_eq!(calls[1].json(), json!({"username": "jane.doe"}));

    // A wrong password, and a user the directory does not know.
    let error = chain_error(&tenant, sign_in("tr0ub4dor")).await;
    assert_eq!(error.kind, ErrorKind::Denied);
    assert_eq!(
        error.cognito_message(),
        "UserMigration failed with error Bad password."
    );
    let mut unknown = sign_in(PASSWORD);
    unknown["userName"] = json!("john.roe");
    denied(&tenant, unknown, &["Bad password"]).await;
    let mut unknown = forgot_password();
    unknown["userName"] = json!("john.roe");
    let error = chain_error(&tenant, unknown).await;
    assert_eq!(
        error.cognito_message(),
        "UserMigration failed with error User not found."
    );
    assert_eq!(services.calls().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_user_denies_when_the_directory_cannot_answer() {
    let services = FakeServices::start().await;
    let directory = services.url("/users");
    let (_dir, tenants) = tenants_with(
        "10-migrate-user.wasm",
        guests::MIGRATE_USER,
        &[
            (
                "down",
                format!(
                    "{ALLOW_LOOPBACK}{}",
                    migrate_toml(&format!("http://{}/users", closed_port()))
                ),
            ),
            (
                "not-allowed",
                format!(
                    "[outbound]\nallowed-hosts = [\"directory.example.com\"]\n{}",
                    migrate_toml(&directory)
                ),
            ),
            (
                "broken",
                format!("{ALLOW_LOOPBACK}{}", migrate_toml(&services.url("/broken"))),
            ),
            ("unconfigured", ALLOW_LOOPBACK.to_owned()),
        ],
    )
    .await;
    let tenant = |name| tenants.tenant(name).unwrap();

    // The directory is down: the sign-in is denied, never let through.
    for event in [sign_in(PASSWORD), forgot_password()] {
        denied(
            &tenant("down"),
            event,
            &["Cannot migrate jane.doe", "could not be reached"],
        )
        .await;
    }
    // Not allowed: denied with the SDK's message, and nothing sent.
    denied(
        &tenant("not-allowed"),
        sign_in(PASSWORD),
        &["could not be reached", "denied", "allowed-hosts"],
    )
    .await;
    assert_eq!(services.calls().len(), 0);
    // A directory that answers with an error.
    denied(
        &tenant("broken"),
        sign_in(PASSWORD),
        &["Cannot migrate jane.doe", "answered 500"],
    )
    .await;
    assert_eq!(services.calls().len(), 1);
    // No directory configured.
    denied(
        &tenant("unconfigured"),
        sign_in(PASSWORD),
        &["`directory-url`"],
    )
    .await;
    assert_eq!(services.calls().len(), 1);
}
