//! Write Triggerfish plugins in Rust.
//!
//! A plugin is a WebAssembly component that exports one interface per
//! trigger it handles. [`bindings!`] generates the types and traits of a
//! trigger's world; implement its `Guest` trait and `export!` your type:
//!
//! ```ignore
//! triggerfish_sdk::bindings!("triggerfish:user-pool/pre-sign-up-plugin");
//! use exports::triggerfish::user_pool::pre_sign_up::{Context, Guest, Request, Response};
//!
//! struct Plugin;
//!
//! impl Guest for Plugin {
//!     fn handle(_: Context, request: Request, mut response: Response) -> Result<Response, String> {
//!         let email = triggerfish_sdk::attribute(&request.user_attributes, "email").unwrap_or("");
//!         if email.ends_with("@example.com") {
//!             return Err("example.com addresses cannot sign up".into());
//!         }
//!         response.auto_confirm_user = Some(true);
//!         Ok(response)
//!     }
//! }
//!
//! export!(Plugin);
//! ```
//!
//! Build with `cargo build --target wasm32-wasip2 --release` and drop the
//! `.wasm` into a tenant folder.

#[doc(hidden)]
pub use wit_bindgen;

/// The host's imports, shared by every plugin.
#[doc(hidden)]
pub mod host {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "triggerfish:host/imports@0.1.0",
    });
}

pub use host::triggerfish::host::log::Level;

pub mod http;

/// Generates the bindings of one world of the contract in the calling
/// module: an `exports` module with the trigger's types and `Guest` trait,
/// and an `export!` macro.
///
/// The one-argument form reads the WIT from `../../wit` (a crate in this
/// repository's `plugins/`); pass the path first to use another copy.
#[macro_export]
macro_rules! bindings {
    ($world:literal) => {
        $crate::bindings!("../../wit", $world);
    };
    ($path:literal, $world:literal) => {
        $crate::wit_bindgen::generate!({
            path: $path,
            world: $world,
            runtime_path: "::triggerfish_sdk::wit_bindgen::rt",
            with: {
                "triggerfish:host/log@0.1.0": ::triggerfish_sdk::host::triggerfish::host::log,
                "triggerfish:host/config@0.1.0": ::triggerfish_sdk::host::triggerfish::host::config,
            },
            generate_all,
        });
    };
}

/// Writes a line to the host's log, in the span of this call.
pub fn log(level: Level, message: &str) {
    host::triggerfish::host::log::write(level, message);
}

/// Logs at info level, `format!` style.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log($crate::Level::Info, &format!($($arg)*)) };
}

/// Logs at warn level, `format!` style.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log($crate::Level::Warn, &format!($($arg)*)) };
}

/// Logs at debug level, `format!` style.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log($crate::Level::Debug, &format!($($arg)*)) };
}

/// This plugin's settings from `tenant.toml`.
pub mod config {
    use crate::host::triggerfish::host::config as imports;

    /// The value of `key`, if the tenant set one.
    pub fn get(key: &str) -> Option<String> {
        imports::get(key)
    }

    /// The value of `key`, or an error naming the key that is missing.
    /// Returned from a handler, the error stops the chain.
    pub fn require(key: &str) -> Result<String, String> {
        imports::get(key).ok_or_else(|| {
            format!("the plugin's config has no `{key}`: set it under [plugins.<file stem>.config] in tenant.toml")
        })
    }

    /// Whether `key` is set to `true`, `yes` or `1`.
    pub fn flag(key: &str) -> bool {
        matches!(
            imports::get(key).as_deref().map(str::trim),
            Some("true" | "yes" | "1")
        )
    }

    /// A comma-separated value (or a TOML list) as its items, trimmed,
    /// without empty ones.
    pub fn list(key: &str) -> Vec<String> {
        imports::get(key)
            .map(|value| split_list(&value))
            .unwrap_or_default()
    }

    pub(crate) fn split_list(value: &str) -> Vec<String> {
        value
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// The value of `name` in a map of attributes (`userAttributes`,
/// `clientMetadata`, ...).
pub fn attribute<'a>(map: &'a [(String, String)], name: &str) -> Option<&'a str> {
    map.iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// Sets `name` to `value` in a map of attributes, replacing any old value.
pub fn set_attribute(map: &mut Vec<(String, String)>, name: &str, value: impl Into<String>) {
    let value = value.into();
    match map.iter_mut().find(|(key, _)| key == name) {
        Some(entry) => entry.1 = value,
        None => map.push((name.to_owned(), value)),
    }
}

/// The domain of an email address, lower-cased: `Jane@Example.COM` gives
/// `example.com`. None when the address has no `@` or nothing after it.
pub fn email_domain(email: &str) -> Option<String> {
    let (_, domain) = email.trim().rsplit_once('@')?;
    (!domain.is_empty()).then(|| domain.to_ascii_lowercase())
}

/// Whether `domain` is `listed` or a subdomain of it.
pub fn domain_matches(domain: &str, listed: &str) -> bool {
    let listed = listed.trim().trim_start_matches('@').to_ascii_lowercase();
    domain == listed || domain.ends_with(&format!(".{listed}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_domains() {
        assert_eq!(
            email_domain("Jane@Example.COM").as_deref(),
            Some("example.com")
        );
        assert_eq!(email_domain("nobody"), None);
        assert_eq!(email_domain("x@"), None);
        assert!(domain_matches("mail.spam.test", "spam.test"));
        assert!(domain_matches("spam.test", "@SPAM.test"));
        assert!(!domain_matches("notspam.test", "spam.test"));
    }

    #[test]
    fn lists_and_attributes() {
        assert_eq!(config::split_list(" a, b ,,c"), ["a", "b", "c"]);
        let mut map = vec![("email".to_owned(), "a@b.c".to_owned())];
        set_attribute(&mut map, "email", "x@y.z");
        set_attribute(&mut map, "name", "X");
        assert_eq!(attribute(&map, "email"), Some("x@y.z"));
        assert_eq!(attribute(&map, "name"), Some("X"));
    }
}
