//! The HTTP server: accepts connections and serves the API router on them,
//! under limits a hostile client cannot get around.
//!
//! Every connection is HTTP/1.1 and lives in one of four phases, each with
//! its own clock ([`ServerLimits`]):
//!
//! | phase | starts when | ends when | past its deadline |
//! |---|---|---|---|
//! | headers | the connection is accepted, or the first byte of a request arrives | the headers are complete | the connection is closed |
//! | in flight | the headers are complete | the handler answers | (the body has its own clock: `408`) |
//! | sending | the handler answers | the response is written | the connection is closed |
//! | idle | the response is written | a byte of the next request arrives | the connection is closed |
//!
//! The body clock starts with the handler: a body not whole within the
//! body timeout ends the request with `408 request-timeout` (and the
//! connection with it).
//!
//! Connections are capped in total and per client address (IPv6 clients
//! by their /64, where one host usually holds a whole prefix). Past the
//! per-client cap a new connection is answered `503` and closed at once.
//! At the total cap the connection that has waited longest without a
//! request in flight (idle, or still sending its headers) is closed to
//! make room; if every connection has a request in flight, the new one is
//! answered `503` and closed. Accepting and closing keeps the listen
//! backlog moving, so the kernel never leaves other clients waiting in it.
mod caps;
mod connection;
mod service;

use axum::Router;
use caps::Registry;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// File descriptors kept free below `RLIMIT_NOFILE` for everything that
/// is not a client connection: plugin files and the compile cache being
/// read, outbound requests of plugins, the watcher, logs. At most half the
/// limit, so a low limit still leaves room for some clients.
pub const FD_RESERVE: u64 = 1024;

/// The limits of the HTTP server. [`Default`] gives the documented values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Time to receive a request's headers, counted from the accept (for
    /// the first request of a connection) or from the request's first byte.
    /// Past it the connection is closed. Default 10 s.
    pub header_timeout: Duration,
    /// Time for the whole request body to arrive, counted from the end of
    /// the headers; past it the request ends with `408 request-timeout` and
    /// the connection is closed. It also bounds sending the response: a
    /// client that does not read its answer within it is disconnected.
    /// Default 30 s.
    pub body_timeout: Duration,
    /// Time a keep-alive connection may wait, with no request in flight,
    /// for the first byte of its next request. Default 60 s.
    pub idle_timeout: Duration,
    /// Connections open at once, all clients together. Clamped at start to
    /// the file-descriptor limit less [`FD_RESERVE`]. Default 10,000.
    pub max_connections: usize,
    /// Connections open at once from one client address (IPv4 address, or
    /// IPv6 /64 prefix). Default 512.
    pub max_connections_per_client: usize,
    /// On shutdown, how long requests in flight may take to finish before
    /// their connections are dropped. Default 20 s (a chain's budget is 5 s
    /// per attempt).
    pub shutdown_grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_connections_per_client: 512,
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

impl ServerLimits {
    /// Clamps the connection caps so that every connection can have its
    /// descriptor with [`FD_RESERVE`] to spare, and the per-client cap to
    /// the total; logs each change.
    fn fit(mut self, fd_limit: u64) -> Self {
        let room = fd_limit.saturating_sub(FD_RESERVE.min(fd_limit / 2)).max(1);
        let room = usize::try_from(room).unwrap_or(usize::MAX);
        if self.max_connections > room {
            tracing::warn!(
                configured = self.max_connections,
                fd_limit,
                max_connections = room,
                "--max-connections does not fit the file-descriptor limit; lowered"
            );
            self.max_connections = room;
        }
        self.max_connections = self.max_connections.max(1);
        self.max_connections_per_client = self
            .max_connections_per_client
            .clamp(1, self.max_connections);
        self
    }
}

/// The listen backlog [`bind`] asks for (the kernel caps it at
/// `net.core.somaxconn`). The standard library's 128 overflows under a
/// burst of connections, and an overflowing backlog drops connection
/// attempts of every client alike.
pub const LISTEN_BACKLOG: u32 = 1024;

/// Binds a listener for [`serve`] with a backlog of [`LISTEN_BACKLOG`].
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // As the standard library does: a restarted host can listen again
    // while connections of the previous one are in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit and
/// returns the resulting soft limit (the old one if it cannot be raised).
pub fn raise_fd_limit() -> io::Result<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    // `None` is "unlimited".
    let current = limit.current.unwrap_or(u64::MAX);
    let maximum = limit.maximum.unwrap_or(u64::MAX);
    if maximum > current {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        setrlimit(Resource::Nofile, raised).map_err(io::Error::from)?;
    }
    Ok(getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX))
}

/// Serves `router` on `listener` under `limits` until `shutdown` completes;
/// then stops accepting and lets requests in flight finish, for at most
/// [`ServerLimits::shutdown_grace`].
///
/// Raises the file-descriptor limit first ([`raise_fd_limit`]) and fits
/// the connection caps below it. Errors of `accept` (out of descriptors,
/// of memory) are logged at most once a second and retried after a short
/// pause; they never end the server.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let fd_limit = match raise_fd_limit() {
        Ok(limit) => limit,
        Err(error) => {
            let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
                .current
                .unwrap_or(u64::MAX);
            tracing::warn!(%error, fd_limit = limit, "cannot raise the file-descriptor limit");
            limit
        }
    };
    let limits = limits.fit(fd_limit);
    tracing::info!(
        fd_limit,
        max_connections = limits.max_connections,
        max_connections_per_client = limits.max_connections_per_client,
        header_timeout_ms = limits.header_timeout.as_millis() as u64,
        body_timeout_ms = limits.body_timeout.as_millis() as u64,
        idle_timeout_ms = limits.idle_timeout.as_millis() as u64,
        "connection limits"
    );
    let registry = Arc::new(Registry::new(limits));
    let service = TowerToHyperService::new(router);
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let accept_errors = Throttle::default();
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            // Reap finished connections, so the set holds only live ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    if let Some((connection, stream)) = registry.admit(stream, peer) {
                        connections.spawn(connection.run(stream, service.clone(), stopped.clone()));
                    }
                }
                // The client gave up before we accepted: nothing to do.
                Err(error) if is_per_connection(&error) => {}
                Err(error) => {
                    // Out of descriptors or memory: the pending connection
                    // stays in the backlog, so pause instead of spinning.
                    if let Some(suppressed) = accept_errors.hit() {
                        tracing::error!(
                            %error,
                            suppressed,
                            retry_in_ms = backoff.as_millis() as u64,
                            "cannot accept connections"
                        );
                    }
                    tokio::select! {
                        biased;
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
            }
        }
    }
    drop(listener);
    let _ = stop.send(true);
    let grace = registry.limits.shutdown_grace;
    tracing::info!(
        connections = connections.len(),
        grace_ms = grace.as_millis() as u64,
        "shutting down: no new connections, finishing requests in flight"
    );
    let finished = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "requests still in flight at the end of the shutdown grace; dropped"
        );
    }
    Ok(())
}

const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(250);

/// Errors of `accept` that concern one connection, not the listener.
fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// At most one log line a second for a repeating event; counts the rest.
#[derive(Default)]
pub(super) struct Throttle {
    next: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl Throttle {
    /// `Some(events not logged since the last line)` when a line may be logged.
    fn hit(&self) -> Option<u64> {
        let now = Instant::now();
        let mut next = self.next.lock().unwrap();
        if next.is_some_and(|at| now < at) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *next = Some(now + Duration::from_secs(1));
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caps_fit_below_the_descriptor_limit() {
        let limits = ServerLimits::default().fit(65_536);
        assert_eq!(limits, ServerLimits::default());
        let limits = ServerLimits::default().fit(4096);
        assert_eq!(limits.max_connections, 4096 - FD_RESERVE as usize);
        assert_eq!(limits.max_connections_per_client, 512);
        let limits = ServerLimits::default().fit(600);
        assert_eq!(limits.max_connections, 300);
        assert_eq!(limits.max_connections_per_client, 300);
    }
}
