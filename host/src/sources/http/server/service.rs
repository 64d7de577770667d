//! The API router as hyper's service for one connection: the body's
//! clock, and the 408 when it runs out.

use super::connection::{Connection, Phase};
use axum::extract::ConnectInfo;
use axum::Router;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::{Body as HttpBody, Bytes, Frame, Incoming, SizeHint};
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The router as one connection sees it: moves the connection through its
/// phases and puts the body under its clock.
#[derive(Clone)]
pub(super) struct ApiService {
    pub(super) router: TowerToHyperService<Router>,
    pub(super) connection: Arc<Connection>,
}

pub(super) type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<SentBody>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for ApiService {
    type Response = Response<SentBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        self.connection.enter(Phase::InFlight);
        let timed_out = Arc::new(AtomicBool::new(false));
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(ConnectInfo(self.connection.peer));
        let body = TimedBody {
            inner: body,
            deadline: Instant::now() + self.connection.registry.limits.body_timeout,
            sleep: None,
            timed_out: timed_out.clone(),
        };
        let answer = hyper::service::Service::call(&self.router, Request::from_parts(parts, body));
        let connection = self.connection.clone();
        Box::pin(async move {
            let Ok(mut response) = answer.await;
            if timed_out.load(Ordering::Relaxed) {
                // Whatever the handler made of a cut-off body, the client
                // learns why.
                response = request_timeout(connection.registry.limits.body_timeout);
            }
            connection.enter(Phase::Sending);
            Ok(response.map(|body| SentBody {
                inner: body,
                connection: Some(connection),
            }))
        })
    }
}

pub(super) fn request_timeout(limit: Duration) -> axum::response::Response {
    let body = serde_json::json!({"error": {
        "kind": "request-timeout",
        "message": format!(
            "the request body did not arrive within the body timeout of {} ms",
            limit.as_millis()
        ),
    }});
    let mut response = Response::new(axum::body::Body::from(body.to_string()));
    *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // The rest of the body may still be on its way: do not read it as the
    // next request.
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The error a body past its timeout yields to the handler reading it.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within the body timeout")]
pub(super) struct BodyTimeout;

/// A request body that must be whole by its deadline.
pub(super) struct TimedBody {
    pub(super) inner: Incoming,
    pub(super) deadline: Instant,
    /// Made at the first wait: most bodies arrive with their headers.
    pub(super) sleep: Option<Pin<Box<Sleep>>>,
    pub(super) timed_out: Arc<AtomicBool>,
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.timed_out.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(BodyTimeout.into())));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(_))) if Instant::now() >= this.deadline => {
                this.timed_out.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(BodyTimeout.into())))
            }
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                let deadline = this.deadline;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if sleep.as_mut().poll(cx).is_ready() {
                    this.timed_out.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(BodyTimeout.into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that makes its connection idle once written (or dropped).
pub(super) struct SentBody {
    pub(super) inner: axum::body::Body,
    pub(super) connection: Option<Arc<Connection>>,
}

impl SentBody {
    pub(super) fn done(&mut self) {
        if let Some(connection) = self.connection.take() {
            connection.enter(Phase::Idle);
        }
    }
}

impl Drop for SentBody {
    fn drop(&mut self) {
        self.done();
    }
}

impl HttpBody for SentBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(frame, Poll::Ready(None)) {
            self.done();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
