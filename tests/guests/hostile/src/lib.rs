//! Test guest: a PreSignUp plugin that misbehaves as the event's
//! `clientMetadata.mode` says (or, when the event does not say, config
//! `mode`), so the same plugin can be made to fail and then asked to
//! behave.

triggerfish_sdk::bindings!("../../../wit", "triggerfish:user-pool/pre-sign-up-plugin");

use exports::triggerfish::user_pool::pre_sign_up::{Context, Guest, Request, Response};
use std::hint::black_box;

struct Hostile;

/// Recursion that uses the WebAssembly stack itself (no locals in linear
/// memory), and that no optimisation turns into a loop: each level applies
/// an opaque function to the result of the next.
#[inline(never)]
fn recurse(depth: u64, step: fn(u64) -> u64) -> u64 {
    if depth == u64::MAX {
        return 0;
    }
    step(recurse(depth + 1, step))
}

fn flip(x: u64) -> u64 {
    x ^ 1
}

impl Guest for Hostile {
    fn handle(_: Context, request: Request, mut response: Response) -> Result<Response, String> {
        let mode = match triggerfish_sdk::attribute(&request.client_metadata, "mode") {
            Some(mode) => mode.to_owned(),
            None => triggerfish_sdk::config::require("mode")?,
        };
        match mode.as_str() {
            // Burns fuel as fast as it can.
            "spin" => {
                let mut n: u64 = 0;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            // Waits in the host, where fuel and epochs do not reach.
            "sleep" => loop {
                std::thread::sleep(std::time::Duration::from_millis(5));
            },
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    black_box(&hoard);
                }
            }
            "recurse" => Err(format!("{}", recurse(0, black_box(flip as fn(u64) -> u64)))),
            "panic" => panic!("the hostile plugin panicked on purpose"),
            "huge-output" => Err("x".repeat(8 << 20)),
            "log-flood" => {
                for i in 0..100_000 {
                    triggerfish_sdk::info!("flood line {i}");
                }
                Ok(response)
            }
            // A flood of empty lines, which cost nothing but their count.
            "empty-log-flood" => {
                for _ in 0..1_200_000 {
                    triggerfish_sdk::info!("");
                }
                Ok(response)
            }
            // A line that tries to end itself and forge the next one.
            "log-inject" => {
                triggerfish_sdk::info!(
                    "innocent\n2026-11-23T00:00:00Z  INFO invoke{{tenant=victim}}: forged line"
                );
                Ok(response)
            }
            "read-env" => match std::env::var("HOME") {
                Ok(home) => Err(format!("read HOME={home}")),
                Err(_) => Ok(response),
            },
            "read-file" => match std::fs::read_to_string("/etc/passwd") {
                Ok(_) => Err("read /etc/passwd".into()),
                Err(_) => Ok(response),
            },
            // Calls a host import for ever.
            "host-calls" => loop {
                black_box(triggerfish_sdk::config::get("mode"));
            },
            // Counts calls in a global: a fresh instance per call always
            // answers 1.
            "count" => {
                static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let calls = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                Err(format!("call number {calls}"))
            }
            // Succeeds only as its instance's first call: a chain of these
            // passes only if every plugin of it gets an instance of its own.
            "first-call" => {
                static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                match CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1 {
                    1 => Ok(response),
                    calls => Err(format!("call number {calls}")),
                }
            }
            // Holds 10 MiB and succeeds.
            "hoard-10" => {
                black_box(vec![1u8; 10 << 20]);
                Ok(response)
            }
            "ok" => {
                response.auto_confirm_user = Some(true);
                Ok(response)
            }
            other => Err(format!("unknown mode {other}")),
        }
    }
}

export!(Hostile);
