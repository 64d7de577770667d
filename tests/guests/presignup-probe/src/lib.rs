//! Test guest: a PreSignUp step whose behaviour comes from config `mode`:
//! - `auto-confirm`: sets autoConfirmUser;
//! - `copy`: sets autoVerifyEmail to the autoConfirmUser it was given, so
//!   a test can see what an earlier plugin of the chain left;
//! - `deny`: refuses with config `message`;
//! - `slow`: logs `slow: waiting` (so a test knows the call has begun),
//!   waits config `ms` milliseconds (in the host's clock, using no CPU),
//!   then sets autoConfirmUser: a request that is in flight for a while.

triggerfish_sdk::bindings!("../../../wit", "triggerfish:user-pool/pre-sign-up-plugin");

use exports::triggerfish::user_pool::pre_sign_up::{Context, Guest, Request, Response};
use triggerfish_sdk::config;

struct Probe;

impl Guest for Probe {
    fn handle(_: Context, _: Request, mut response: Response) -> Result<Response, String> {
        match config::require("mode")?.as_str() {
            "auto-confirm" => response.auto_confirm_user = Some(true),
            "copy" => response.auto_verify_email = Some(response.auto_confirm_user == Some(true)),
            "deny" => return Err(config::require("message")?),
            "slow" => {
                let ms = config::require("ms")?
                    .parse()
                    .map_err(|e| format!("ms: {e}"))?;
                triggerfish_sdk::info!("slow: waiting {ms} ms");
                std::thread::sleep(std::time::Duration::from_millis(ms));
                response.auto_confirm_user = Some(true);
            }
            other => return Err(format!("unknown mode {other}")),
        }
        Ok(response)
    }
}

export!(Probe);
