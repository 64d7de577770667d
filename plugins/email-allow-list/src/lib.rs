//! PreSignUp: only email addresses in a listed domain (or a subdomain of
//! one) may sign up. Config: `domains`, the domains allowed; optional
//! `auto-confirm` (true/false), which confirms allowed users at once and
//! marks their email verified.

use triggerfish_sdk::pre_sign_up::{Context, Guest, Request, Response};
use triggerfish_sdk::{config, deny, domain_matches};

struct EmailAllowList;

impl Guest for EmailAllowList {
    fn handle(_: Context, request: Request, mut response: Response) -> Result<Response, String> {
        let allowed = config::require_list("domains")?;
        let Some(domain) = request.email_domain() else {
            deny!("An email address is required to sign up");
        };
        if !allowed.iter().any(|listed| domain_matches(&domain, listed)) {
            deny!("Sign-ups from {domain} are not allowed");
        }
        if config::flag("auto-confirm") {
            response.confirm_user().verify_email();
        }
        Ok(response)
    }
}

triggerfish_sdk::export!(EmailAllowList: pre_sign_up);
