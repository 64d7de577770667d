//! The operator's routes: `GET /metrics`, `GET /status` and its login.
//! Each needs an operator key ([`crate::auth::admin`]); without
//! `serve --admin-keys` they answer 404, like a route that does not exist.

use super::{authorization, read_body, Api, RequestError, RequestErrorKind};
use crate::auth::admin::AdminAuthError;
use crate::ops::session::Sessions;
use crate::ops::{status, Admin};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::SystemTime;

/// The content type of the metrics: OpenMetrics text, which is what
/// `prometheus-client` writes (counters' samples end in `_total`, the
/// text ends with `# EOF`), and which Prometheus reads.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The largest login form read.
const LOGIN_BODY_MAX_BYTES: usize = 8 << 10;

/// Headers of every HTML page: no caching, no framing, no script at all
/// (the page has none; this keeps an escaping slip from running one).
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

impl From<AdminAuthError> for RequestError {
    fn from(error: AdminAuthError) -> Self {
        RequestError::new(
            StatusCode::UNAUTHORIZED,
            RequestErrorKind::Unauthorized,
            error.to_string(),
        )
    }
}

/// The operator side, or the 404 of a host started without admin keys.
fn admin(api: &Api) -> Result<&Arc<Admin>, RequestError> {
    api.admin.as_ref().ok_or_else(|| {
        RequestError::new(
            StatusCode::NOT_FOUND,
            RequestErrorKind::NotFound,
            "no such route: the operator routes are off (start `serve` with --admin-keys FILE)",
        )
    })
}

/// Counts every request the API refused (a [`RequestError`], by its kind)
/// in the metrics: refusals before any event ran, such as bad JSON or a
/// wrong key, which the dispatcher never sees.
pub(super) fn count_refusals(router: axum::Router, admin: Arc<Admin>) -> axum::Router {
    router.layer(axum::middleware::map_response(move |response: Response| {
        let admin = admin.clone();
        async move {
            if let Some(kind) = response.extensions().get::<RequestErrorKind>() {
                admin.metrics.count_refusal(kind.as_str());
            }
            response
        }
    }))
}

/// `GET /metrics`: needs `Authorization: Bearer <operator key>`.
pub(super) async fn metrics(
    State(api): State<Api>,
    headers: HeaderMap,
) -> Result<Response, RequestError> {
    let admin = admin(&api)?;
    admin.keys.authorize(&headers)?;
    Ok((
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        admin.metrics.encode(),
    )
        .into_response())
}

fn html(status: StatusCode, page: String) -> Response {
    let mut response = (status, page).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

/// `GET /status`: with an operator key (`Authorization: Bearer`) or a
/// session from the login form. Without either, a browser gets the login
/// form (401), anything else the JSON error of the other routes.
pub(super) async fn status(
    State(api): State<Api>,
    headers: HeaderMap,
) -> Result<Response, RequestError> {
    let admin = admin(&api)?;
    let now = SystemTime::now();
    if !admin.sessions.check_headers(&headers, now) {
        if let Err(error) = admin.keys.authorize(&headers) {
            if wants_html(&headers) && authorization(&headers).is_none() {
                return Ok(html(StatusCode::UNAUTHORIZED, status::login_page(None)));
            }
            return Err(error.into());
        }
    }
    let page = status::render(&admin.tenants, &admin.recent, now);
    Ok(html(StatusCode::OK, page))
}

/// `POST /status/login`: the form's `key`; a good one is answered with a
/// session cookie and a redirect to the page, a wrong one with the form
/// again (401).
pub(super) async fn login(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, RequestError> {
    let admin = admin(&api)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > LOGIN_BODY_MAX_BYTES) {
        return Err(RequestError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            RequestErrorKind::PayloadTooLarge,
            format!("the login form is larger than {LOGIN_BODY_MAX_BYTES} bytes"),
        ));
    }
    let body = read_body(&headers, body).await?;
    let key = form_value(&body, "key").unwrap_or_default();
    if key.is_empty() || !admin.keys.allows(&key) {
        tracing::warn!("status page: a login with a key that is not an operator key");
        let problem = "That key is not an operator key.";
        return Ok(html(
            StatusCode::UNAUTHORIZED,
            status::login_page(Some(problem)),
        ));
    }
    let cookie = admin.sessions.set_cookie(SystemTime::now());
    Ok(redirect_to_status(&cookie))
}

/// `POST /status/logout`: ends the browser's session.
pub(super) async fn logout(State(api): State<Api>) -> Result<Response, RequestError> {
    admin(&api)?;
    Ok(redirect_to_status(&Sessions::clear_cookie()))
}

fn redirect_to_status(cookie: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, HeaderValue::from_static("/status"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(cookie) = HeaderValue::from_str(cookie) {
        headers.insert(header::SET_COOKIE, cookie);
    }
    response
}

/// One field of an `application/x-www-form-urlencoded` body.
fn form_value(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&').find_map(|pair| {
        let (field, value) = pair.split_once('=').unwrap_or((pair, ""));
        (field == name).then(|| {
            let value = value.replace('+', " ");
            percent_encoding::percent_decode_str(&value)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::form_value;

    #[test]
    fn form_fields_are_decoded() {
        assert_eq!(
            form_value(b"a=1&key=x%2By+z", "key").as_deref(),
            Some("x+y z")
        );
        assert_eq!(form_value(b"a=1", "key"), None);
    }
}
