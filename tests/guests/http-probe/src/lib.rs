//! Test guest: a PreSignUp plugin that POSTs the user's email to config
//! `url` and confirms the user when the answer is 200; any failure of the
//! request denies, with the SDK's description of it.

triggerfish_sdk::bindings!("../../../wit", "triggerfish:user-pool/pre-sign-up-plugin");

use exports::triggerfish::user_pool::pre_sign_up::{Context, Guest, Request, Response};
use triggerfish_sdk::{attribute, config, http};

struct HttpProbe;

impl Guest for HttpProbe {
    fn handle(_: Context, request: Request, mut response: Response) -> Result<Response, String> {
        let url = config::require("url")?;
        let email = attribute(&request.user_attributes, "email").unwrap_or_default();
        let answer = http::post_json(&url, &format!("{{\"email\":{email:?}}}"))?;
        if answer.status != 200 {
            return Err(format!(
                "the checker answered {}: {}",
                answer.status,
                answer.text()
            ));
        }
        response.auto_confirm_user = Some(true);
        Ok(response)
    }
}

export!(HttpProbe);
