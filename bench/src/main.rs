//! Triggerfish's benchmarks. `cargo xtask bench` builds this (and the host)
//! in release mode and runs `triggerfish-bench report`, which writes
//! `BENCHMARKS.md`. Every comparison is measured in the same run, on the
//! same machine, and reported as medians (with min and max) and ratios.
//!
//! - `report [--out FILE] [--seconds N] [--only SECTION,...]`: everything,
//!   or only the named sections (calls, fairness, reload, restart, memory,
//!   http, sync, hosts, spread, streams), printed rather than written
//!   unless `--out` is given.
//! - `native-server ADDR`: the native axum baseline, for the HTTP figures.
//! - `memory TENANTS`: resident memory with that many tenants (run in a
//!   process of its own by `report`).
//! - `spin CHAIN_LENGTH [EVENT.json]`: run that chain in a loop for 10 s,
//!   on the bench's PreSignUp event or the one in the file, to profile
//!   (`perf record -g target/release/triggerfish-bench spin 1`) or to
//!   see what an event's shape costs.

// The same allocator as the `triggerfish` binary, so in-process figures
// match what the server does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod calls;
mod fairness;
mod fixtures;
mod harness;
mod hosts;
mod http;
mod lifecycle;
mod native;
mod rig;
mod sections;
mod spread;
mod streams;
mod sync;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("report") => sections::report(&args[1..]),
        Some("native-server") => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(native::serve(args.get(1).map_or("127.0.0.1:8092", String::as_str)))),
        Some("memory") => lifecycle::memory_child(args.get(1).and_then(|n| n.parse().ok()).unwrap_or(1000)),
        Some("spin") => calls::spin(
            args.get(1).and_then(|n| n.parse().ok()).unwrap_or(3),
            args.get(2).map(std::path::Path::new),
        ),
        _ => Err(anyhow::anyhow!(
            "usage: triggerfish-bench report [--out FILE] [--seconds N] [--only SECTION,...] | spin CHAIN_LENGTH [EVENT.json] | native-server ADDR | memory TENANTS"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("triggerfish-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
