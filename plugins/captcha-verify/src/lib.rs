//! A CAPTCHA as a custom auth challenge, after Amplify's "Google reCaptcha
//! Challenge" template: define, create and verify auth challenge in one
//! component. The password comes first (`CUSTOM_WITH_SRP`), then a
//! `CUSTOM_CHALLENGE` whose public parameters carry the CAPTCHA's site key;
//! the client answers with the token its CAPTCHA widget gave it, which
//! verify-auth-challenge-response POSTs to the verification service
//! (`secret=…&response=…`, as reCaptcha's `siteverify` takes it). The
//! answer is correct only when the service says `"success": true`; a
//! service that cannot be reached makes it wrong. See README.md for the
//! config keys.

use triggerfish_sdk::{config, create_auth_challenge as create, define_auth_challenge as define};
use triggerfish_sdk::{http, info, verify_auth_challenge_response as verify, warn, Context};

const CUSTOM_CHALLENGE: &str = "CUSTOM_CHALLENGE";
/// The challenge's name in later sessions, as Amplify's template sets it.
const CHALLENGE_METADATA: &str = "CAPTCHA_CHALLENGE";
const KEYS: &[&str] = &["site-key", "verify-url", "secret"];

/// Sends a request: `http::request` in the host, a fake in unit tests.
type Send<'a> =
    &'a dyn Fn(&str, &str, &[(&str, &str)], Option<&[u8]>) -> Result<http::Response, String>;

struct CaptchaVerify;

impl define::Guest for CaptchaVerify {
    fn handle(
        _: Context,
        request: define::Request,
        mut response: define::Response,
    ) -> Result<define::Response, String> {
        config::deny_unknown_keys(KEYS)?;
        if request.user_not_found {
            response.finish_with_failure();
            return Ok(response);
        }
        let password_verified = request
            .session
            .iter()
            .any(|step| step.challenge_name == "PASSWORD_VERIFIER" && step.challenge_result);
        let Some(last) = request.last_challenge() else {
            // CUSTOM_AUTH: there is no password step, and a CAPTCHA proves
            // a human, not who they are.
            info!("a CAPTCHA alone is no sign-in: the client must use CUSTOM_WITH_SRP");
            response.finish_with_failure();
            return Ok(response);
        };
        match (last.challenge_name.as_str(), last.challenge_result) {
            ("SRP_A", _) => response.next_challenge("PASSWORD_VERIFIER"),
            ("PASSWORD_VERIFIER", true) => response.next_challenge(CUSTOM_CHALLENGE),
            (CUSTOM_CHALLENGE, true) if password_verified => response.finish_with_tokens(),
            // A wrong CAPTCHA ends the sign-in, as in Amplify's template.
            _ => response.finish_with_failure(),
        };
        Ok(response)
    }
}

impl create::Guest for CaptchaVerify {
    fn handle(
        _: Context,
        request: create::Request,
        mut response: create::Response,
    ) -> Result<create::Response, String> {
        config::deny_unknown_keys(KEYS)?;
        if request.challenge_name != CUSTOM_CHALLENGE {
            return Ok(response);
        }
        response.set_public("siteKey", config::require("site-key")?.trim());
        response.challenge_metadata = Some(CHALLENGE_METADATA.to_owned());
        Ok(response)
    }
}

/// Whether the verification service accepts `token`. Only a `2xx` answer
/// with `"success": true` does; anything else, a service that cannot be
/// reached included, is a wrong answer, logged. A host the tenant does not
/// allow is an error: that is a setting to fix, and it fails the sign-in
/// all the same.
fn verify_token(token: &str, user_not_found: bool, send: Send) -> Result<bool, String> {
    config::deny_unknown_keys(KEYS)?;
    let url = config::require_url("verify-url")?;
    let secret = config::require("secret")?;
    if user_not_found {
        info!("no such user: the CAPTCHA is not checked");
        return Ok(false);
    }
    let token = token.trim();
    if token.is_empty() {
        info!("an empty CAPTCHA answer");
        return Ok(false);
    }
    let form = format!(
        "secret={}&response={}",
        http::percent_encode(secret.trim()),
        http::percent_encode(token)
    );
    let headers = [("content-type", "application/x-www-form-urlencoded")];
    let answer = match send("POST", &url, &headers, Some(form.as_bytes())) {
        Ok(answer) => answer,
        Err(error) if http::is_denied(&error) => {
            return Err(format!("Cannot verify the CAPTCHA: {error}"))
        }
        Err(error) => {
            warn!(
                "the CAPTCHA verifier could not be reached, so the answer counts as wrong: {error}"
            );
            return Ok(false);
        }
    };
    if !answer.is_success() {
        warn!(
            "the CAPTCHA verifier answered {}, so the answer counts as wrong",
            answer.status
        );
        return Ok(false);
    }
    let json: serde_json::Value = match serde_json::from_slice(&answer.body) {
        Ok(json) => json,
        Err(error) => {
            warn!("the CAPTCHA verifier's answer is not JSON ({error}), so the answer counts as wrong");
            return Ok(false);
        }
    };
    if json.get("success") == Some(&serde_json::Value::Bool(true)) {
        info!("the CAPTCHA was solved");
        Ok(true)
    } else {
        let codes = json.get("error-codes").map(|c| c.to_string());
        info!(
            "the CAPTCHA verifier refused the answer ({})",
            codes.as_deref().unwrap_or("no error codes")
        );
        Ok(false)
    }
}

impl verify::Guest for CaptchaVerify {
    fn handle(
        _: Context,
        request: verify::Request,
        mut response: verify::Response,
    ) -> Result<verify::Response, String> {
        response.answer_correct = Some(verify_token(
            &request.challenge_answer,
            request.user_not_found,
            &http::request,
        )?);
        Ok(response)
    }
}

triggerfish_sdk::export!(
    CaptchaVerify: define_auth_challenge,
    create_auth_challenge,
    verify_auth_challenge_response
);

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use triggerfish_sdk::{testing, ChallengeResult, Level};

    use testing::challenge as step;

    /// (challenge, issue tokens, fail authentication) for a session.
    fn define(session: Vec<ChallengeResult>) -> (Option<String>, Option<bool>, Option<bool>) {
        let request = define::Request {
            session,
            ..Default::default()
        };
        let response = <CaptchaVerify as define::Guest>::handle(
            testing::context("DefineAuthChallenge_Authentication"),
            request,
            Default::default(),
        )
        .unwrap();
        (
            response.challenge_name,
            response.issue_tokens,
            response.fail_authentication,
        )
    }

    #[test]
    fn the_password_then_the_captcha_then_tokens() {
        testing::set_config::<&str, &str>([]);
        let next = |name: &str| (Some(name.to_owned()), Some(false), Some(false));
        let failed = (None, Some(false), Some(true));
        assert_eq!(define(vec![step("SRP_A", true)]), next("PASSWORD_VERIFIER"));
        let password = vec![step("SRP_A", true), step("PASSWORD_VERIFIER", true)];
        assert_eq!(define(password.clone()), next(CUSTOM_CHALLENGE));
        let mut solved = password.clone();
        solved.push(step(CUSTOM_CHALLENGE, true));
        assert_eq!(define(solved), (None, Some(true), Some(false)));
        let mut wrong = password;
        wrong.push(step(CUSTOM_CHALLENGE, false));
        assert_eq!(define(wrong), failed);
        assert_eq!(
            define(vec![step("SRP_A", true), step("PASSWORD_VERIFIER", false)]),
            failed
        );
        // A CAPTCHA is no password.
        assert_eq!(define(vec![]), failed);
        assert_eq!(define(vec![step(CUSTOM_CHALLENGE, true)]), failed);
    }

    #[test]
    fn the_site_key_goes_to_the_client() {
        testing::set_config([("site-key", "6Lc-site")]);
        let response = <CaptchaVerify as create::Guest>::handle(
            testing::context("CreateAuthChallenge_Authentication"),
            create::Request {
                challenge_name: CUSTOM_CHALLENGE.to_owned(),
                ..Default::default()
            },
            Default::default(),
        )
        .unwrap();
        assert_eq!(
            response.public_challenge_parameters,
            testing::map([("siteKey", "6Lc-site")])
        );
        assert!(response.private_challenge_parameters.is_empty());
        assert_eq!(
            response.challenge_metadata.as_deref(),
            Some(CHALLENGE_METADATA)
        );

        testing::set_config::<&str, &str>([]);
        let error = <CaptchaVerify as create::Guest>::handle(
            testing::context("CreateAuthChallenge_Authentication"),
            create::Request {
                challenge_name: CUSTOM_CHALLENGE.to_owned(),
                ..Default::default()
            },
            Default::default(),
        )
        .unwrap_err();
        assert!(error.contains("`site-key`"), "{error}");
    }

    /// Verifies `token` against a fake service answering `answer`; the
    /// result and the form bodies it was sent.
    fn verify_with(
        token: &str,
        answer: Result<http::Response, String>,
    ) -> (Result<bool, String>, Vec<String>) {
        let sent = RefCell::new(Vec::new());
        let send = |method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>| {
            assert_eq!((method, url), ("POST", "https://verify.test/siteverify"));
            assert_eq!(
                headers,
                [("content-type", "application/x-www-form-urlencoded")]
            );
            sent.borrow_mut()
                .push(String::from_utf8(body.unwrap().to_vec()).unwrap());
            answer.clone()
        };
        (verify_token(token, false, &send), sent.into_inner())
    }

    fn answer(status: u16, body: &str) -> Result<http::Response, String> {
        Ok(http::Response::new(status, body))
    }

    fn configure() {
        testing::set_config([
            ("verify-url", "https://verify.test/siteverify"),
            ("secret", "s3cret&x"),
        ]);
    }

    #[test]
    fn the_token_is_posted_as_a_form() {
        configure();
        let (result, sent) = verify_with("tok+en/=", answer(200, r#"{"success": true}"#));
        assert_eq!(result, Ok(true));
        assert_eq!(sent, ["secret=s3cret%26x&response=tok%2Ben%2F%3D"]);
        let (result, _) = verify_with(
            "t",
            answer(
                200,
                r#"{"success": false, "error-codes": ["timeout-or-duplicate"]}"#,
            ),
        );
        assert_eq!(result, Ok(false));
        // Only `true` itself is success.
        let (result, _) = verify_with("t", answer(200, r#"{"success": "true"}"#));
        assert_eq!(result, Ok(false));
    }

    #[test]
    fn failures_are_wrong_answers_and_logged() {
        configure();
        testing::logs();
        for failure in [
            Err("request to https://verify.test/siteverify failed: connection refused".to_owned()),
            Err("request to https://verify.test/siteverify timed out".to_owned()),
            answer(503, r#"{"success": true}"#),
            answer(200, "<html>not json</html>"),
        ] {
            let (result, _) = verify_with("t", failure.clone());
            assert_eq!(result, Ok(false), "{failure:?}");
            let logs = testing::logs();
            assert!(
                logs.iter().any(|(level, line)| matches!(level, Level::Warn)
                    && line.contains("counts as wrong")),
                "{failure:?}: {logs:?}"
            );
        }
        // An empty answer is not worth a request.
        let (result, sent) = verify_with(" ", answer(200, r#"{"success": true}"#));
        assert_eq!((result, sent.len()), (Ok(false), 0));
    }

    #[test]
    fn a_host_not_allowed_is_an_error() {
        configure();
        let denied = "request to https://verify.test/siteverify denied: \
                      the host is not in the tenant's [outbound] allowed-hosts";
        let (result, _) = verify_with("t", Err(denied.to_owned()));
        assert_eq!(
            result.unwrap_err(),
            format!("Cannot verify the CAPTCHA: {denied}")
        );
    }

    #[test]
    fn config_errors_name_the_key() {
        testing::set_config([("verify-url", "https://verify.test/siteverify")]);
        let error = verify_with("t", answer(200, "{}")).0.unwrap_err();
        assert!(error.contains("`secret`"), "{error}");
        testing::set_config([("secret", "s")]);
        let error = verify_with("t", answer(200, "{}")).0.unwrap_err();
        assert!(error.contains("`verify-url`"), "{error}");
        testing::set_config([("secret", "s"), ("verify-url", "verify.test")]);
        let error = verify_with("t", answer(200, "{}")).0.unwrap_err();
        assert!(error.contains("http://"), "{error}");
    }
}
