//! One connection: its phase, the deadline of that phase, and the stream
//! that moves it from phase to phase.

use super::caps::Registry;
use super::service::ApiService;
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
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
    /// Wakes the connection's task when another task evicts it. (Phase
    /// changes need none: they happen in the connection's own task.)
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
        let idle_since = {
            let mut state = self.state.lock().unwrap();
            if phase == Phase::InFlight {
                state.requests += 1;
            }
            state.phase = phase;
            // No wake-up: this runs in the connection's task, whose clock
            // reads the new deadline when the task is next polled.
            state.deadline = match phase {
                Phase::Headers => Some(now + limits.header_timeout),
                Phase::InFlight => None,
                Phase::Sending => Some(now + limits.body_timeout),
                Phase::Idle => Some(now + limits.idle_timeout),
            };
            self.idle.store(phase == Phase::Idle, Ordering::Relaxed);
            (phase == Phase::Idle).then_some(state.requests)
        };
        if let Some(requests) = idle_since {
            self.registry.push_waiting(self, requests);
        }
    }

    /// Bytes arrived: an idle connection starts the clock of its headers.
    pub(super) fn on_read(&self) {
        if !self.idle.load(Ordering::Relaxed) {
            return;
        }
        let mut state = self.state.lock().unwrap();
        if state.phase == Phase::Idle {
            // Read by the connection's task (as in `enter`): no wake-up.
            state.phase = Phase::Headers;
            state.deadline = Some(Instant::now() + self.registry.limits.header_timeout);
            self.idle.store(false, Ordering::Relaxed);
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
        // One timer for the connection's life, moved to each new deadline.
        let mut clock = Clock::new();
        let mut draining = false;
        loop {
            if self.evicted.load(Ordering::Relaxed) {
                break;
            }
            tokio::select! {
                // In this order: serving a request moves the connection to
                // its next phase, and the clock reads the new deadline in
                // the same poll, with no wake-up of its own.
                biased;
                result = http.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(peer = %self.peer, %error, "connection ended with an error");
                    }
                    break;
                }
                () = self.changed.notified() => {}
                _ = stopped.changed(), if !draining => {
                    draining = true;
                    http.as_mut().graceful_shutdown();
                }
                () = clock.until(&self) => {
                    if let Some(phase) = self.expired() {
                        tracing::debug!(peer = %self.peer, ?phase, "connection closed: past its deadline");
                        break;
                    }
                }
            }
        }
    }
}

/// The connection's clock: one timer for the connection's life, which
/// follows the deadline of the current phase.
///
/// The phases change inside the connection's own task (hyper reads, calls
/// the service and writes the answer there), so reading the deadline at
/// every poll of the task follows every change without a wake-up; only an
/// eviction, from another task, needs `changed`. A sooner deadline moves
/// the timer; a later one (most changes: each phase's clock starts now)
/// leaves it, and when it fires at the earlier time it is moved on: a
/// busy keep-alive connection touches the timer about once per header
/// timeout, not on every request.
pub(super) struct Clock {
    sleep: Pin<Box<tokio::time::Sleep>>,
    armed: Option<Instant>,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            sleep: Box::pin(tokio::time::sleep_until(Instant::now())),
            armed: None,
        }
    }

    fn arm(&mut self, at: Instant) {
        self.sleep.as_mut().reset(at);
        self.armed = Some(at);
    }

    /// Completes once the deadline of the connection's phase has passed
    /// (never while the phase has none).
    fn until<'a>(&'a mut self, connection: &'a Connection) -> impl Future<Output = ()> + 'a {
        std::future::poll_fn(move |cx| {
            let Some(at) = connection.state.lock().unwrap().deadline else {
                return Poll::Pending;
            };
            if self.armed.is_none_or(|armed| at < armed) {
                self.arm(at);
            }
            loop {
                std::task::ready!(self.sleep.as_mut().poll(cx));
                if self.armed.is_some_and(|armed| at <= armed) {
                    return Poll::Ready(());
                }
                // It fired at an earlier deadline; the phase has moved on.
                self.arm(at);
            }
        })
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
