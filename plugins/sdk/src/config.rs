//! This plugin's settings from its tenant's `tenant.toml`:
//!
//! ```toml
//! [plugins.10-email-deny-list.config]   # keyed by the file stem
//! domains = ["spam.test", "throwaway.test"]   # lists arrive joined with commas
//! auto-confirm = true                          # numbers and booleans as text
//!
//! [plugins.10-email-deny-list.secrets]  # read the same way, never listed
//! api-token = "..."
//! ```
//!
//! The functions returning `Result` fail with a message that names the key
//! and where to set it; returned from a handler with `?`, that message
//! reaches the caller as a denial, so a misconfigured tenant gets a clear
//! error rather than a plugin quietly doing nothing.
//!
//! Outside WebAssembly (native unit tests) the values come from
//! [`testing::set_config`](crate::testing::set_config).

use std::str::FromStr;

/// The value of `key`, or none when the tenant did not set it. Secrets are
/// read the same way.
pub fn get(key: &str) -> Option<String> {
    #[cfg(target_arch = "wasm32")]
    return crate::bindings::host::triggerfish::host::config::get(key);
    #[cfg(not(target_arch = "wasm32"))]
    return crate::testing::config_get(key);
}

/// Every key the tenant set for this plugin (config and secrets), sorted.
pub fn keys() -> Vec<String> {
    #[cfg(target_arch = "wasm32")]
    return crate::bindings::host::triggerfish::host::config::keys();
    #[cfg(not(target_arch = "wasm32"))]
    return crate::testing::config_keys();
}

/// The error for a key the plugin needs and the tenant did not set.
pub fn missing(key: &str) -> String {
    format!(
        "the plugin's config has no `{key}`: set it under [plugins.<file stem>.config] in tenant.toml"
    )
}

/// The error for a key whose value the plugin cannot use.
pub fn invalid(key: &str, value: &str, expected: &str) -> String {
    format!("the plugin's config `{key}` is {value:?}, which is not {expected}")
}

/// The value of `key`, or an error naming the key when it is missing or
/// blank.
pub fn require(key: &str) -> Result<String, String> {
    match get(key) {
        Some(value) if !value.trim().is_empty() => Ok(value),
        _ => Err(missing(key)),
    }
}

/// The value of `key`, which must be an `http://` or `https://` URL,
/// trimmed; an error names the key otherwise.
pub fn require_url(key: &str) -> Result<String, String> {
    let url = require(key)?.trim().to_owned();
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(invalid(key, &url, "an http:// or https:// URL"));
    }
    Ok(url)
}

/// The value of `key`, or `default` when the tenant did not set it.
pub fn get_or(key: &str, default: &str) -> String {
    get(key).unwrap_or_else(|| default.to_owned())
}

/// Whether `key` is set to `true`, `yes` or `1`.
pub fn flag(key: &str) -> bool {
    matches!(
        get(key).as_deref().map(str::trim),
        Some("true" | "yes" | "1")
    )
}

/// A comma-separated value (or a TOML list) as its items, trimmed, without
/// empty ones. Empty when the key is not set.
pub fn list(key: &str) -> Vec<String> {
    get(key).map(|value| split_list(&value)).unwrap_or_default()
}

/// Like [`list`], but an error naming the key when it is missing or empty.
pub fn require_list(key: &str) -> Result<Vec<String>, String> {
    let items = list(key);
    if items.is_empty() {
        return Err(missing(key));
    }
    Ok(items)
}

/// The value of `key` parsed as a `T` (a number, say): `Ok(None)` when it
/// is not set, an error naming the key when it does not parse.
pub fn parse<T: FromStr>(key: &str) -> Result<Option<T>, String> {
    match get(key) {
        None => Ok(None),
        Some(value) => value
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| invalid(key, &value, &expected::<T>())),
    }
}

/// Like [`parse`], with `default` when the key is not set.
pub fn parse_or<T: FromStr>(key: &str, default: T) -> Result<T, String> {
    Ok(parse(key)?.unwrap_or(default))
}

/// Every key that starts with `prefix`, with the prefix taken off, and its
/// value, sorted by key: `prefixed("claims.")` turns
/// `"claims.department" = "sales"` into `("department", "sales")`.
pub fn prefixed(prefix: &str) -> Vec<(String, String)> {
    keys()
        .into_iter()
        .filter_map(|key| {
            let name = key.strip_prefix(prefix)?.to_owned();
            let value = get(&key)?;
            (!name.is_empty()).then_some((name, value))
        })
        .collect()
}

/// Fails with an error naming the first key the plugin does not know: a
/// typo in `tenant.toml` then shows up at the first event rather than as a
/// setting silently ignored. `known` lists exact keys; a key ending in `.`
/// (such as `claims.`) admits every key with that prefix.
pub fn deny_unknown_keys(known: &[&str]) -> Result<(), String> {
    for key in keys() {
        let fits = known.iter().any(|known| {
            if known.ends_with('.') {
                key.starts_with(known) && key.len() > known.len()
            } else {
                key == *known
            }
        });
        if !fits {
            return Err(format!(
                "the plugin's config has an unknown key `{key}`; it knows {}",
                known
                    .iter()
                    .map(|k| if k.ends_with('.') {
                        format!("`{k}<name>`")
                    } else {
                        format!("`{k}`")
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(())
}

pub(crate) fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

/// What a value of `T` looks like, in words for the error message.
fn expected<T>() -> String {
    let name = std::any::type_name::<T>();
    let name = name.rsplit("::").next().unwrap_or(name);
    match name {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number of 0 or more".to_owned(),
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number".to_owned(),
        "f32" | "f64" => "a number".to_owned(),
        "bool" => "true or false".to_owned(),
        other => format!("a valid {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::set_config;

    #[test]
    fn lists_split_on_commas() {
        assert_eq!(split_list(" a, b ,,c"), ["a", "b", "c"]);
    }

    #[test]
    fn errors_name_the_key() {
        set_config([("attempts", "three"), ("blank", " ")]);
        assert!(require("domains").unwrap_err().contains("`domains`"));
        assert!(require("blank").unwrap_err().contains("`blank`"));
        assert!(require_list("blank").unwrap_err().contains("`blank`"));
        let error = parse::<u32>("attempts").unwrap_err();
        assert!(
            error.contains("`attempts`") && error.contains("a whole number"),
            "{error}"
        );
        assert_eq!(parse_or("missing", 3u32), Ok(3));
    }

    #[test]
    fn prefixes_and_unknown_keys() {
        set_config([
            ("claims.department", "sales"),
            ("claims.tier", "gold"),
            ("groups", "a,b"),
        ]);
        assert_eq!(
            prefixed("claims."),
            [
                ("department".to_owned(), "sales".to_owned()),
                ("tier".to_owned(), "gold".to_owned())
            ]
        );
        assert_eq!(deny_unknown_keys(&["claims.", "groups"]), Ok(()));
        let error = deny_unknown_keys(&["claims."]).unwrap_err();
        assert!(error.contains("`groups`"), "{error}");
    }
}
