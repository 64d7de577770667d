//! Health for a load balancer, and draining: how `serve` stops without
//! failing a request.
//!
//! `GET /healthz` ([`Health`]) answers `200 ready` only when the host can
//! serve: every tenant loaded and, at start, the stream engine connected.
//! Before that it answers `503 starting`, and from the first SIGTERM or
//! Ctrl-C `503 draining`.
//!
//! On that signal ([`follow_signals`]):
//!
//! 1. `/healthz` says `draining` at once;
//! 2. the stream consumers take no new batch, finish the ones they hold
//!    (an invocation running is answered and committed; a batch waiting to
//!    be retried is left to the next holder of its lane), and give their
//!    lanes back to the engine (`Lanes::leave`), so that other hosts take
//!    them over now rather than when the leases run out;
//! 3. the HTTP source serves on for the drain grace (`--drain-grace-ms`),
//!    so that a load balancer's health check sees `draining` and stops
//!    sending requests before the listener closes (answers meanwhile say
//!    `Connection: close`, so keep-alive clients move on);
//!    then it stops accepting connections, closes idle ones, and finishes
//!    the requests in flight (each connection closes once its answer is
//!    written);
//! 4. `serve` exits 0 once every source has finished.
//!
//! The whole drain is bounded by `--drain-timeout-s`: past it the host
//! logs that it gave up and exits 1. A second signal exits at once, with
//! the code a shell gives a process killed by that signal (130 after
//! Ctrl-C, 143 after SIGTERM).

use super::StopHandle;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How long a draining host serves on by default before it closes its
/// listener: above the recipe's HAProxy check (250 ms × 2 failures).
pub const DEFAULT_DRAIN_GRACE: Duration = Duration::from_millis(2000);

/// The default bound on a whole drain: the grace, a chain's 5-second
/// budget for a few retries, and the stream batches in flight.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What `/healthz` reports, shared by the HTTP routes and the signal task.
/// Cloning shares it.
#[derive(Clone, Default)]
pub struct Health(Arc<State>);

#[derive(Default)]
struct State {
    draining: OnceLock<Draining>,
    /// Said ready once: from then on a lost engine connection is reported
    /// but does not take the host out of the balancer (see [`Health::ready`]).
    was_ready: AtomicBool,
}

/// Why and since when the host drains.
#[derive(Clone, Copy, Debug)]
pub struct Draining {
    /// `SIGTERM` or `SIGINT`.
    pub signal: &'static str,
    pub since: Instant,
}

/// The host's state as `/healthz` tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Serving: `200`.
    Ready,
    /// Not yet serving, and why: `503`.
    Starting(&'static str),
    /// Stopping, after this signal: `503`.
    Draining(&'static str),
}

impl Health {
    /// Starts draining; false if it had started already.
    pub fn begin_draining(&self, signal: &'static str) -> bool {
        self.0
            .draining
            .set(Draining {
                signal,
                since: Instant::now(),
            })
            .is_ok()
    }

    /// Since when and why the host drains, if it does.
    pub fn draining(&self) -> Option<Draining> {
        self.0.draining.get().copied()
    }

    /// The host's readiness, given whether every tenant is loaded and
    /// whether the stream engine is connected. The engine counts only until
    /// the host was first ready: every host shares one engine, and taking
    /// them all out of the balancer when it blips would turn a stream
    /// outage into a total one (the HTTP routes that need no stream keep
    /// working; the engine's client reconnects by itself).
    pub fn ready(&self, tenants_loaded: bool, engine_connected: bool) -> Readiness {
        if let Some(draining) = self.draining() {
            return Readiness::Draining(draining.signal);
        }
        if !tenants_loaded {
            return Readiness::Starting("loading the tenants");
        }
        if !engine_connected && !self.0.was_ready.load(Ordering::Relaxed) {
            return Readiness::Starting("connecting to the stream engine");
        }
        self.0.was_ready.store(true, Ordering::Relaxed);
        Readiness::Ready
    }
}

/// Adds `Connection: close` to every answer once the host drains, so that
/// keep-alive clients (a load balancer's pool among them) open their next
/// connection elsewhere instead of finding this one closed later.
pub fn close_connections_while_draining(router: axum::Router, health: Health) -> axum::Router {
    router.layer(axum::middleware::map_response(
        move |mut response: axum::response::Response| {
            let draining = health.draining().is_some();
            async move {
                if draining {
                    response.headers_mut().insert(
                        axum::http::header::CONNECTION,
                        axum::http::HeaderValue::from_static("close"),
                    );
                }
                response
            }
        },
    ))
}

/// Follows SIGTERM and Ctrl-C for `serve`: the first starts the drain
/// (`/healthz` says so, then `stop` tells every source to stop); a second,
/// or the drain outlasting `timeout`, ends the process at once.
pub async fn follow_signals(
    mut signals: Signals,
    health: Health,
    stop: Arc<StopHandle>,
    grace: Duration,
    timeout: Duration,
) {
    let (signal, _) = signals.next().await;
    health.begin_draining(signal);
    tracing::info!(
        signal,
        grace_ms = grace.as_millis() as u64,
        timeout_s = timeout.as_secs(),
        "draining: /healthz says so; serving on for the grace, then finishing the requests in flight and the stream batches held; a second signal exits at once"
    );
    stop.stop();
    tokio::select! {
        (signal, code) = signals.next() => {
            tracing::warn!(signal, "a second signal: exiting without finishing the drain");
            std::process::exit(code);
        }
        () = tokio::time::sleep(timeout) => {
            tracing::error!(timeout_s = timeout.as_secs(), "the drain did not finish within --drain-timeout-s; exiting, abandoning what is in flight");
            std::process::exit(1);
        }
    }
}

/// SIGTERM and SIGINT (Ctrl-C), each with the exit code of a process
/// killed by it. Made at once, so that a signal that comes before the
/// drain is followed is not lost (nor kills the host).
pub struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    /// Listens for the signals from now on (needs the async runtime).
    pub fn new() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                term: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn next(&mut self) -> (&'static str, i32) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => ("SIGTERM", 128 + 15),
                _ = self.interrupt.recv() => ("SIGINT", 128 + 2),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            ("Ctrl-C", 130)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_loaded_and_connected_then_draining_for_good() {
        let health = Health::default();
        assert_eq!(
            health.ready(false, true),
            Readiness::Starting("loading the tenants")
        );
        assert_eq!(
            health.ready(true, false),
            Readiness::Starting("connecting to the stream engine")
        );
        assert_eq!(health.ready(true, true), Readiness::Ready);
        // Once ready, a lost engine connection does not take the host out.
        assert_eq!(health.ready(true, false), Readiness::Ready);
        assert!(health.begin_draining("SIGTERM"));
        assert!(!health.begin_draining("SIGINT"), "the first signal counts");
        assert_eq!(health.ready(true, true), Readiness::Draining("SIGTERM"));
        // A clone shares the state (the routes and the signal task).
        assert_eq!(
            health.clone().ready(true, true),
            Readiness::Draining("SIGTERM")
        );
    }
}
