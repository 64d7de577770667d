//! PostConfirmation: adds the confirmed user to the configured `group` by
//! POSTing `{"userPoolId", "username", "groupName"}` to the identity
//! server's admin endpoint `admin-url` (what AdminAddUserToGroup does in
//! Cognito), after Amplify's "Add User to Group" template. A failed request
//! or an error answer fails the confirmation. See README.md for the config
//! keys.

use triggerfish_sdk::post_confirmation::{Context, Guest, Request};
use triggerfish_sdk::{config, debug, deny, http, info};

const KEYS: &[&str] = &["group", "admin-url", "token", "sources"];
const DEFAULT_SOURCE: &str = "PostConfirmation_ConfirmSignUp";
/// How much of an error answer's body the error message quotes.
const EXCERPT_CHARS: usize = 200;

/// Sends a request: `http::request` in the host, a fake in unit tests.
type Send<'a> =
    &'a dyn Fn(&str, &str, &[(&str, &str)], Option<&[u8]>) -> Result<http::Response, String>;

struct AddToGroup;

/// The start of a body, on one line, for an error message.
fn excerpt(body: &str) -> String {
    let line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

fn add_to_group(context: &Context, send: Send) -> Result<(), String> {
    config::deny_unknown_keys(KEYS)?;
    let group = config::require("group")?.trim().to_owned();
    let url = config::require_url("admin-url")?;
    let sources = match config::list("sources") {
        sources if sources.is_empty() => vec![DEFAULT_SOURCE.to_owned()],
        sources => sources,
    };
    if !sources.contains(&context.trigger_source) {
        debug!("{}: no group change", context.trigger_source);
        return Ok(());
    }
    let Some(username) = context.user_name.as_deref().filter(|u| !u.is_empty()) else {
        deny!("Cannot add the user to group {group}: the event has no userName");
    };
    let body = serde_json::json!({
        "userPoolId": context.user_pool_id,
        "username": username,
        "groupName": group,
    })
    .to_string();
    let authorization = http::bearer_from_config("token");
    let mut headers = vec![("content-type", "application/json")];
    if let Some(authorization) = &authorization {
        headers.push(("authorization", authorization));
    }
    let failed = |why: String| format!("Could not add {username} to group {group}: {why}");
    let answer = send("POST", &url, &headers, Some(body.as_bytes())).map_err(failed)?;
    if !answer.is_success() {
        let text = excerpt(&answer.text());
        return Err(failed(if text.is_empty() {
            format!("the admin endpoint answered {}", answer.status)
        } else {
            format!("the admin endpoint answered {}: {text}", answer.status)
        }));
    }
    info!("added {username} to group {group}");
    Ok(())
}

impl Guest for AddToGroup {
    fn handle(context: Context, _: Request) -> Result<(), String> {
        add_to_group(&context, &http::request)
    }
}

triggerfish_sdk::export!(AddToGroup: post_confirmation);

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use triggerfish_sdk::testing;

    /// What the fake endpoint was sent: method, URL, headers, body.
    type Call = (String, String, Vec<(String, String)>, String);

    /// Runs the plugin against a fake endpoint that answers `answer`.
    fn run(
        source: &str,
        answer: Result<http::Response, String>,
    ) -> (Result<(), String>, Vec<Call>) {
        let calls = RefCell::new(Vec::new());
        let send = |method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>| {
            calls.borrow_mut().push((
                method.to_owned(),
                url.to_owned(),
                headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                String::from_utf8(body.unwrap_or_default().to_vec()).unwrap(),
            ));
            answer.clone()
        };
        let result = add_to_group(&testing::context(source), &send);
        (result, calls.into_inner())
    }

    fn ok() -> Result<http::Response, String> {
        Ok(http::Response {
            status: 200,
            body: b"{}".to_vec(),
        })
    }

    #[test]
    fn posts_pool_user_and_group_with_the_token() {
        testing::set_config([
            ("group", "customers"),
            (
                "admin-url",
                "https://idp.example.com/admin/add-user-to-group",
            ),
            ("token", "t0ken"),
        ]);
        let (result, calls) = run("PostConfirmation_ConfirmSignUp", ok());
        assert_eq!(result, Ok(()));
        let [(method, url, headers, body)] = calls.as_slice() else {
            panic!("{calls:?}")
        };
        assert_eq!(
            (method.as_str(), url.as_str()),
            ("POST", "https://idp.example.com/admin/add-user-to-group")
        );
        assert!(headers.contains(&("authorization".into(), "Bearer t0ken".into())));
        assert!(headers.contains(&("content-type".into(), "application/json".into())));
        assert_eq!(
            body,
            r#"{"userPoolId":"us-east-1_EXAMPLE","username":"jane","groupName":"customers"}"#
        );
    }

    #[test]
    fn without_a_token_no_authorization_is_sent() {
        testing::set_config([("group", "customers"), ("admin-url", "http://idp.test/add")]);
        let (result, calls) = run("PostConfirmation_ConfirmSignUp", ok());
        assert_eq!(result, Ok(()));
        assert!(calls[0].2.iter().all(|(name, _)| name != "authorization"));
    }

    #[test]
    fn only_the_configured_sources_call() {
        testing::set_config([("group", "customers"), ("admin-url", "http://idp.test/add")]);
        let (result, calls) = run("PostConfirmation_ConfirmForgotPassword", ok());
        assert_eq!((result, calls.len()), (Ok(()), 0));
        testing::set_config([
            ("group", "customers"),
            ("admin-url", "http://idp.test/add"),
            (
                "sources",
                "PostConfirmation_ConfirmSignUp,PostConfirmation_ConfirmForgotPassword",
            ),
        ]);
        let (result, calls) = run("PostConfirmation_ConfirmForgotPassword", ok());
        assert_eq!((result, calls.len()), (Ok(()), 1));
    }

    #[test]
    fn errors_fail_the_confirmation() {
        testing::set_config([("group", "customers"), ("admin-url", "http://idp.test/add")]);
        let answer = Ok(http::Response {
            status: 404,
            body: b"{\"message\":\n\"no such group\"}".to_vec(),
        });
        let (result, _) = run("PostConfirmation_ConfirmSignUp", answer);
        assert_eq!(
            result.unwrap_err(),
            "Could not add jane to group customers: the admin endpoint answered 404: \
             {\"message\": \"no such group\"}"
        );
        let (result, _) = run(
            "PostConfirmation_ConfirmSignUp",
            Err("request to http://idp.test/add failed: connection refused".into()),
        );
        assert_eq!(
            result.unwrap_err(),
            "Could not add jane to group customers: \
             request to http://idp.test/add failed: connection refused"
        );
    }

    #[test]
    fn config_errors_name_the_key() {
        testing::set_config([("admin-url", "http://idp.test/add")]);
        let (result, calls) = run("PostConfirmation_ConfirmSignUp", ok());
        assert!(result.unwrap_err().contains("`group`"));
        assert!(calls.is_empty());
        testing::set_config([("group", "customers"), ("admin-url", "idp.test/add")]);
        let error = run("PostConfirmation_ConfirmSignUp", ok()).0.unwrap_err();
        assert!(
            error.contains("`admin-url`") && error.contains("http://"),
            "{error}"
        );
        testing::set_config([
            ("group", "customers"),
            ("admin-url", "http://idp.test/add"),
            ("grup", "x"),
        ]);
        let error = run("PostConfirmation_ConfirmSignUp", ok()).0.unwrap_err();
        assert!(error.contains("unknown key `grup`"), "{error}");
    }

    #[test]
    fn long_answers_are_cut() {
        let long = "x".repeat(500);
        assert_eq!(excerpt(&long).chars().count(), EXCERPT_CHARS + 1);
        assert_eq!(excerpt(" a\n b "), "a b");
    }
}
