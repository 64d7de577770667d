//! PreSignUp: refuses sign-ups whose email address is in a listed domain
//! (or a subdomain of one). Config: `domains`, the domains to refuse.

triggerfish_sdk::bindings!("triggerfish:user-pool/pre-sign-up-plugin");

use exports::triggerfish::user_pool::pre_sign_up::{Context, Guest, Request, Response};
use triggerfish_sdk::{attribute, config, domain_matches, email_domain};

struct EmailDenyList;

impl Guest for EmailDenyList {
    fn handle(_: Context, request: Request, response: Response) -> Result<Response, String> {
        let denied = config::list("domains");
        if denied.is_empty() {
            config::require("domains")?;
        }
        let Some(domain) = attribute(&request.user_attributes, "email").and_then(email_domain)
        else {
            return Ok(response);
        };
        if let Some(listed) = denied.iter().find(|listed| domain_matches(&domain, listed)) {
            triggerfish_sdk::info!("refused a sign-up from {domain} (listed as {listed})");
            return Err(format!("Sign-ups from {domain} are not allowed"));
        }
        Ok(response)
    }
}

export!(EmailDenyList);
