//! Triggerfish: Cognito-style identity and data lifecycle triggers, run as
//! sandboxed WebAssembly components.
//!
//! The route of an event (see ARCHITECTURE.md): a [`sources`] (the HTTP
//! API, the `invoke` command) hands it to the [`dispatch::Dispatcher`],
//! which routes it by the [`trigger`] table, runs the tenant's chain
//! ([`dispatch::chain`]) with the event shaped by its [`families`] family,
//! one plugin call at a time ([`dispatch::call`]) on the [`engine`], and
//! gives the outcome to its sinks. Tenants, their settings and their
//! plugins are kept by [`tenant`] and [`plugin`].

pub mod auth;
pub mod client;
pub mod cognito;
pub mod dispatch;
pub mod encoding;
pub mod engine;
pub mod families;
pub mod limits;
pub mod ops;
pub mod plugin;
pub mod sources;
pub mod streams;
pub mod tenant;
pub mod trigger;
