//! Custom authentication challenge: define, create and verify auth
//! challenge in one component, after Amplify's "custom auth challenge"
//! scaffolding. The user answers a `CUSTOM_CHALLENGE` (after their password
//! when the client uses `CUSTOM_WITH_SRP`); a correct answer issues tokens,
//! and `max-attempts` wrong answers (3 by default) fail the sign-in. The
//! expected answer is the config's `answer`, or a code generated for the
//! session; either way it travels in `privateChallengeParameters.answer`.
//! See README.md for the config keys.

use triggerfish_sdk::{config, create_auth_challenge as create, define_auth_challenge as define};
use triggerfish_sdk::{deny, info, verify_auth_challenge_response as verify, Context};

const CUSTOM_CHALLENGE: &str = "CUSTOM_CHALLENGE";
const KEYS: &[&str] = &[
    "answer",
    "code-length",
    "max-attempts",
    "question",
    "require-password",
];
/// A generated code is kept in the challenge's metadata under this prefix,
/// so that a retry within the session expects the same code.
const CODE_PREFIX: &str = "CODE-";

struct CustomAuthChallenge;

fn max_attempts() -> Result<usize, String> {
    match config::parse_or("max-attempts", 3usize)? {
        0 => Err(config::invalid("max-attempts", "0", "at least 1")),
        n => Ok(n),
    }
}

impl define::Guest for CustomAuthChallenge {
    fn handle(
        _: Context,
        request: define::Request,
        mut response: define::Response,
    ) -> Result<define::Response, String> {
        config::deny_unknown_keys(KEYS)?;
        let max_attempts = max_attempts()?;
        if request.user_not_found {
            response.finish_with_failure();
            return Ok(response);
        }
        let Some(last) = request.last_challenge() else {
            // CUSTOM_AUTH: no password step, straight to the challenge.
            if config::flag("require-password") {
                response.finish_with_failure();
            } else {
                response.next_challenge(CUSTOM_CHALLENGE);
            }
            return Ok(response);
        };
        match (last.challenge_name.as_str(), last.challenge_result) {
            // CUSTOM_WITH_SRP: the password first, then the challenge.
            ("SRP_A", _) => response.next_challenge("PASSWORD_VERIFIER"),
            ("PASSWORD_VERIFIER", true) => response.next_challenge(CUSTOM_CHALLENGE),
            (CUSTOM_CHALLENGE, true) => response.finish_with_tokens(),
            (CUSTOM_CHALLENGE, false) if request.failures(CUSTOM_CHALLENGE) < max_attempts => {
                response.next_challenge(CUSTOM_CHALLENGE)
            }
            (CUSTOM_CHALLENGE, false) => {
                info!("{max_attempts} wrong answers: sign-in failed");
                response.finish_with_failure()
            }
            _ => response.finish_with_failure(),
        };
        Ok(response)
    }
}

/// A code of `length` random digits.
fn generate_code(length: usize) -> Result<String, String> {
    (0..length)
        .map(|_| {
            getrandom::u64()
                .map(|n| char::from(b'0' + (n % 10) as u8))
                .map_err(|e| format!("no randomness to generate a code: {e}"))
        })
        .collect()
}

impl create::Guest for CustomAuthChallenge {
    fn handle(
        _: Context,
        request: create::Request,
        mut response: create::Response,
    ) -> Result<create::Response, String> {
        config::deny_unknown_keys(KEYS)?;
        if request.challenge_name != CUSTOM_CHALLENGE {
            return Ok(response);
        }
        let attempts_left = max_attempts()?.saturating_sub(
            request
                .session
                .iter()
                .filter(|s| s.challenge_name == CUSTOM_CHALLENGE && !s.challenge_result)
                .count(),
        );
        let answer = match config::get("answer") {
            Some(answer) if !answer.trim().is_empty() => answer,
            Some(_) => return Err(config::invalid("answer", "", "an answer")),
            None => {
                // The same code for every try of one session.
                let earlier = request.session.iter().rev().find_map(|step| {
                    step.challenge_metadata
                        .as_deref()?
                        .strip_prefix(CODE_PREFIX)
                        .map(str::to_owned)
                });
                let code = match earlier {
                    Some(code) => code,
                    None => generate_code(match config::parse_or("code-length", 6usize)? {
                        n @ 4..=12 => n,
                        n => {
                            return Err(config::invalid(
                                "code-length",
                                &n.to_string(),
                                "between 4 and 12",
                            ))
                        }
                    })?,
                };
                response.challenge_metadata = Some(format!("{CODE_PREFIX}{code}"));
                code
            }
        };
        response
            .set_private("answer", answer)
            .set_public("trigger", "true")
            .set_public("attemptsLeft", attempts_left.to_string());
        if let Some(question) = config::get("question") {
            response.set_public("question", question);
        }
        Ok(response)
    }
}

/// Compares without stopping at the first difference.
fn same_answer(expected: &str, given: &str) -> bool {
    let (expected, given) = (expected.trim().as_bytes(), given.trim().as_bytes());
    expected.len() == given.len()
        && expected
            .iter()
            .zip(given)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

impl verify::Guest for CustomAuthChallenge {
    fn handle(
        _: Context,
        request: verify::Request,
        mut response: verify::Response,
    ) -> Result<verify::Response, String> {
        let Some(expected) = request.private_parameter("answer") else {
            deny!(
                "the challenge has no expected answer: privateChallengeParameters has no \
                 `answer` (create-auth-challenge of this plugin sets it)"
            );
        };
        response.answer_correct = Some(same_answer(expected, &request.challenge_answer));
        Ok(response)
    }
}

triggerfish_sdk::export!(
    CustomAuthChallenge: define_auth_challenge,
    create_auth_challenge,
    verify_auth_challenge_response
);

#[cfg(test)]
mod tests {
    use super::*;
    use triggerfish_sdk::{testing, ChallengeResult};

    use testing::challenge as step;

    fn define(session: Vec<ChallengeResult>) -> define::Response {
        let request = define::Request {
            session,
            ..Default::default()
        };
        <CustomAuthChallenge as define::Guest>::handle(
            testing::context("DefineAuthChallenge_Authentication"),
            request,
            Default::default(),
        )
        .unwrap()
    }

    #[test]
    fn three_wrong_answers_fail() {
        testing::set_config::<&str, &str>([]);
        let wrong = || step(CUSTOM_CHALLENGE, false);
        assert_eq!(
            define(vec![]).challenge_name.as_deref(),
            Some(CUSTOM_CHALLENGE)
        );
        assert_eq!(
            define(vec![wrong(), wrong()]).fail_authentication,
            Some(false)
        );
        assert_eq!(
            define(vec![wrong(), wrong(), wrong()]).fail_authentication,
            Some(true)
        );
        assert_eq!(
            define(vec![wrong(), step(CUSTOM_CHALLENGE, true)]).issue_tokens,
            Some(true)
        );
    }

    #[test]
    fn a_generated_code_is_kept_for_the_session() {
        testing::set_config::<&str, &str>([]);
        let create = |session| {
            <CustomAuthChallenge as create::Guest>::handle(
                testing::context("CreateAuthChallenge_Authentication"),
                create::Request {
                    challenge_name: CUSTOM_CHALLENGE.to_owned(),
                    session,
                    ..Default::default()
                },
                Default::default(),
            )
            .unwrap()
        };
        let first = create(vec![]);
        let code = triggerfish_sdk::attribute(&first.private_challenge_parameters, "answer")
            .unwrap()
            .to_owned();
        assert_eq!(code.len(), 6);
        assert!(code.bytes().all(|b| b.is_ascii_digit()));
        let mut failed = step(CUSTOM_CHALLENGE, false);
        failed.challenge_metadata = first.challenge_metadata.clone();
        let second = create(vec![failed]);
        assert_eq!(
            triggerfish_sdk::attribute(&second.private_challenge_parameters, "answer"),
            Some(code.as_str())
        );
        assert_eq!(
            triggerfish_sdk::attribute(&second.public_challenge_parameters, "attemptsLeft"),
            Some("2")
        );
    }

    #[test]
    fn answers_compare_whole() {
        assert!(same_answer("42", " 42 "));
        assert!(!same_answer("42", "4"));
        assert!(!same_answer("42", "43"));
    }
}
