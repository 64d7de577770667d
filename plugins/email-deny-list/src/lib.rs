//! PreSignUp: refuses sign-ups whose email address is in a listed domain
//! (or a subdomain of one). Config: `domains`, the domains to refuse.

use triggerfish_sdk::pre_sign_up::{Context, Guest, Request, Response};
use triggerfish_sdk::{config, deny, domain_matches, info};

struct EmailDenyList;

impl Guest for EmailDenyList {
    fn handle(_: Context, request: Request, response: Response) -> Result<Response, String> {
        let denied = config::require_list("domains")?;
        let Some(domain) = request.email_domain() else {
            return Ok(response);
        };
        if let Some(listed) = denied.iter().find(|listed| domain_matches(&domain, listed)) {
            info!("refused a sign-up from {domain} (listed as {listed})");
            deny!("Sign-ups from {domain} are not allowed");
        }
        Ok(response)
    }
}

triggerfish_sdk::export!(EmailDenyList: pre_sign_up);

#[cfg(test)]
mod tests {
    use super::*;
    use triggerfish_sdk::testing;

    fn sign_up(email: &str) -> Result<Response, String> {
        let request = Request {
            user_attributes: testing::map([("email", email)]),
            ..Default::default()
        };
        EmailDenyList::handle(
            testing::context("PreSignUp_SignUp"),
            request,
            Response::default(),
        )
    }

    #[test]
    fn listed_domains_and_their_subdomains_are_refused() {
        testing::set_config([("domains", "spam.test,throwaway.test")]);
        assert_eq!(
            sign_up("bot@mail.SPAM.test").unwrap_err(),
            "Sign-ups from mail.spam.test are not allowed"
        );
        assert!(sign_up("jane@example.com").is_ok());
    }

    #[test]
    fn without_domains_every_sign_up_is_refused_with_the_key_named() {
        testing::set_config::<&str, &str>([]);
        assert!(sign_up("jane@example.com")
            .unwrap_err()
            .contains("`domains`"));
    }
}
