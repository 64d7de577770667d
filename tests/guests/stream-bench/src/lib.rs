//! Bench guest: the Kinesis handler of `cargo xtask bench --only streams`
//! (`bench/src/streams.rs`; `bench/node/stream-consumer.js` is the same
//! logic in Node.js).
//!
//! Each record's data begins with the time its producer sent it, in
//! microseconds since the Unix epoch, as decimal text (then anything). The
//! guest reads the WASI wall clock (the host's system clock, so the same
//! clock as the producer's on one machine) when its batch arrives, and
//! logs one line per batch: `stream-bench <µs>,<µs>,...`, each record's
//! time from its send to the handler. A record whose data has no such
//! time is counted as `-`.
//!
//! Config `wait-ms` (default 0): then waits that long per batch, as a
//! handler waiting for a database would (a sleep: it gives its CPU turn
//! away meanwhile).

use triggerfish_sdk::{config, info, kinesis};

struct Bench;

fn now_us() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

/// The send time at the start of `data`, if any.
fn sent_us(data: &[u8]) -> Option<u128> {
    let digits = data.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&data[..digits]).ok()?.parse().ok()
}

impl kinesis::Guest for Bench {
    fn handle(records: Vec<kinesis::KinesisRecord>) -> Result<Vec<String>, String> {
        let now = now_us();
        let mut line = String::with_capacity(8 * records.len() + 16);
        line.push_str("stream-bench ");
        for (i, record) in records.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            match sent_us(&record.kinesis.data) {
                Some(sent) => line.push_str(&now.saturating_sub(sent).to_string()),
                None => line.push('-'),
            }
        }
        info!("{line}");
        let wait: u64 = config::get("wait-ms")
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(0);
        if wait > 0 {
            std::thread::sleep(std::time::Duration::from_millis(wait));
        }
        Ok(Vec::new())
    }
}

triggerfish_sdk::export!(Bench: kinesis);
