//! The errors of requests that do not reach a chain, and the JSON they
//! answer with.

use super::*;

/// What went wrong with a request that did not reach a chain. The names
/// are part of the API (`error.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestErrorKind {
    NotFound,
    UnknownTenant,
    PayloadTooLarge,
    MalformedJson,
    UnknownTrigger,
    InvalidEvent,
    InvalidRequest,
    Unauthorized,
    Forbidden,
    InvalidSignature,
    TooManyRequests,
    SyncStoreFailed,
    InvalidPlugin,
    InvalidConfig,
    UnknownPlugin,
    QuotaExceeded,
    WouldLockOut,
    DeployFailed,
}

impl RequestErrorKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RequestErrorKind::NotFound => "not-found",
            RequestErrorKind::UnknownTenant => "unknown-tenant",
            RequestErrorKind::PayloadTooLarge => "payload-too-large",
            RequestErrorKind::MalformedJson => "malformed-json",
            RequestErrorKind::UnknownTrigger => "unknown-trigger",
            RequestErrorKind::InvalidEvent => "invalid-event",
            RequestErrorKind::InvalidRequest => "invalid-request",
            RequestErrorKind::Unauthorized => "unauthorized",
            RequestErrorKind::Forbidden => "forbidden",
            RequestErrorKind::InvalidSignature => "invalid-signature",
            RequestErrorKind::TooManyRequests => "too-many-requests",
            RequestErrorKind::SyncStoreFailed => "sync-store-failed",
            RequestErrorKind::InvalidPlugin => "invalid-plugin",
            RequestErrorKind::InvalidConfig => "invalid-config",
            RequestErrorKind::UnknownPlugin => "unknown-plugin",
            RequestErrorKind::QuotaExceeded => "quota-exceeded",
            RequestErrorKind::WouldLockOut => "would-lock-out",
            RequestErrorKind::DeployFailed => "deploy-failed",
        }
    }

    /// The name AWS gives this error in `x-amzn-ErrorType`.
    pub(crate) fn aws_type(self) -> &'static str {
        match self {
            RequestErrorKind::NotFound
            | RequestErrorKind::UnknownTenant
            | RequestErrorKind::UnknownPlugin => "ResourceNotFoundException",
            RequestErrorKind::PayloadTooLarge => "RequestTooLargeException",
            RequestErrorKind::Unauthorized => "UnrecognizedClientException",
            RequestErrorKind::Forbidden => "AccessDeniedException",
            RequestErrorKind::InvalidSignature => "InvalidSignatureException",
            RequestErrorKind::TooManyRequests => "TooManyRequestsException",
            RequestErrorKind::SyncStoreFailed => "ServiceException",
            RequestErrorKind::MalformedJson
            | RequestErrorKind::UnknownTrigger
            | RequestErrorKind::InvalidEvent
            | RequestErrorKind::InvalidRequest
            | RequestErrorKind::InvalidPlugin
            | RequestErrorKind::InvalidConfig
            | RequestErrorKind::QuotaExceeded
            | RequestErrorKind::WouldLockOut => "InvalidRequestContentException",
            RequestErrorKind::DeployFailed => "ServiceException",
        }
    }
}

/// A request that did not reach a chain, and its HTTP answer.
#[derive(Debug)]
pub(crate) struct RequestError {
    pub(crate) status: StatusCode,
    pub(crate) kind: RequestErrorKind,
    pub(crate) message: String,
}

impl RequestError {
    pub(crate) fn new(
        status: StatusCode,
        kind: RequestErrorKind,
        message: impl Into<String>,
    ) -> Self {
        RequestError {
            status,
            kind,
            message: message.into(),
        }
    }
}

impl From<AuthError> for RequestError {
    fn from(error: AuthError) -> Self {
        let (status, kind) = match error {
            AuthError::WrongTenant | AuthError::NoDeployRight => {
                (StatusCode::FORBIDDEN, RequestErrorKind::Forbidden)
            }
            AuthError::Signature(_) => (StatusCode::FORBIDDEN, RequestErrorKind::InvalidSignature),
            AuthError::MissingKey | AuthError::UnknownKey | AuthError::NoKeys => {
                (StatusCode::UNAUTHORIZED, RequestErrorKind::Unauthorized)
            }
        };
        RequestError::new(status, kind, error.to_string())
    }
}

impl IntoResponse for RequestError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(json!({"error": {"kind": self.kind.as_str(), "message": self.message}})),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        // For the metrics of refused requests.
        response.extensions_mut().insert(self.kind);
        response
    }
}

pub(super) async fn not_found() -> RequestError {
    RequestError::new(
        StatusCode::NOT_FOUND,
        RequestErrorKind::NotFound,
        "no such route; see the README for the API",
    )
}
