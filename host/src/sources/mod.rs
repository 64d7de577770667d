//! Sources bring events in and hand them to the [`Dispatcher`]. `serve`
//! starts every source and stops them together.
//!
//! - [`http`]: the HTTP API (the `/v1` routes and the Lambda Invoke route).
//! - [`json`]: reading an event's JSON strictly, for every source.
//! - [`streams`]: the consumers of the event source mappings.
//! - [`drain`]: `/healthz`'s readiness, and stopping on SIGTERM without
//!   failing a request.
//!
//! [`Dispatcher`]: crate::dispatch::Dispatcher

pub mod drain;
pub mod http;
pub mod json;
pub mod streams;

use std::future::Future;
use std::pin::Pin;

/// Tells running sources to stop: cloned into each, triggered once.
#[derive(Clone)]
pub struct Stop(tokio::sync::watch::Receiver<bool>);

/// The sending half of [`Stop`].
pub struct StopHandle(tokio::sync::watch::Sender<bool>);

/// A stop signal and the handle that triggers it.
pub fn stop_signal() -> (StopHandle, Stop) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    (StopHandle(tx), Stop(rx))
}

impl StopHandle {
    /// Tells every source to stop taking new work.
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

impl Stop {
    /// Resolves once the sources are told to stop.
    pub async fn stopped(mut self) {
        let _ = self.0.wait_for(|stopped| *stopped).await;
    }
}

/// Something that brings events in until told to stop.
pub trait Source: Send {
    /// A name for logs, such as `http`.
    fn name(&self) -> &'static str;

    /// Runs until `stop` fires (then finishes the work it holds) or until
    /// it fails.
    fn run(self: Box<Self>, stop: Stop)
        -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;
}

/// Runs every source until `stop` fires and all have finished, or one
/// fails (then the others are told to stop too, and its error returned).
pub async fn run_all(
    sources: Vec<Box<dyn Source>>,
    stop: Stop,
    handle: std::sync::Arc<StopHandle>,
) -> anyhow::Result<()> {
    let mut running = tokio::task::JoinSet::new();
    for source in sources {
        let name = source.name();
        let run = source.run(stop.clone());
        running.spawn(async move { (name, run.await) });
    }
    let mut first_error = None;
    while let Some(joined) = running.join_next().await {
        let (name, result) = joined?;
        if let Err(error) = result {
            tracing::error!(source = name, error = %format!("{error:#}"), "source failed");
            handle.stop();
            first_error.get_or_insert(error.context(format!("the {name} source failed")));
        }
    }
    first_error.map_or(Ok(()), Err)
}
