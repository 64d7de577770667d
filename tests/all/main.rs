//! Integration tests: real guest components through the real host.
//!
//! The guests (example plugins and test guests) are built for
//! wasm32-wasip2 by `triggerfish-test-support`'s build script.

mod bounded_work;
mod budget;
mod chain;
mod cli;
mod cluster;
mod cognito_durability;
mod cognito_streams;
mod common;
mod compile_limits;
mod deploy;
mod drain;
mod fairness;
mod fuzz;
mod hostile_files;
mod http_api;
mod http_limits;
mod lambda;
mod log_tail;
mod nats;
mod observe;
mod outbound;
mod plugins;
mod plugins_http;
mod python;
mod records;
mod reload;
mod routing;
mod status_page;
mod streams;
mod sync;
mod template;
mod tenancy;
mod trigger_table;
