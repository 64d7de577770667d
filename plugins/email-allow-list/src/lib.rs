//! PreSignUp: only email addresses in a listed domain (or a subdomain of
//! one) may sign up. Config: `domains`, the domains allowed; optional
//! `auto-confirm` (true/false), which confirms allowed users at once and
//! marks their email verified.

triggerfish_sdk::bindings!("triggerfish:user-pool/pre-sign-up-plugin");

use exports::triggerfish::user_pool::pre_sign_up::{Context, Guest, Request, Response};
use triggerfish_sdk::{attribute, config, domain_matches, email_domain};

struct EmailAllowList;

impl Guest for EmailAllowList {
    fn handle(_: Context, request: Request, mut response: Response) -> Result<Response, String> {
        let allowed = config::list("domains");
        if allowed.is_empty() {
            config::require("domains")?;
        }
        let domain = attribute(&request.user_attributes, "email")
            .and_then(email_domain)
            .ok_or("An email address is required to sign up")?;
        if !allowed.iter().any(|listed| domain_matches(&domain, listed)) {
            return Err(format!("Sign-ups from {domain} are not allowed"));
        }
        if config::flag("auto-confirm") {
            response.auto_confirm_user = Some(true);
            response.auto_verify_email = Some(true);
        }
        Ok(response)
    }
}

export!(EmailAllowList);
