//! The example plugins through the real host: each with the behaviour its
//! README documents, including its error paths. Events are shaped as in
//! Cognito's documentation of each trigger.

use crate::common::*;
use serde_json::{json, Value};
use triggerfish::dispatch::ErrorKind;
use triggerfish::tenant::Tenant;

/// A tenant `t` with one plugin and its config (`tenant.toml` text after
/// the `[plugins.<stem>.config]` header; empty for none).
async fn one_plugin(file: &str, guest: &str, config: &str) -> (PluginsDir, Tenant) {
    let dir = PluginsDir::new();
    dir.plugin("t", file, guest);
    if !config.is_empty() {
        let stem = file.trim_end_matches(".wasm");
        dir.settings("t", &format!("[plugins.{stem}.config]\n{config}"));
    }
    let tenant = tenant(&dir, "t").await;
    assert!(tenant.failures.is_empty(), "{:?}", tenant.failures);
    (dir, tenant)
}

// ---------------------------------------------------------------- tokens

/// A pre token generation event, version 1 (ID token only).
fn token_event_v1() -> Value {
    cognito_event(
        "1",
        "TokenGeneration_Authentication",
        json!({
            "userAttributes": user_attributes(),
            "groupConfiguration": {
                "groupsToOverride": ["employees", "admins"],
                "iamRolesToOverride": ["arn:aws:iam::123456789012:role/admins"],
                "preferredRole": "arn:aws:iam::123456789012:role/admins"
            },
            "clientMetadata": {}
        }),
        json!({"claimsOverrideDetails": null}),
    )
}

/// A pre token generation event of version 2 or 3 (ID and access tokens).
fn token_event_v2(version: &str) -> Value {
    cognito_event(
        version,
        "TokenGeneration_HostedAuth",
        json!({
            "userAttributes": user_attributes(),
            "groupConfiguration": {
                "groupsToOverride": ["employees"],
                "iamRolesToOverride": [],
                "preferredRole": null
            },
            "scopes": ["aws.cognito.signin.user.admin", "openid", "email"]
        }),
        json!({"claimsAndScopeOverrideDetails": null}),
    )
}

const TOKEN_CONFIG: &str = r#"
"claims.department" = "sales"
"claims.custom:tier" = "gold"
suppress-claims = ["email_verified", "custom:department"]
"access-claims.tenant" = "acme"
suppress-access-claims = ["username"]
scopes-to-add = ["api/orders.read", "api/orders.write"]
scopes-to-suppress = ["aws.cognito.signin.user.admin"]
groups = ["readers"]
preferred-role = "arn:aws:iam::123456789012:role/readers"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn override_token_claims_v1_changes_the_id_token_and_groups() {
    let (_dir, tenant) = one_plugin(
        "20-override-token-claims.wasm",
        guests::OVERRIDE_TOKEN_CLAIMS,
        TOKEN_CONFIG,
    )
    .await;
    let out = run(&tenant, token_event_v1()).await;
    assert_eq!(
        out["response"],
        json!({"claimsOverrideDetails": {
            "claimsToAddOrOverride": {"custom:tier": "gold", "department": "sales"},
            "claimsToSuppress": ["email_verified", "custom:department"],
            "groupOverrideDetails": {
                "groupsToOverride": ["readers"],
                "preferredRole": "arn:aws:iam::123456789012:role/readers"
            }
        }})
    );
    // The request is as Cognito sent it.
    assert_eq!(out["request"], token_event_v1()["request"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn override_token_claims_v2_and_v3_change_both_tokens_and_scopes() {
    let (_dir, tenant) = one_plugin(
        "20-override-token-claims.wasm",
        guests::OVERRIDE_TOKEN_CLAIMS,
        TOKEN_CONFIG,
    )
    .await;
    let expected = json!({"claimsAndScopeOverrideDetails": {
        "idTokenGeneration": {
            "claimsToAddOrOverride": {"custom:tier": "gold", "department": "sales"},
            "claimsToSuppress": ["email_verified", "custom:department"]
        },
        "accessTokenGeneration": {
            "claimsToAddOrOverride": {"tenant": "acme"},
            "claimsToSuppress": ["username"],
            "scopesToAdd": ["api/orders.read", "api/orders.write"],
            "scopesToSuppress": ["aws.cognito.signin.user.admin"]
        },
        "groupOverrideDetails": {
            "groupsToOverride": ["readers"],
            "preferredRole": "arn:aws:iam::123456789012:role/readers"
        }
    }});
    for version in ["2", "3"] {
        let out = run(&tenant, token_event_v2(version)).await;
        assert_eq!(out["response"], expected, "version {version}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn override_token_claims_keeps_what_an_earlier_plugin_decided() {
    let dir = PluginsDir::new();
    dir.plugin("t", "10-roles.wasm", guests::OVERRIDE_TOKEN_CLAIMS)
        .plugin("t", "20-claims.wasm", guests::OVERRIDE_TOKEN_CLAIMS)
        .settings(
            "t",
            "[plugins.10-roles.config]\n\"claims.role\" = \"admin\"\n\"claims.team\" = \"blue\"\n\
             [plugins.20-claims.config]\n\"claims.role\" = \"reader\"\nscopes-to-add = \"api/read\"\n",
        );
    let out = run(&tenant(&dir, "t").await, token_event_v2("2")).await;
    let details = &out["response"]["claimsAndScopeOverrideDetails"];
    // The later plugin overrides `role`; `team` from the earlier one stays.
    assert_eq!(
        details["idTokenGeneration"]["claimsToAddOrOverride"],
        json!({"role": "reader", "team": "blue"})
    );
    assert_eq!(
        details["accessTokenGeneration"]["scopesToAdd"],
        json!(["api/read"])
    );
    // Nothing configured the groups: no override is sent.
    assert!(details.get("groupOverrideDetails").is_none(), "{details}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn override_token_claims_without_config_names_its_keys() {
    let (_dir, tenant) = one_plugin(
        "20-override-token-claims.wasm",
        guests::OVERRIDE_TOKEN_CLAIMS,
        "",
    )
    .await;
    let error = chain_error(&tenant, token_event_v1()).await;
    assert_eq!(error.kind, ErrorKind::Denied);
    assert!(
        error.message.contains("`claims.<name>`") && error.message.contains("`groups`"),
        "{}",
        error.message
    );
    assert!(
        error
            .cognito_message()
            .starts_with("PreTokenGeneration failed with error "),
        "{}",
        error.cognito_message()
    );

    let (_dir, tenant) = one_plugin(
        "20-override-token-claims.wasm",
        guests::OVERRIDE_TOKEN_CLAIMS,
        "supress-claims = [\"email\"]\n",
    )
    .await;
    let error = chain_error(&tenant, token_event_v2("2")).await;
    assert!(
        error.message.contains("unknown key `supress-claims`"),
        "{}",
        error.message
    );
}

// ---------------------------------------------------------- custom auth

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_auth_challenge_issues_tokens_after_a_correct_answer() {
    let (_dir, tenant) = one_plugin(
        "10-custom-auth-challenge.wasm",
        guests::CUSTOM_AUTH_CHALLENGE,
        "",
    )
    .await;
    // CUSTOM_AUTH: no session yet, so the custom challenge comes first.
    assert_eq!(
        define(&tenant, vec![]).await,
        (json!("CUSTOM_CHALLENGE"), json!(false), json!(false))
    );

    // No `answer` configured: a code is generated and kept private.
    let created = run(&tenant, create_event(vec![])).await;
    let response = &created["response"];
    let code = response["privateChallengeParameters"]["answer"]
        .as_str()
        .expect("an answer")
        .to_owned();
    assert!(
        code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()),
        "{code}"
    );
    assert_eq!(
        response["publicChallengeParameters"],
        json!({"trigger": "true", "attemptsLeft": "3"})
    );
    assert_eq!(response["challengeMetadata"], json!(format!("CODE-{code}")));
    assert!(!response["publicChallengeParameters"]
        .to_string()
        .contains(&code));

    let private = response["privateChallengeParameters"].clone();
    let verified = run(&tenant, verify_event(private.clone(), &code)).await;
    assert_eq!(verified["response"], json!({"answerCorrect": true}));
    let verified = run(&tenant, verify_event(private, "000000x")).await;
    assert_eq!(verified["response"], json!({"answerCorrect": false}));

    let session = vec![challenge(
        "CUSTOM_CHALLENGE",
        true,
        Some(&format!("CODE-{code}")),
    )];
    assert_eq!(
        define(&tenant, session).await,
        (Value::Null, json!(true), json!(false))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_auth_challenge_fails_after_three_wrong_answers() {
    let (_dir, tenant) = one_plugin(
        "10-custom-auth-challenge.wasm",
        guests::CUSTOM_AUTH_CHALLENGE,
        "answer = \"blue\"\nquestion = \"What colour is the sky?\"\n",
    )
    .await;
    // A configured answer, and the question for the client.
    let created = run(&tenant, create_event(vec![])).await;
    assert_eq!(
        created["response"]["privateChallengeParameters"],
        json!({"answer": "blue"})
    );
    assert_eq!(
        created["response"]["publicChallengeParameters"]["question"],
        "What colour is the sky?"
    );
    let wrong = || challenge("CUSTOM_CHALLENGE", false, None);
    let verified = run(&tenant, verify_event(json!({"answer": "blue"}), "green")).await;
    assert_eq!(verified["response"]["answerCorrect"], false);

    for failures in 1..3 {
        let session = (0..failures).map(|_| wrong()).collect();
        assert_eq!(
            define(&tenant, session).await,
            (json!("CUSTOM_CHALLENGE"), json!(false), json!(false)),
            "after {failures} wrong answers, another try"
        );
        let created = run(
            &tenant,
            create_event((0..failures).map(|_| wrong()).collect()),
        )
        .await;
        assert_eq!(
            created["response"]["publicChallengeParameters"]["attemptsLeft"],
            json!((3 - failures).to_string())
        );
    }
    assert_eq!(
        define(&tenant, vec![wrong(), wrong(), wrong()]).await,
        (Value::Null, json!(false), json!(true))
    );
    // A right answer after two wrong ones still signs in.
    assert_eq!(
        define(
            &tenant,
            vec![wrong(), wrong(), challenge("CUSTOM_CHALLENGE", true, None)]
        )
        .await,
        (Value::Null, json!(true), json!(false))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_auth_challenge_after_a_password() {
    let (_dir, tenant) = one_plugin(
        "10-custom-auth-challenge.wasm",
        guests::CUSTOM_AUTH_CHALLENGE,
        "require-password = true\nmax-attempts = 1\n",
    )
    .await;
    // CUSTOM_WITH_SRP, as Amplify's scaffolding expects it.
    assert_eq!(
        define(&tenant, vec![challenge("SRP_A", true, None)]).await,
        (json!("PASSWORD_VERIFIER"), json!(false), json!(false))
    );
    let password_ok = vec![
        challenge("SRP_A", true, None),
        challenge("PASSWORD_VERIFIER", true, None),
    ];
    assert_eq!(
        define(&tenant, password_ok).await,
        (json!("CUSTOM_CHALLENGE"), json!(false), json!(false))
    );
    let password_wrong = vec![
        challenge("SRP_A", true, None),
        challenge("PASSWORD_VERIFIER", false, None),
    ];
    assert_eq!(
        define(&tenant, password_wrong).await,
        (Value::Null, json!(false), json!(true))
    );
    // The password is required: a session without one fails.
    assert_eq!(
        define(&tenant, vec![]).await,
        (Value::Null, json!(false), json!(true))
    );
    // max-attempts = 1: the first wrong answer ends it.
    let one_wrong = vec![
        challenge("SRP_A", true, None),
        challenge("PASSWORD_VERIFIER", true, None),
        challenge("CUSTOM_CHALLENGE", false, None),
    ];
    assert_eq!(
        define(&tenant, one_wrong).await,
        (Value::Null, json!(false), json!(true))
    );
    // A user that does not exist never gets a challenge.
    let mut event = define_event(vec![]);
    event["request"]["userNotFound"] = json!(true);
    assert_eq!(
        run(&tenant, event).await["response"]["failAuthentication"],
        true
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_auth_challenge_errors_name_what_is_wrong() {
    let (_dir, tenant) = one_plugin(
        "10-custom-auth-challenge.wasm",
        guests::CUSTOM_AUTH_CHALLENGE,
        "max-attempts = \"three\"\n",
    )
    .await;
    let error = chain_error(&tenant, define_event(vec![])).await;
    assert_eq!(error.kind, ErrorKind::Denied);
    assert!(
        error.message.contains("`max-attempts`"),
        "{}",
        error.message
    );
    assert!(
        error
            .cognito_message()
            .starts_with("DefineAuthChallenge failed with error "),
        "{}",
        error.cognito_message()
    );

    // Verifying a challenge this plugin did not create.
    let error = chain_error(&tenant, verify_event(json!({}), "blue")).await;
    assert_eq!(error.kind, ErrorKind::Denied);
    assert!(error.message.contains("`answer`"), "{}", error.message);
}

// ------------------------------------------------------- custom message

fn custom_message_event(source: &str) -> Value {
    cognito_event(
        "1",
        source,
        json!({
            "userAttributes": {
                "sub": "a1b2c3d4-5678-90ab-cdef-EXAMPLE11111",
                "cognito:user_status": "UNCONFIRMED",
                "email_verified": "false",
                "email": "jane@example.com"
            },
            "codeParameter": "{####}",
            "linkParameter": "{##Click Here##}",
            "usernameParameter": null
        }),
        json!({"smsMessage": null, "emailMessage": null, "emailSubject": null}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_message_link_puts_a_confirmation_link_in_the_sign_up_email() {
    let (_dir, tenant) = one_plugin(
        "10-custom-message-link.wasm",
        guests::CUSTOM_MESSAGE_LINK,
        "base-url = \"https://app.example.com/confirm\"\n\
         email-subject = \"Welcome to Example\"\n\
         email-message = 'Hi! <a href=\"{link}\">Confirm your account</a>.'\n",
    )
    .await;
    let out = run(&tenant, custom_message_event("CustomMessage_SignUp")).await;
    let link =
        "https://app.example.com/confirm?username=jane.doe&client_id=1example23456789&code={####}";
    let body = format!("Hi! <a href=\"{link}\">Confirm your account</a>.");
    assert_eq!(
        out["response"],
        json!({"smsMessage": body, "emailMessage": body, "emailSubject": "Welcome to Example"})
    );

    // Other messages are left as Cognito would write them.
    for source in [
        "CustomMessage_ForgotPassword",
        "CustomMessage_AdminCreateUser",
        "CustomMessage_ResendCode",
    ] {
        let event = custom_message_event(source);
        assert_eq!(run(&tenant, event.clone()).await, event, "{source}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_message_link_defaults_and_sources() {
    let (_dir, tenant) = one_plugin(
        "10-custom-message-link.wasm",
        guests::CUSTOM_MESSAGE_LINK,
        "base-url = \"https://app.example.com/confirm?lang=en\"\n\
         sources = [\"CustomMessage_SignUp\", \"CustomMessage_ResendCode\"]\n",
    )
    .await;
    let out = run(&tenant, custom_message_event("CustomMessage_ResendCode")).await;
    assert_eq!(out["response"]["emailSubject"], "Confirm your account");
    assert_eq!(
        out["response"]["emailMessage"],
        "Welcome! Confirm your account by opening this link: \
         https://app.example.com/confirm?lang=en&username=jane.doe&client_id=1example23456789&code={####}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_message_link_without_a_base_url_names_the_key() {
    let (_dir, tenant) = one_plugin(
        "10-custom-message-link.wasm",
        guests::CUSTOM_MESSAGE_LINK,
        "",
    )
    .await;
    let error = chain_error(&tenant, custom_message_event("CustomMessage_SignUp")).await;
    assert_eq!(error.kind, ErrorKind::Denied);
    assert!(error.message.contains("`base-url`"), "{}", error.message);
    assert_eq!(
        error.cognito_message(),
        format!("CustomMessage failed with error {}.", error.message)
    );

    let (_dir, tenant) = one_plugin(
        "10-custom-message-link.wasm",
        guests::CUSTOM_MESSAGE_LINK,
        "base-url = \"app.example.com/confirm\"\n",
    )
    .await;
    let error = chain_error(&tenant, custom_message_event("CustomMessage_SignUp")).await;
    assert!(
        error.message.contains("`base-url`") && error.message.contains("https://"),
        "{}",
        error.message
    );
}

// ------------------------------------------------------------ JavaScript

/// The deny list written in JavaScript (`plugins/email-deny-list-js`), built
/// by the project itself: `xtask::js` installs componentize-js from npm into
/// `target/js-tools` and builds the component. None when Node.js or the npm
/// registry is not there, unless `TRIGGERFISH_REQUIRE_JS` is set (CI sets
/// it), so `cargo test` passes on machines without them.
async fn javascript_deny_list() -> Option<String> {
    use triggerfish_test_support::xtask::js::{build_js_plugin, JsError};
    let built = tokio::task::spawn_blocking(|| build_js_plugin("email-deny-list-js"))
        .await
        .unwrap();
    match built {
        Ok(wasm) => Some(wasm.display().to_string()),
        Err(JsError::Unavailable(why)) if std::env::var_os("TRIGGERFISH_REQUIRE_JS").is_none() => {
            eprintln!("skipped: the JavaScript plugin cannot be built here: {why}");
            None
        }
        Err(error) => panic!("{error}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deny_list_in_javascript_answers_as_the_rust_one() {
    let _cpu = timing_sensitive().await;
    let Some(js) = javascript_deny_list().await else {
        return;
    };
    let config = "[plugins.10-deny.config]\ndomains = [\"spam.test\", \"@Throwaway.TEST\"]\n";
    let dir = PluginsDir::new();
    dir.plugin("rust", "10-deny.wasm", guests::EMAIL_DENY_LIST)
        .settings("rust", config)
        .plugin("js", "10-deny.wasm", &js)
        .settings("js", config)
        .plugin("js-unconfigured", "10-deny.wasm", &js);
    // Compiling the 12 MB component (SpiderMonkey inside) is most of this
    // test's time: both tenants compile it at once.
    let started = std::time::Instant::now();
    let (js_tenant, unconfigured) =
        tokio::join!(tenant(&dir, "js"), tenant(&dir, "js-unconfigured"));
    eprintln!(
        "the JavaScript plugin loaded twice in {:?}",
        started.elapsed()
    );
    assert!(js_tenant.failures.is_empty(), "{:?}", js_tenant.failures);
    let served: Vec<_> = js_tenant.plugins[0].triggers().collect();
    assert_eq!(served, [triggerfish::trigger::Trigger::PreSignUp]);
    let rust_tenant = tenant(&dir, "rust").await;

    let mut denials = 0;
    for email in [
        "jane@example.com",
        "bot@spam.test",
        "bot@mail.spam.test",
        "Bot@THROWAWAY.test",
        "x@notspam.test",
        "spam.test@example.com",
        "nobody",
        "",
    ] {
        let event = pre_sign_up(email);
        let rust = invoke(&rust_tenant, event.clone()).await;
        let js = invoke(&js_tenant, event).await;
        match (rust, js) {
            (Ok(rust), Ok(js)) => assert_eq!(rust, js, "{email}"),
            (
                Err(triggerfish::dispatch::InvokeError::Chain(rust)),
                Err(triggerfish::dispatch::InvokeError::Chain(js)),
            ) => {
                denials += 1;
                assert_eq!(js.kind, ErrorKind::Denied, "{email}");
                assert_eq!(
                    (js.kind, js.cognito_message()),
                    (rust.kind, rust.cognito_message()),
                    "{email}"
                );
            }
            (rust, js) => panic!("{email}: rust {rust:?}, js {js:?}"),
        }
    }
    assert_eq!(denials, 3);

    // Without `domains`, the same clear error as the Rust plugin's.
    let error = chain_error(&unconfigured, pre_sign_up("jane@example.com")).await;
    assert_eq!(error.kind, ErrorKind::Denied);
    assert!(error.message.contains("`domains`"), "{}", error.message);
}
