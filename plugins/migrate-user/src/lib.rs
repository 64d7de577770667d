//! UserMigration: brings a user in from an external directory at sign-in
//! (`UserMigration_Authentication`: the directory checks the password) and
//! at a forgotten password (`UserMigration_ForgotPassword`: the directory
//! looks the user up), after Cognito's migrate user sample. The directory
//! is reached over outbound HTTP at `directory-url`; an unknown user, a
//! wrong password and a directory that cannot be reached all deny. See
//! README.md for the config keys and what the directory answers.

use serde_json::Value;
use triggerfish_sdk::user_migration::{Context, Guest, Request, Response};
use triggerfish_sdk::{config, debug, deny, http, info, warn};

const KEYS: &[&str] = &["directory-url", "token"];
const AUTHENTICATION: &str = "UserMigration_Authentication";
const FORGOT_PASSWORD: &str = "UserMigration_ForgotPassword";
/// Cognito's sample's words. Sign-in says "Bad password" for an unknown
/// user too, so that it does not tell who has an account.
const BAD_PASSWORD: &str = "Bad password";
const USER_NOT_FOUND: &str = "User not found";

/// Sends a request: `http::request` in the host, a fake in unit tests.
type Send<'a> =
    &'a dyn Fn(&str, &str, &[(&str, &str)], Option<&[u8]>) -> Result<http::Response, String>;

struct MigrateUser;

/// A JSON value as an attribute value, if it has one.
fn attribute_value(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// The user's attributes from the directory's answer,
/// `{"userAttributes": {"email": …, …}}`, with `email_verified` set to
/// `true` unless the directory said otherwise. Attributes Cognito manages
/// itself (`sub`, `cognito:…`) are left out.
fn user_attributes(username: &str, body: &[u8]) -> Result<Vec<(String, String)>, String> {
    let bad = |why: &str| format!("Cannot migrate {username}: the user directory's answer {why}");
    let json: Value = serde_json::from_slice(body).map_err(|_| bad("is not JSON"))?;
    let Some(found) = json.get("userAttributes").and_then(Value::as_object) else {
        return Err(bad("has no `userAttributes` object"));
    };
    let mut attributes = Vec::new();
    for (name, value) in found {
        if name == "sub" || name.starts_with("cognito:") {
            debug!("left out `{name}`: Cognito sets it");
            continue;
        }
        match attribute_value(value) {
            Some(value) => attributes.push((name.clone(), value)),
            None => warn!("left out `{name}`: {value} is not a text, number or boolean"),
        }
    }
    if !attributes
        .iter()
        .any(|(name, value)| name == "email" && !value.trim().is_empty())
    {
        return Err(bad("has no `email` attribute"));
    }
    if !attributes.iter().any(|(name, _)| name == "email_verified") {
        // As Cognito's sample: the directory vouches for the address, and
        // a forgotten password's code goes to a verified one.
        attributes.push(("email_verified".to_owned(), "true".to_owned()));
    }
    Ok(attributes)
}

fn migrate(
    context: &Context,
    request: &Request,
    mut response: Response,
    send: Send,
) -> Result<Response, String> {
    config::deny_unknown_keys(KEYS)?;
    let directory = config::require_url("directory-url")?
        .trim_end_matches('/')
        .to_owned();
    let source = context.trigger_source.as_str();
    let Some(username) = context.user_name.as_deref().filter(|u| !u.is_empty()) else {
        deny!("Cannot migrate the user: the event has no userName");
    };
    let (url, body, final_status, not_found) = match source {
        AUTHENTICATION => {
            let Some(password) = request.password.as_deref().filter(|p| !p.is_empty()) else {
                deny!("{BAD_PASSWORD}");
            };
            (
                format!("{directory}/authenticate"),
                serde_json::json!({"username": username, "password": password}),
                "CONFIRMED",
                BAD_PASSWORD,
            )
        }
        FORGOT_PASSWORD => (
            format!("{directory}/lookup"),
            serde_json::json!({"username": username}),
            "RESET_REQUIRED",
            USER_NOT_FOUND,
        ),
        other => deny!("migrate-user handles {AUTHENTICATION} and {FORGOT_PASSWORD}, not {other}"),
    };
    let authorization = http::bearer_from_config("token");
    let mut headers = vec![("content-type", "application/json")];
    if let Some(authorization) = &authorization {
        headers.push(("authorization", authorization));
    }
    let body = body.to_string();
    // Whatever goes wrong, the user is not let in.
    let answer = send("POST", &url, &headers, Some(body.as_bytes())).map_err(|error| {
        format!("Cannot migrate {username}: the user directory could not be reached: {error}")
    })?;
    match answer.status {
        200..=299 => {}
        404 => {
            info!("{username} is not in the directory");
            deny!("{not_found}");
        }
        401 if source == AUTHENTICATION => {
            info!("the directory refused {username}'s password");
            deny!("{BAD_PASSWORD}");
        }
        status => {
            deny!("Cannot migrate {username}: the user directory answered {status}")
        }
    }
    for (name, value) in user_attributes(username, &answer.body)? {
        response.set_attribute(&name, value);
    }
    response.final_user_status = Some(final_status.to_owned());
    response.message_action = Some("SUPPRESS".to_owned());
    info!("migrated {username} ({source})");
    Ok(response)
}

impl Guest for MigrateUser {
    fn handle(context: Context, request: Request, response: Response) -> Result<Response, String> {
        migrate(&context, &request, response, &http::request)
    }
}

triggerfish_sdk::export!(MigrateUser: user_migration);

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use triggerfish_sdk::{attribute, testing};

    /// Runs the plugin for `source` against a fake directory answering
    /// `answer`: the result and the (URL, body) pairs it was sent.
    fn run(
        source: &str,
        password: Option<&str>,
        answer: Result<http::Response, String>,
    ) -> (Result<Response, String>, Vec<(String, String)>) {
        let sent = RefCell::new(Vec::new());
        let send = |method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>| {
            assert_eq!(method, "POST");
            assert!(headers.contains(&("content-type", "application/json")));
            assert!(headers.contains(&("authorization", "Bearer t0ken")));
            sent.borrow_mut().push((
                url.to_owned(),
                String::from_utf8(body.unwrap().to_vec()).unwrap(),
            ));
            answer.clone()
        };
        let request = Request {
            password: password.map(str::to_owned),
            ..Default::default()
        };
        let result = migrate(
            &testing::context(source),
            &request,
            Response::default(),
            &send,
        );
        (result, sent.into_inner())
    }

    fn answer(status: u16, body: &str) -> Result<http::Response, String> {
        Ok(http::Response::new(status, body))
    }

    fn configure() {
        testing::set_config([
            ("directory-url", "https://directory.test/v1/users/"),
            ("token", "t0ken"),
        ]);
    }

    const JANE: &str = r#"{"userAttributes": {"email": "jane@example.com",
        "name": "Jane", "sub": "old-id", "custom:level": 3, "nickname": null}}"#;

    #[test]
    fn sign_in_checks_the_password_and_confirms() {
        configure();
        let (result, sent) = run(AUTHENTICATION, Some("pa\"ss"), answer(200, JANE));
        assert_eq!(
            sent,
            [(
                "https://directory.test/v1/users/authenticate".to_owned(),
                r#"{"username":"jane","password":"pa\"ss"}"#.to_owned()
            )]
        );
        let response = result.unwrap();
        assert_eq!(response.final_user_status.as_deref(), Some("CONFIRMED"));
        assert_eq!(response.message_action.as_deref(), Some("SUPPRESS"));
        assert_eq!(
            response.user_attributes,
            testing::map([
                ("email", "jane@example.com"),
                ("name", "Jane"),
                ("custom:level", "3"),
                ("email_verified", "true"),
            ])
        );
    }

    #[test]
    fn a_forgotten_password_looks_the_user_up() {
        configure();
        let body = r#"{"userAttributes": {"email": "jane@example.com", "email_verified": false}}"#;
        let (result, sent) = run(FORGOT_PASSWORD, None, answer(200, body));
        assert_eq!(
            sent,
            [(
                "https://directory.test/v1/users/lookup".to_owned(),
                r#"{"username":"jane"}"#.to_owned()
            )]
        );
        let response = result.unwrap();
        assert_eq!(
            response.final_user_status.as_deref(),
            Some("RESET_REQUIRED")
        );
        assert_eq!(
            attribute(&response.user_attributes, "email_verified"),
            Some("false")
        );
    }

    #[test]
    fn unknown_users_and_wrong_passwords_are_denied() {
        configure();
        for (source, status, message) in [
            (AUTHENTICATION, 401, BAD_PASSWORD),
            (AUTHENTICATION, 404, BAD_PASSWORD),
            (FORGOT_PASSWORD, 404, USER_NOT_FOUND),
        ] {
            let (result, _) = run(source, Some("x"), answer(status, "{}"));
            assert_eq!(result.unwrap_err(), message, "{source} {status}");
        }
        // No password, no request.
        let (result, sent) = run(AUTHENTICATION, None, answer(200, JANE));
        assert_eq!(
            (result.unwrap_err().as_str(), sent.len()),
            (BAD_PASSWORD, 0)
        );
    }

    #[test]
    fn a_directory_that_fails_denies() {
        configure();
        let refused = "request to https://directory.test/v1/users/authenticate failed: \
                       connection refused";
        let (result, _) = run(AUTHENTICATION, Some("x"), Err(refused.to_owned()));
        assert_eq!(
            result.unwrap_err(),
            format!("Cannot migrate jane: the user directory could not be reached: {refused}")
        );
        for (status, body, why) in [
            (500, JANE, "answered 500"),
            (401, JANE, "answered 401"),
            (200, "<html>", "is not JSON"),
            (
                200,
                r#"{"email": "jane@example.com"}"#,
                "no `userAttributes`",
            ),
            (200, r#"{"userAttributes": {"name": "Jane"}}"#, "no `email`"),
        ] {
            let (result, _) = run(FORGOT_PASSWORD, None, answer(status, body));
            let error = result.unwrap_err();
            assert!(
                error.starts_with("Cannot migrate jane: ") && error.contains(why),
                "{status} {body}: {error}"
            );
        }
    }

    #[test]
    fn config_errors_name_the_key() {
        testing::set_config::<&str, &str>([]);
        let error = run(AUTHENTICATION, Some("x"), answer(200, JANE))
            .0
            .unwrap_err();
        assert!(error.contains("`directory-url`"), "{error}");
        testing::set_config([("directory-url", "directory.test")]);
        let error = run(AUTHENTICATION, Some("x"), answer(200, JANE))
            .0
            .unwrap_err();
        assert!(error.contains("https://"), "{error}");
        testing::set_config([("directory-url", "http://d.test"), ("tokn", "x")]);
        let error = run(AUTHENTICATION, Some("x"), answer(200, JANE))
            .0
            .unwrap_err();
        assert!(error.contains("unknown key `tokn`"), "{error}");
    }
}
