//! Triggerfish: Cognito-style identity and data lifecycle triggers, run as
//! sandboxed WebAssembly components.
//!
//! An event arrives (HTTP or the `invoke` command), [`trigger::Trigger::route`]
//! finds its trigger, and [`chain`] runs the tenant's plugins serving that
//! trigger, in file-name order, under the tenant's [`limits`].

pub mod auth;
pub mod chain;
pub mod compile;
pub mod convert;
pub mod host;
pub mod http;
pub mod limits;
pub mod outbound;
pub mod plugin;
pub mod remembered;
pub mod runtime;
pub mod sigv4;
pub mod tenant;
pub mod trigger;
pub mod watch;
