//! Unit testing a plugin natively (`cargo test -p <plugin>`).
//!
//! Outside WebAssembly there is no host: [`config`](crate::config) reads
//! the values set here and [`log`](crate::log()) keeps its lines for
//! [`logs`]. Both are per thread, and Rust runs each test on its own
//! thread, so tests do not see each other's settings.
//!
//! ```
//! use triggerfish_sdk::pre_sign_up::{Guest, Request, Response};
//! use triggerfish_sdk::testing;
//!
//! # struct Plugin;
//! # impl Guest for Plugin {
//! #     fn handle(_: triggerfish_sdk::Context, _: Request, r: Response) -> Result<Response, String> {
//! #         triggerfish_sdk::config::require("domains")?;
//! #         Ok(r)
//! #     }
//! # }
//! testing::set_config([("domains", "spam.test")]);
//! let request = Request {
//!     user_attributes: testing::map([("email", "jane@example.com")]),
//!     ..Default::default()
//! };
//! let context = testing::context("PreSignUp_SignUp");
//! assert!(Plugin::handle(context, request, Response::default()).is_ok());
//! ```
//!
//! Through the real host, plugins are tested by loading their `.wasm`
//! (see `tests/all/plugins.rs` in this repository).

use crate::{CallerContext, Context, Level};
use std::cell::RefCell;
use std::collections::BTreeMap;

thread_local! {
    static CONFIG: RefCell<BTreeMap<String, String>> = const { RefCell::new(BTreeMap::new()) };
    static LOGS: RefCell<Vec<(Level, String)>> = const { RefCell::new(Vec::new()) };
}

/// Replaces this thread's plugin config with `pairs`.
pub fn set_config<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) {
    let config = pairs
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    CONFIG.with(|c| *c.borrow_mut() = config);
}

/// Takes the lines logged on this thread so far.
pub fn logs() -> Vec<(Level, String)> {
    LOGS.with(|l| std::mem::take(&mut *l.borrow_mut()))
}

/// A context as Cognito would send it for `trigger_source`, with sample
/// values (`us-east-1`, user `jane`).
pub fn context(trigger_source: &str) -> Context {
    Context {
        version: "1".to_owned(),
        trigger_source: trigger_source.to_owned(),
        region: "us-east-1".to_owned(),
        user_pool_id: "us-east-1_EXAMPLE".to_owned(),
        user_name: Some("jane".to_owned()),
        caller_context: CallerContext {
            aws_sdk_version: Some("aws-sdk-unknown".to_owned()),
            client_id: Some("client-1".to_owned()),
        },
    }
}

/// One step of a custom auth session: `challenge_name`, answered right or
/// not.
pub fn challenge(name: &str, result: bool) -> crate::ChallengeResult {
    crate::ChallengeResult {
        challenge_name: name.to_owned(),
        challenge_result: result,
        challenge_metadata: None,
    }
}

/// A string map (`userAttributes`, `clientMetadata`, ...) from pairs.
pub fn map<K: Into<String>, V: Into<String>>(
    pairs: impl IntoIterator<Item = (K, V)>,
) -> Vec<(String, String)> {
    pairs
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) fn config_get(key: &str) -> Option<String> {
    CONFIG.with(|c| c.borrow().get(key).cloned())
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) fn config_keys() -> Vec<String> {
    CONFIG.with(|c| c.borrow().keys().cloned().collect())
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) fn record_log(level: Level, message: &str) {
    eprintln!("[{level:?}] {message}");
    LOGS.with(|l| l.borrow_mut().push((level, message.to_owned())));
}
