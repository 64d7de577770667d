//! One connection: its phase, the deadline of that phase, and the stream
//! that moves it from phase to phase.

use super::caps::Registry;
use super::service::ApiService;
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    Headers,
    InFlight,
    Sending,
    Idle,
}

pub(super) struct PhaseState {
    pub(super) phase: Phase,
    pub(super) deadline: Option<Instant>,
    /// Requests started on this connection.
    pub(super) requests: u64,
}

impl PhaseState {
    /// Sets the deadline; says whether it is sooner than the one the
    /// connection's task may be sleeping until. (A later one needs no
    /// wake-up: the task wakes at the old one, finds it has moved, and
    /// sleeps again; that saves waking it on every request.)
    pub(super) fn set_deadline(&mut self, deadline: Option<Instant>) -> bool {
        let sooner = match (self.deadline, deadline) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(old), Some(new)) => new < old,
        };
        self.deadline = deadline;
        sooner
    }
}

/// One accepted connection: its slot, its phase and the clock of it.
pub(super) struct Connection {
    pub(super) registry: Arc<Registry>,
    pub(super) peer: SocketAddr,
    pub(super) client: IpAddr,
    pub(super) state: Mutex<PhaseState>,
    /// A fast check for the reader, which looks on every read.
    pub(super) idle: AtomicBool,
    /// Closed to make room (its slot already given back).
    pub(super) evicted: AtomicBool,
    /// Wakes the connection's task to look at its deadline again.
    pub(super) changed: Notify,
}

impl Connection {
    pub(super) fn new(registry: Arc<Registry>, peer: SocketAddr, client: IpAddr) -> Arc<Self> {
        let deadline = Instant::now() + registry.limits.header_timeout;
        Arc::new(Connection {
            registry,
            peer,
            client,
            state: Mutex::new(PhaseState {
                phase: Phase::Headers,
                deadline: Some(deadline),
                requests: 0,
            }),
            idle: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            changed: Notify::new(),
        })
    }

    pub(super) fn enter(self: &Arc<Self>, phase: Phase) {
        let limits = &self.registry.limits;
        let now = Instant::now();
        let (idle_since, sooner) = {
            let mut state = self.state.lock().unwrap();
            if phase == Phase::InFlight {
                state.requests += 1;
            }
            state.phase = phase;
            let sooner = state.set_deadline(match phase {
                Phase::Headers => Some(now + limits.header_timeout),
                Phase::InFlight => None,
                Phase::Sending => Some(now + limits.body_timeout),
                Phase::Idle => Some(now + limits.idle_timeout),
            });
            self.idle.store(phase == Phase::Idle, Ordering::Relaxed);
            ((phase == Phase::Idle).then_some(state.requests), sooner)
        };
        if let Some(requests) = idle_since {
            self.registry.push_waiting(self, requests);
        }
        if sooner {
            self.changed.notify_one();
        }
    }

    /// Bytes arrived: an idle connection starts the clock of its headers.
    pub(super) fn on_read(&self) {
        if !self.idle.load(Ordering::Relaxed) {
            return;
        }
        let mut state = self.state.lock().unwrap();
        if state.phase == Phase::Idle {
            state.phase = Phase::Headers;
            let sooner =
                state.set_deadline(Some(Instant::now() + self.registry.limits.header_timeout));
            self.idle.store(false, Ordering::Relaxed);
            drop(state);
            if sooner {
                self.changed.notify_one();
            }
        }
    }

    /// Whether the connection has had no request in flight since its
    /// `requests`-th one (it may be idle or receiving headers).
    pub(super) fn is_waiting_since(&self, requests: u64) -> bool {
        let state = self.state.lock().unwrap();
        state.requests == requests
            && matches!(state.phase, Phase::Idle | Phase::Headers)
            && !self.evicted.load(Ordering::Relaxed)
    }

    /// Gives the slot back now and tells the task to close the connection.
    pub(super) fn evict(&self) {
        if !self.evicted.swap(true, Ordering::Relaxed) {
            self.registry.release(self.client);
            self.changed.notify_one();
        }
    }

    /// The phase whose deadline has passed, if any.
    pub(super) fn expired(&self) -> Option<Phase> {
        let state = self.state.lock().unwrap();
        state
            .deadline
            .is_some_and(|at| at <= Instant::now())
            .then_some(state.phase)
    }

    pub(super) async fn run(
        self: Arc<Self>,
        stream: TcpStream,
        router: TowerToHyperService<Router>,
        mut stopped: watch::Receiver<bool>,
    ) {
        // Answers are written whole; Nagle would only hold them back.
        let _ = stream.set_nodelay(true);
        let _slot = SlotGuard(self.clone());
        let io = TokioIo::new(WatchedStream {
            stream,
            connection: self.clone(),
        });
        let service = ApiService {
            router,
            connection: self.clone(),
        };
        // No timer is given to hyper: its header timeout would also run
        // while a keep-alive connection is idle. The clocks are ours.
        let http = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
        let mut http = pin!(http);
        let mut draining = false;
        loop {
            if self.evicted.load(Ordering::Relaxed) {
                break;
            }
            let deadline = self.state.lock().unwrap().deadline;
            tokio::select! {
                result = http.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(peer = %self.peer, %error, "connection ended with an error");
                    }
                    break;
                }
                () = self.changed.notified() => {}
                () = sleep_until(deadline) => {
                    if let Some(phase) = self.expired() {
                        tracing::debug!(peer = %self.peer, ?phase, "connection closed: past its deadline");
                        break;
                    }
                }
                _ = stopped.changed(), if !draining => {
                    draining = true;
                    http.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Gives a connection's slot back when its task ends, however it ends
/// (closed, past a deadline, aborted at shutdown, or panicked).
pub(super) struct SlotGuard(Arc<Connection>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        // An evicted connection has given its slot back already.
        if !self.0.evicted.swap(true, Ordering::Relaxed) {
            self.0.registry.release(self.0.client);
        }
    }
}

pub(super) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The client's socket, telling its connection when bytes arrive.
pub(super) struct WatchedStream {
    pub(super) stream: TcpStream,
    pub(super) connection: Arc<Connection>,
}

impl AsyncRead for WatchedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.connection.on_read();
        }
        result
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
