//! Operating the host: what the operator (not a tenant) sees and uses.
//!
//! - [`metrics`]: Prometheus metrics, a [`Sink`] plus gauges read at
//!   scrape time (`GET /metrics`);
//! - [`recent`]: each tenant's recent outcomes and failures, a [`Sink`]
//!   for the status page;
//! - [`status`]: the status page's HTML (`GET /status`);
//! - [`session`]: the status page's login cookie;
//! - [`log_format`]: `serve --log-format json`.
//!
//! All of it is on only when `serve --admin-keys FILE` gives operator keys
//! ([`crate::auth::admin`]); without them the routes answer 404 and the
//! sinks are not registered.

pub mod log_format;
pub mod metrics;
pub mod recent;
pub mod scraped;
pub mod session;
pub mod status;

use crate::auth::admin::AdminKeys;
use crate::dispatch::Sink;
use crate::tenant::registry::Tenants;
use std::sync::Arc;

/// What the operator routes need: the keys, the metrics, the recent
/// history and the status page's sessions.
pub struct Admin {
    pub keys: AdminKeys,
    pub metrics: Arc<metrics::Metrics>,
    pub recent: Arc<recent::Recent>,
    pub sessions: session::Sessions,
    pub tenants: Arc<Tenants>,
    /// The streams, once `serve` has opened them: the status page shows
    /// each tenant's event sources.
    pub streams: std::sync::OnceLock<Arc<crate::streams::Streams>>,
}

impl Admin {
    /// The operator side of a host serving `tenants`. Register
    /// [`Admin::sinks`] with the dispatcher so the figures move.
    pub fn new(keys: AdminKeys, tenants: Arc<Tenants>) -> Admin {
        Admin {
            keys,
            metrics: Arc::new(metrics::Metrics::new(tenants.clone())),
            recent: Arc::new(recent::Recent::new()),
            sessions: session::Sessions::new(),
            tenants,
            streams: std::sync::OnceLock::new(),
        }
    }

    /// Shows `streams`' event sources on the status page.
    pub fn set_streams(&self, streams: Arc<crate::streams::Streams>) {
        let _ = self.streams.set(streams);
    }

    /// The sinks that feed the metrics and the status page.
    pub fn sinks(&self) -> [Arc<dyn Sink>; 2] {
        [self.metrics.clone(), self.recent.clone()]
    }
}
