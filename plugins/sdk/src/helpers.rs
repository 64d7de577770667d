//! Helper methods on the contract's types: what nearly every handler does,
//! in one call.

use crate::pre_token_generation_v2::{AccessTokenGeneration, ClaimValue, IdTokenGeneration};
use crate::*;

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

/// Whether `domain` is `listed` or a subdomain of it (`listed` may start
/// with `@` and is compared without regard to case).
pub fn domain_matches(domain: &str, listed: &str) -> bool {
    let listed = listed.trim().trim_start_matches('@').to_ascii_lowercase();
    domain == listed || domain.ends_with(&format!(".{listed}"))
}

macro_rules! user_attributes {
    ($($module:ident),*) => {$(
        impl $module::Request {
            /// The user attribute `name` (`email`, `phone_number`,
            /// `custom:tier`, ...), if the event carries it.
            pub fn attribute(&self, name: &str) -> Option<&str> {
                attribute(&self.user_attributes, name)
            }

            /// The user's `email` attribute.
            pub fn email(&self) -> Option<&str> {
                self.attribute("email")
            }

            /// The domain of the user's email address, lower-cased.
            pub fn email_domain(&self) -> Option<String> {
                self.email().and_then(email_domain)
            }
        }
    )*};
}

user_attributes!(
    pre_sign_up,
    post_confirmation,
    pre_authentication,
    post_authentication,
    define_auth_challenge,
    create_auth_challenge,
    verify_auth_challenge_response,
    pre_token_generation,
    pre_token_generation_v2,
    custom_message,
    custom_email_sender,
    custom_sms_sender
);

macro_rules! client_metadata {
    ($($module:ident),*) => {$(
        impl $module::Request {
            /// The `clientMetadata` value `name` the client passed, if any.
            pub fn client_metadata(&self, name: &str) -> Option<&str> {
                attribute(&self.client_metadata, name)
            }
        }
    )*};
}

client_metadata!(
    pre_sign_up,
    post_confirmation,
    post_authentication,
    define_auth_challenge,
    create_auth_challenge,
    verify_auth_challenge_response,
    pre_token_generation,
    pre_token_generation_v2,
    user_migration,
    custom_message,
    custom_email_sender,
    custom_sms_sender
);

impl pre_sign_up::Response {
    /// Confirms the user without a confirmation code (`autoConfirmUser`).
    pub fn confirm_user(&mut self) -> &mut Self {
        self.auto_confirm_user = Some(true);
        self
    }

    /// Marks the email address verified (`autoVerifyEmail`; Cognito needs
    /// [`confirm_user`](Self::confirm_user) too).
    pub fn verify_email(&mut self) -> &mut Self {
        self.auto_verify_email = Some(true);
        self
    }

    /// Marks the phone number verified (`autoVerifyPhone`; Cognito needs
    /// [`confirm_user`](Self::confirm_user) too).
    pub fn verify_phone(&mut self) -> &mut Self {
        self.auto_verify_phone = Some(true);
        self
    }
}

/// Adds `name` to a list of names once.
fn push_unique(list: &mut Vec<String>, name: &str) {
    if !list.iter().any(|n| n == name) {
        list.push(name.to_owned());
    }
}

/// Removes `name` from an optional list of names.
fn remove_name(list: &mut Option<Vec<String>>, name: &str) {
    if let Some(list) = list {
        list.retain(|n| n != name);
    }
}

/// Sets `name` in an optional list of claims, replacing an earlier value.
fn put_claim<V>(claims: &mut Option<Vec<(String, V)>>, name: &str, value: V) {
    let claims = claims.get_or_insert_with(Vec::new);
    match claims.iter_mut().find(|(n, _)| n == name) {
        Some(entry) => entry.1 = value,
        None => claims.push((name.to_owned(), value)),
    }
}

fn drop_claim<V>(claims: &mut Option<Vec<(String, V)>>, name: &str) {
    if let Some(claims) = claims {
        claims.retain(|(n, _)| n != name);
    }
}

fn strings<S: Into<String>>(items: impl IntoIterator<Item = S>) -> Vec<String> {
    items.into_iter().map(Into::into).collect()
}

impl GroupOverrideDetails {
    /// Replaces the groups in the token's `cognito:groups` claim.
    pub fn override_groups<S: Into<String>>(&mut self, groups: impl IntoIterator<Item = S>) {
        self.groups_to_override = Some(strings(groups));
    }

    /// Replaces the IAM roles in the token's `cognito:roles` claim.
    pub fn override_iam_roles<S: Into<String>>(&mut self, roles: impl IntoIterator<Item = S>) {
        self.iam_roles_to_override = Some(strings(roles));
    }

    /// Sets the token's `cognito:preferred_role` claim.
    pub fn set_preferred_role(&mut self, role: impl Into<String>) {
        self.preferred_role = Some(role.into());
    }
}

/// Changes to the ID token of a version 1 pre token generation event.
/// Adding a claim takes it off the suppressed list and suppressing one
/// drops an earlier addition, so within a chain the last plugin wins.
impl pre_token_generation::Response {
    fn details(&mut self) -> &mut pre_token_generation::ClaimsOverrideDetails {
        self.claims_override_details
            .get_or_insert_with(Default::default)
    }

    /// Adds the claim `name` to the ID token, or overrides its value.
    pub fn add_claim(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        let details = self.details();
        put_claim(&mut details.claims_to_add_or_override, name, value.into());
        remove_name(&mut details.claims_to_suppress, name);
        self
    }

    /// Removes the claim `name` from the ID token.
    pub fn suppress_claim(&mut self, name: &str) -> &mut Self {
        let details = self.details();
        drop_claim(&mut details.claims_to_add_or_override, name);
        push_unique(
            details.claims_to_suppress.get_or_insert_with(Vec::new),
            name,
        );
        self
    }

    /// The group and role overrides (`groupOverrideDetails`), created empty
    /// when absent.
    pub fn groups(&mut self) -> &mut GroupOverrideDetails {
        self.details()
            .group_override_details
            .get_or_insert_with(Default::default)
    }
}

/// Changes to both tokens of a version 2 or 3 pre token generation event.
impl pre_token_generation_v2::Response {
    fn details(&mut self) -> &mut pre_token_generation_v2::ClaimsAndScopeOverrideDetails {
        self.claims_and_scope_override_details
            .get_or_insert_with(Default::default)
    }

    /// The ID token's changes (`idTokenGeneration`), created empty when
    /// absent.
    pub fn id_token(&mut self) -> &mut IdTokenGeneration {
        self.details()
            .id_token_generation
            .get_or_insert_with(Default::default)
    }

    /// The access token's changes (`accessTokenGeneration`), created empty
    /// when absent.
    pub fn access_token(&mut self) -> &mut AccessTokenGeneration {
        self.details()
            .access_token_generation
            .get_or_insert_with(Default::default)
    }

    /// The group and role overrides (`groupOverrideDetails`), created empty
    /// when absent.
    pub fn groups(&mut self) -> &mut GroupOverrideDetails {
        self.details()
            .group_override_details
            .get_or_insert_with(Default::default)
    }
}

impl IdTokenGeneration {
    /// Adds the claim `name` to the ID token, or overrides its value.
    pub fn add_claim(&mut self, name: &str, value: impl Into<ClaimValue>) -> &mut Self {
        put_claim(&mut self.claims_to_add_or_override, name, value.into());
        remove_name(&mut self.claims_to_suppress, name);
        self
    }

    /// Removes the claim `name` from the ID token.
    pub fn suppress_claim(&mut self, name: &str) -> &mut Self {
        drop_claim(&mut self.claims_to_add_or_override, name);
        push_unique(self.claims_to_suppress.get_or_insert_with(Vec::new), name);
        self
    }
}

impl AccessTokenGeneration {
    /// Adds the claim `name` to the access token, or overrides its value.
    pub fn add_claim(&mut self, name: &str, value: impl Into<ClaimValue>) -> &mut Self {
        put_claim(&mut self.claims_to_add_or_override, name, value.into());
        remove_name(&mut self.claims_to_suppress, name);
        self
    }

    /// Removes the claim `name` from the access token.
    pub fn suppress_claim(&mut self, name: &str) -> &mut Self {
        drop_claim(&mut self.claims_to_add_or_override, name);
        push_unique(self.claims_to_suppress.get_or_insert_with(Vec::new), name);
        self
    }

    /// Adds an OAuth scope to the access token.
    pub fn add_scope(&mut self, scope: &str) -> &mut Self {
        remove_name(&mut self.scopes_to_suppress, scope);
        push_unique(self.scopes_to_add.get_or_insert_with(Vec::new), scope);
        self
    }

    /// Removes an OAuth scope from the access token.
    pub fn suppress_scope(&mut self, scope: &str) -> &mut Self {
        remove_name(&mut self.scopes_to_add, scope);
        push_unique(self.scopes_to_suppress.get_or_insert_with(Vec::new), scope);
        self
    }
}

impl From<&str> for ClaimValue {
    fn from(text: &str) -> Self {
        ClaimValue::Text(text.to_owned())
    }
}

impl From<String> for ClaimValue {
    fn from(text: String) -> Self {
        ClaimValue::Text(text)
    }
}

impl From<f64> for ClaimValue {
    fn from(number: f64) -> Self {
        ClaimValue::Number(number)
    }
}

impl From<i32> for ClaimValue {
    fn from(number: i32) -> Self {
        ClaimValue::Number(number.into())
    }
}

impl From<bool> for ClaimValue {
    fn from(value: bool) -> Self {
        ClaimValue::Boolean(value)
    }
}

impl From<Vec<String>> for ClaimValue {
    /// A JSON array of strings.
    fn from(items: Vec<String>) -> Self {
        ClaimValue::Json(json_string_array(&items))
    }
}

/// `["a","b"]`, with JSON string escapes.
fn json_string_array(items: &[String]) -> String {
    let mut out = String::from("[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in item.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push(']');
    out
}

impl define_auth_challenge::Request {
    /// The most recent step of the session, if any.
    pub fn last_challenge(&self) -> Option<&ChallengeResult> {
        self.session.last()
    }

    /// How many times the user answered the challenge `name` wrongly in
    /// this session.
    pub fn failures(&self, name: &str) -> usize {
        self.session
            .iter()
            .filter(|step| step.challenge_name == name && !step.challenge_result)
            .count()
    }
}

impl define_auth_challenge::Response {
    /// Presents the challenge `name` (such as `CUSTOM_CHALLENGE`) next.
    pub fn next_challenge(&mut self, name: &str) -> &mut Self {
        self.challenge_name = Some(name.to_owned());
        self.issue_tokens = Some(false);
        self.fail_authentication = Some(false);
        self
    }

    /// Ends the flow successfully: Cognito issues tokens.
    pub fn finish_with_tokens(&mut self) -> &mut Self {
        self.challenge_name = None;
        self.issue_tokens = Some(true);
        self.fail_authentication = Some(false);
        self
    }

    /// Ends the flow with a failed sign-in.
    pub fn finish_with_failure(&mut self) -> &mut Self {
        self.challenge_name = None;
        self.issue_tokens = Some(false);
        self.fail_authentication = Some(true);
        self
    }
}

impl create_auth_challenge::Response {
    /// Sets a parameter sent to the client with the challenge.
    pub fn set_public(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        set_attribute(&mut self.public_challenge_parameters, name, value);
        self
    }

    /// Sets a parameter Cognito keeps and hands to verify-auth-challenge
    /// (the expected answer, say). The client never sees it.
    pub fn set_private(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        set_attribute(&mut self.private_challenge_parameters, name, value);
        self
    }
}

impl verify_auth_challenge_response::Request {
    /// A private parameter create-auth-challenge set.
    pub fn private_parameter(&self, name: &str) -> Option<&str> {
        attribute(&self.private_challenge_parameters, name)
    }
}

impl custom_message::Response {
    /// Sets the email's subject and body. The body must contain the
    /// request's `code_parameter` (Cognito puts the code there).
    pub fn set_email(&mut self, subject: impl Into<String>, body: impl Into<String>) -> &mut Self {
        self.email_subject = Some(subject.into());
        self.email_message = Some(body.into());
        self
    }

    /// Sets the text message, which must contain the code parameter too.
    pub fn set_sms(&mut self, text: impl Into<String>) -> &mut Self {
        self.sms_message = Some(text.into());
        self
    }
}

impl user_migration::Response {
    /// Sets an attribute of the migrated user.
    pub fn set_attribute(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        set_attribute(&mut self.user_attributes, name, value);
        self
    }
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
    fn attributes() {
        let mut map = vec![("email".to_owned(), "a@b.c".to_owned())];
        set_attribute(&mut map, "email", "x@y.z");
        set_attribute(&mut map, "name", "X");
        assert_eq!(attribute(&map, "email"), Some("x@y.z"));
        assert_eq!(attribute(&map, "name"), Some("X"));
        let request = pre_sign_up::Request {
            user_attributes: map,
            ..Default::default()
        };
        assert_eq!(request.email_domain().as_deref(), Some("y.z"));
    }

    #[test]
    fn the_last_claim_change_wins() {
        let mut response = pre_token_generation::Response::default();
        response.add_claim("tier", "gold").suppress_claim("email");
        response
            .add_claim("tier", "platinum")
            .add_claim("email", "x");
        let details = response.claims_override_details.unwrap();
        assert_eq!(
            details.claims_to_add_or_override.unwrap(),
            [
                ("tier".to_owned(), "platinum".to_owned()),
                ("email".to_owned(), "x".to_owned())
            ]
        );
        assert_eq!(details.claims_to_suppress.unwrap(), Vec::<String>::new());
    }

    #[test]
    fn v2_tokens_and_scopes() {
        let mut response = pre_token_generation_v2::Response::default();
        response.id_token().add_claim("tier", "gold");
        response
            .access_token()
            .add_claim("level", 3)
            .add_scope("api/read")
            .suppress_scope("api/write");
        response.groups().override_groups(["admins"]);
        let details = response.claims_and_scope_override_details.unwrap();
        let access = details.access_token_generation.unwrap();
        assert!(matches!(
            access.claims_to_add_or_override.unwrap()[0].1,
            ClaimValue::Number(n) if n == 3.0
        ));
        assert_eq!(access.scopes_to_add.unwrap(), ["api/read"]);
        assert_eq!(access.scopes_to_suppress.unwrap(), ["api/write"]);
        assert_eq!(
            details.group_override_details.unwrap().groups_to_override,
            Some(vec!["admins".to_owned()])
        );
    }

    #[test]
    fn claim_values_from_lists_are_json() {
        let value: ClaimValue = vec!["a\"b".to_owned(), "c".to_owned()].into();
        assert!(matches!(value, ClaimValue::Json(ref s) if s == r#"["a\"b","c"]"#));
    }
}
