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

use axum::extract::ConnectInfo;
use axum::Router;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::{Body as HttpBody, Bytes, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};

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
struct Throttle {
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

/// The key a client's connections are counted under: its IPv4 address, or
/// the /64 prefix of its IPv6 address.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(Ipv6Addr::from(segments))
            }
        },
    }
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug)]
enum Refusal {
    PerClient,
    Total,
}

impl Refusal {
    /// The whole answer: status line, headers and the API's error body.
    fn response(self) -> Vec<u8> {
        let message = match self {
            Refusal::PerClient => "this client address has too many connections open at once",
            Refusal::Total => "the server has too many requests in flight at once",
        };
        let body =
            serde_json::json!({"error": {"kind": "too-many-connections", "message": message}})
                .to_string();
        format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
             connection: close\r\nretry-after: 1\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

/// Who holds how many connections, and which may be closed to make room.
struct Registry {
    limits: ServerLimits,
    slots: Mutex<Slots>,
    refused: Throttle,
    refused_per_client: AtomicU64,
    refused_total: AtomicU64,
    evicted: AtomicU64,
}

#[derive(Default)]
struct Slots {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
    /// Connections with no request in flight, oldest first, each with the
    /// request count it had then; an entry is stale once that changed.
    waiting: VecDeque<(Weak<Connection>, u64)>,
}

impl Registry {
    fn new(limits: ServerLimits) -> Self {
        Registry {
            limits,
            slots: Mutex::default(),
            refused: Throttle::default(),
            refused_per_client: AtomicU64::new(0),
            refused_total: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        }
    }

    /// Takes a slot for a new connection, or refuses it (answering `503`
    /// and closing it at once).
    fn admit(
        self: &Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> Option<(Arc<Connection>, TcpStream)> {
        let client = client_key(peer.ip());
        // Each round closes one waiting connection; a few rounds at most,
        // in case a victim started a request meanwhile.
        for _ in 0..4 {
            let victim = {
                let mut slots = self.slots.lock().unwrap();
                let held = slots.per_client.get(&client).copied().unwrap_or(0);
                if held >= self.limits.max_connections_per_client {
                    drop(slots);
                    self.refuse(stream, peer, Refusal::PerClient);
                    return None;
                }
                if slots.total < self.limits.max_connections {
                    slots.total += 1;
                    *slots.per_client.entry(client).or_default() += 1;
                    drop(slots);
                    let connection = Connection::new(self.clone(), peer, client);
                    self.push_waiting(&connection, 0);
                    return Some((connection, stream));
                }
                slots.oldest_waiting()
            };
            match victim {
                Some(victim) => {
                    self.evicted.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(peer = %victim.peer, "at the connection cap: closing the longest-waiting connection");
                    victim.evict();
                }
                None => break,
            }
        }
        self.refuse(stream, peer, Refusal::Total);
        None
    }

    fn refuse(&self, stream: TcpStream, peer: SocketAddr, why: Refusal) {
        let (counter, cap, limit) = match why {
            Refusal::PerClient => (
                &self.refused_per_client,
                "--max-connections-per-client",
                self.limits.max_connections_per_client,
            ),
            Refusal::Total => (
                &self.refused_total,
                "--max-connections",
                self.limits.max_connections,
            ),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(suppressed) = self.refused.hit() {
            tracing::warn!(
                %peer,
                cap,
                limit,
                suppressed,
                refused_per_client = self.refused_per_client.load(Ordering::Relaxed),
                refused_total = self.refused_total.load(Ordering::Relaxed),
                evicted = self.evicted.load(Ordering::Relaxed),
                "connection refused: over the cap"
            );
        }
        // Best effort and never waiting: the answer fits the socket buffer,
        // and reading what the client already sent makes the close a FIN
        // rather than a reset that could discard the answer.
        let _ = stream.try_write(&why.response());
        let _ = stream.try_read(&mut [0; 2048]);
    }

    fn release(&self, client: IpAddr) {
        let mut slots = self.slots.lock().unwrap();
        slots.total -= 1;
        if let Some(held) = slots.per_client.get_mut(&client) {
            *held -= 1;
            if *held == 0 {
                slots.per_client.remove(&client);
            }
        }
    }

    /// Notes that `connection` has no request in flight since its
    /// `requests`-th request.
    fn push_waiting(&self, connection: &Arc<Connection>, requests: u64) {
        let mut slots = self.slots.lock().unwrap();
        // Stale entries pile up while nothing is evicted: sweep them when
        // the queue is much longer than the number of connections.
        if slots.waiting.len() > 2 * slots.total + 1024 {
            slots
                .waiting
                .retain(|(c, n)| c.upgrade().is_some_and(|c| c.is_waiting_since(*n)));
        }
        slots
            .waiting
            .push_back((Arc::downgrade(connection), requests));
    }
}

impl Slots {
    fn oldest_waiting(&mut self) -> Option<Arc<Connection>> {
        while let Some((connection, requests)) = self.waiting.pop_front() {
            if let Some(connection) = connection.upgrade() {
                if connection.is_waiting_since(requests) {
                    return Some(connection);
                }
            }
        }
        None
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Headers,
    InFlight,
    Sending,
    Idle,
}

struct PhaseState {
    phase: Phase,
    deadline: Option<Instant>,
    /// Requests started on this connection.
    requests: u64,
}

impl PhaseState {
    /// Sets the deadline; says whether it is sooner than the one the
    /// connection's task may be sleeping until. (A later one needs no
    /// wake-up: the task wakes at the old one, finds it has moved, and
    /// sleeps again; that saves waking it on every request.)
    fn set_deadline(&mut self, deadline: Option<Instant>) -> bool {
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
struct Connection {
    registry: Arc<Registry>,
    peer: SocketAddr,
    client: IpAddr,
    state: Mutex<PhaseState>,
    /// A fast check for the reader, which looks on every read.
    idle: AtomicBool,
    /// Closed to make room (its slot already given back).
    evicted: AtomicBool,
    /// Wakes the connection's task to look at its deadline again.
    changed: Notify,
}

impl Connection {
    fn new(registry: Arc<Registry>, peer: SocketAddr, client: IpAddr) -> Arc<Self> {
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

    fn enter(self: &Arc<Self>, phase: Phase) {
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
    fn on_read(&self) {
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
    fn is_waiting_since(&self, requests: u64) -> bool {
        let state = self.state.lock().unwrap();
        state.requests == requests
            && matches!(state.phase, Phase::Idle | Phase::Headers)
            && !self.evicted.load(Ordering::Relaxed)
    }

    /// Gives the slot back now and tells the task to close the connection.
    fn evict(&self) {
        if !self.evicted.swap(true, Ordering::Relaxed) {
            self.registry.release(self.client);
            self.changed.notify_one();
        }
    }

    /// The phase whose deadline has passed, if any.
    fn expired(&self) -> Option<Phase> {
        let state = self.state.lock().unwrap();
        state
            .deadline
            .is_some_and(|at| at <= Instant::now())
            .then_some(state.phase)
    }

    async fn run(
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
struct SlotGuard(Arc<Connection>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        // An evicted connection has given its slot back already.
        if !self.0.evicted.swap(true, Ordering::Relaxed) {
            self.0.registry.release(self.0.client);
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The client's socket, telling its connection when bytes arrive.
struct WatchedStream {
    stream: TcpStream,
    connection: Arc<Connection>,
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

/// The router as one connection sees it: moves the connection through its
/// phases and puts the body under its clock.
#[derive(Clone)]
struct ApiService {
    router: TowerToHyperService<Router>,
    connection: Arc<Connection>,
}

type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<SentBody>, Infallible>> + Send>>;

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

fn request_timeout(limit: Duration) -> axum::response::Response {
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
struct BodyTimeout;

/// A request body that must be whole by its deadline.
struct TimedBody {
    inner: Incoming,
    deadline: Instant,
    /// Made at the first wait: most bodies arrive with their headers.
    sleep: Option<Pin<Box<Sleep>>>,
    timed_out: Arc<AtomicBool>,
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
struct SentBody {
    inner: axum::body::Body,
    connection: Option<Arc<Connection>>,
}

impl SentBody {
    fn done(&mut self) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_counted_by_address_and_ipv6_by_prefix() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(client_key(v4), v4);
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), v4);
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(other));
    }

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

    #[test]
    fn the_refusals_declare_their_length() {
        for why in [Refusal::PerClient, Refusal::Total] {
            let response = why.response();
            let text = std::str::from_utf8(&response).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(
                head.contains(&format!("content-length: {}", body.len())),
                "{text}"
            );
            let json: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(json["error"]["kind"], "too-many-connections");
        }
    }
}
