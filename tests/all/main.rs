//! Integration tests: real guest components through the real host.
//!
//! The guests (example plugins and test guests) are built for
//! wasm32-wasip2 by `triggerfish-test-support`'s build script.

mod budget;
mod chain;
mod common;
mod http_api;
mod lambda;
mod plugins;
mod routing;
mod sync;
mod template;
