//! CustomMessage: for `CustomMessage_SignUp`, an email whose body holds a
//! confirmation link built from the configured `base-url`, the user name,
//! the app client and Cognito's code placeholder, after Amplify's "email
//! verification link" template. Other messages are left as they are. See
//! README.md for the config keys.

use triggerfish_sdk::custom_message::{Context, Guest, Request, Response};
use triggerfish_sdk::{config, debug, http};

const KEYS: &[&str] = &["base-url", "email-subject", "email-message", "sources"];
const DEFAULT_SUBJECT: &str = "Confirm your account";
const DEFAULT_MESSAGE: &str = "Welcome! Confirm your account by opening this link:";

struct CustomMessageLink;

/// `<base-url>?username=…&client_id=…&code={####}`. The code placeholder is
/// left as it is: Cognito puts the code there when it sends the message.
fn confirmation_link(base_url: &str, context: &Context, code_parameter: &str) -> String {
    let mut link = base_url.to_owned();
    link.push(if base_url.contains('?') { '&' } else { '?' });
    if let Some(user_name) = &context.user_name {
        link.push_str(&format!("username={}&", http::percent_encode(user_name)));
    }
    if let Some(client_id) = &context.caller_context.client_id {
        link.push_str(&format!("client_id={}&", http::percent_encode(client_id)));
    }
    link.push_str("code=");
    link.push_str(code_parameter);
    link
}

impl Guest for CustomMessageLink {
    fn handle(
        context: Context,
        request: Request,
        mut response: Response,
    ) -> Result<Response, String> {
        config::deny_unknown_keys(KEYS)?;
        let base_url = config::require_url("base-url")?;
        let sources = match config::list("sources") {
            sources if sources.is_empty() => vec!["CustomMessage_SignUp".to_owned()],
            sources => sources,
        };
        if !sources.contains(&context.trigger_source) {
            debug!(
                "{} is not for a link: left as it is",
                context.trigger_source
            );
            return Ok(response);
        }
        let link = confirmation_link(&base_url, &context, &request.code_parameter);
        let message = config::get_or("email-message", DEFAULT_MESSAGE);
        let body = if message.contains("{link}") {
            message.replace("{link}", &link)
        } else {
            format!("{message} {link}")
        };
        response
            .set_email(
                config::get_or("email-subject", DEFAULT_SUBJECT),
                body.clone(),
            )
            .set_sms(body);
        Ok(response)
    }
}

triggerfish_sdk::export!(CustomMessageLink: custom_message);

#[cfg(test)]
mod tests {
    use super::*;
    use triggerfish_sdk::testing;

    fn message(source: &str) -> Result<Response, String> {
        let request = Request {
            code_parameter: "{####}".to_owned(),
            ..Default::default()
        };
        CustomMessageLink::handle(testing::context(source), request, Response::default())
    }

    #[test]
    fn the_link_carries_user_client_and_code() {
        testing::set_config([("base-url", "https://app.example.com/confirm")]);
        let response = message("CustomMessage_SignUp").unwrap();
        assert_eq!(
            response.email_message.unwrap(),
            format!(
                "{DEFAULT_MESSAGE} https://app.example.com/confirm?username=jane&client_id=client-1&code={{####}}"
            )
        );
        assert_eq!(response.email_subject.as_deref(), Some(DEFAULT_SUBJECT));
    }

    #[test]
    fn other_messages_are_left_alone() {
        testing::set_config([("base-url", "https://app.example.com/confirm")]);
        assert_eq!(
            message("CustomMessage_ForgotPassword").unwrap(),
            Response::default()
        );
    }

    #[test]
    fn user_names_are_encoded() {
        assert_eq!(
            http::percent_encode("jane doe+x@é"),
            "jane%20doe%2Bx%40%C3%A9"
        );
    }
}
