//! The benchmark's three PreSignUp handlers compiled natively, without a
//! sandbox: the upper bound of what a chain can cost.

use serde_json::{json, Value};
use triggerfish_sdk::{domain_matches, email_domain};

pub const DENIED: &[&str] = &["spam.test", "throwaway.test"];
pub const ALLOWED: &[&str] = &["example.com", "example.org"];

fn email(event: &Value) -> Option<String> {
    event["request"]["userAttributes"]["email"]
        .as_str()
        .and_then(email_domain)
}

pub fn deny_list(event: &mut Value) -> Result<(), String> {
    if let Some(domain) = email(event) {
        if DENIED.iter().any(|listed| domain_matches(&domain, listed)) {
            return Err(format!("Sign-ups from {domain} are not allowed"));
        }
    }
    Ok(())
}

pub fn allow_list(event: &mut Value) -> Result<(), String> {
    let domain = email(event).ok_or("An email address is required to sign up")?;
    if !ALLOWED.iter().any(|listed| domain_matches(&domain, listed)) {
        return Err(format!("Sign-ups from {domain} are not allowed"));
    }
    event["response"]["autoConfirmUser"] = json!(true);
    event["response"]["autoVerifyEmail"] = json!(true);
    Ok(())
}

pub fn auto_confirm(event: &mut Value) -> Result<(), String> {
    event["response"]["autoConfirmUser"] = json!(true);
    Ok(())
}

pub fn chain(event: &mut Value) -> Result<(), String> {
    deny_list(event)?;
    allow_list(event)?;
    auto_confirm(event)
}

/// Serves the native chain at the same route as Triggerfish.
pub async fn serve(listen: &str) -> anyhow::Result<()> {
    use axum::http::StatusCode;
    use axum::routing::post;
    use axum::Json;
    let app = axum::Router::new().route(
        "/v1/tenants/{tenant}/events",
        post(|Json(mut event): Json<Value>| async move {
            match chain(&mut event) {
                Ok(()) => (StatusCode::OK, Json(event)),
                Err(message) => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Json(json!({"error": {"kind": "denied", "message": message}})),
                ),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(listen).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
