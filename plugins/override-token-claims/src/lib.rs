//! Pre token generation: adds, overrides and suppresses the claims of the
//! tokens Cognito issues, and overrides the user's groups, all from config.
//! One component serves both event shapes: version 1 (`claimsOverrideDetails`,
//! ID token only) and versions 2 and 3 (`claimsAndScopeOverrideDetails`, ID
//! and access tokens, scopes). See README.md for the config keys.

use triggerfish_sdk::pre_token_generation as v1;
use triggerfish_sdk::pre_token_generation_v2 as v2;
use triggerfish_sdk::{config, Context, GroupOverrideDetails};

/// Every key this plugin reads; a key ending in `.` takes a claim name.
const KEYS: &[&str] = &[
    "claims.",
    "suppress-claims",
    "access-claims.",
    "suppress-access-claims",
    "scopes-to-add",
    "scopes-to-suppress",
    "groups",
    "iam-roles",
    "preferred-role",
];

struct OverrideTokenClaims;

/// Fails when the plugin has nothing to do or a key is misspelt, naming
/// the keys: a token trigger that silently changes nothing is a bug that
/// shows up only in production tokens.
fn check_config() -> Result<(), String> {
    if config::keys().is_empty() {
        return Err(format!(
            "the plugin's config sets none of its keys ({}): set them under \
             [plugins.<file stem>.config] in tenant.toml",
            KEYS.iter()
                .map(|k| format!("`{k}{}`", if k.ends_with('.') { "<name>" } else { "" }))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    config::deny_unknown_keys(KEYS)
}

/// `groups`, `iam-roles`, `preferred-role`: the same for both shapes.
fn override_groups(groups: &mut GroupOverrideDetails) {
    // A key that is set overrides, even with an empty list: `groups = []`
    // takes every group out of the token.
    if config::get("groups").is_some() {
        groups.override_groups(config::list("groups"));
    }
    if config::get("iam-roles").is_some() {
        groups.override_iam_roles(config::list("iam-roles"));
    }
    if let Some(role) = config::get("preferred-role") {
        groups.set_preferred_role(role);
    }
}

fn sets_groups() -> bool {
    ["groups", "iam-roles", "preferred-role"]
        .iter()
        .any(|key| config::get(key).is_some())
}

impl v1::Guest for OverrideTokenClaims {
    fn handle(
        _: Context,
        _: v1::Request,
        mut response: v1::Response,
    ) -> Result<v1::Response, String> {
        check_config()?;
        for (name, value) in config::prefixed("claims.") {
            response.add_claim(&name, value);
        }
        for name in config::list("suppress-claims") {
            response.suppress_claim(&name);
        }
        if sets_groups() {
            override_groups(response.groups());
        }
        Ok(response)
    }
}

impl v2::Guest for OverrideTokenClaims {
    fn handle(
        _: Context,
        _: v2::Request,
        mut response: v2::Response,
    ) -> Result<v2::Response, String> {
        check_config()?;
        let (claims, suppressed) = (config::prefixed("claims."), config::list("suppress-claims"));
        if !claims.is_empty() || !suppressed.is_empty() {
            let id_token = response.id_token();
            for (name, value) in claims {
                id_token.add_claim(&name, value);
            }
            for name in suppressed {
                id_token.suppress_claim(&name);
            }
        }
        let access_keys = [
            "suppress-access-claims",
            "scopes-to-add",
            "scopes-to-suppress",
        ];
        let access_claims = config::prefixed("access-claims.");
        if !access_claims.is_empty() || access_keys.iter().any(|k| config::get(k).is_some()) {
            let access_token = response.access_token();
            for (name, value) in access_claims {
                access_token.add_claim(&name, value);
            }
            for name in config::list("suppress-access-claims") {
                access_token.suppress_claim(&name);
            }
            for scope in config::list("scopes-to-add") {
                access_token.add_scope(&scope);
            }
            for scope in config::list("scopes-to-suppress") {
                access_token.suppress_scope(&scope);
            }
        }
        if sets_groups() {
            override_groups(response.groups());
        }
        Ok(response)
    }
}

triggerfish_sdk::export!(OverrideTokenClaims: pre_token_generation, pre_token_generation_v2);

#[cfg(test)]
mod tests {
    use super::*;
    use triggerfish_sdk::testing;

    #[test]
    fn v1_claims_and_groups() {
        testing::set_config([
            ("claims.department", "sales"),
            ("suppress-claims", "email,phone_number"),
            ("groups", "readers"),
        ]);
        let response = <OverrideTokenClaims as v1::Guest>::handle(
            testing::context("TokenGeneration_Authentication"),
            Default::default(),
            Default::default(),
        )
        .unwrap();
        let details = response.claims_override_details.unwrap();
        assert_eq!(
            details.claims_to_add_or_override.unwrap(),
            [("department".to_owned(), "sales".to_owned())]
        );
        assert_eq!(
            details.claims_to_suppress.unwrap(),
            ["email", "phone_number"]
        );
        let groups = details.group_override_details.unwrap();
        assert_eq!(groups.groups_to_override.unwrap(), ["readers"]);
        assert_eq!(groups.iam_roles_to_override, None);
    }

    #[test]
    fn v2_leaves_out_what_is_not_configured() {
        testing::set_config([("scopes-to-add", "api/read")]);
        let response = <OverrideTokenClaims as v2::Guest>::handle(
            testing::context("TokenGeneration_Authentication"),
            Default::default(),
            Default::default(),
        )
        .unwrap();
        let details = response.claims_and_scope_override_details.unwrap();
        assert!(details.id_token_generation.is_none());
        assert!(details.group_override_details.is_none());
        assert_eq!(
            details
                .access_token_generation
                .unwrap()
                .scopes_to_add
                .unwrap(),
            ["api/read"]
        );
    }

    #[test]
    fn a_misspelt_key_is_named() {
        testing::set_config([("supress-claims", "email")]);
        let error = <OverrideTokenClaims as v1::Guest>::handle(
            testing::context("TokenGeneration_Authentication"),
            Default::default(),
            Default::default(),
        )
        .unwrap_err();
        assert!(error.contains("`supress-claims`"), "{error}");
    }
}
