//! The caps on connections: in total, and per client address.

use super::connection::Connection;
use super::{ServerLimits, Throttle};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use tokio::net::TcpStream;

/// The key a client's connections are counted under: its IPv4 address, or
/// the /64 prefix of its IPv6 address.
pub(super) fn client_key(ip: IpAddr) -> IpAddr {
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
pub(super) enum Refusal {
    PerClient,
    Total,
}

impl Refusal {
    /// The whole answer: status line, headers and the API's error body.
    pub(super) fn response(self) -> Vec<u8> {
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
pub(super) struct Registry {
    pub(super) limits: ServerLimits,
    pub(super) slots: Mutex<Slots>,
    pub(super) refused: Throttle,
    pub(super) refused_per_client: AtomicU64,
    pub(super) refused_total: AtomicU64,
    pub(super) evicted: AtomicU64,
}

#[derive(Default)]
pub(super) struct Slots {
    pub(super) total: usize,
    pub(super) per_client: HashMap<IpAddr, usize>,
    /// Connections with no request in flight, oldest first, each with the
    /// request count it had then; an entry is stale once that changed.
    pub(super) waiting: VecDeque<(Weak<Connection>, u64)>,
}

impl Registry {
    pub(super) fn new(limits: ServerLimits) -> Self {
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
    pub(super) fn admit(
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

    pub(super) fn refuse(&self, stream: TcpStream, peer: SocketAddr, why: Refusal) {
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

    pub(super) fn release(&self, client: IpAddr) {
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
    pub(super) fn push_waiting(&self, connection: &Arc<Connection>, requests: u64) {
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
    pub(super) fn oldest_waiting(&mut self) -> Option<Arc<Connection>> {
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
