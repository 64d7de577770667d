//! Timing: medians of batches, with min and max, and Markdown.

use std::future::Future;
use std::time::{Duration, Instant};

/// Median, min and max of per-call times over samples.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub median: Duration,
    pub min: Duration,
    pub max: Duration,
}

impl Stats {
    pub fn of(mut samples: Vec<Duration>) -> Stats {
        samples.sort();
        Stats {
            median: samples[samples.len() / 2],
            min: samples[0],
            max: samples[samples.len() - 1],
        }
    }

    /// `median (min–max)` in µs.
    pub fn cell(&self) -> String {
        format!("{} ({}–{})", us(self.median), us(self.min), us(self.max))
    }
}

pub fn us(d: Duration) -> String {
    let micros = d.as_secs_f64() * 1e6;
    if micros < 10.0 {
        format!("{micros:.2} µs")
    } else {
        format!("{micros:.1} µs")
    }
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Runs `call` `warmup` times, then `samples` batches of `batch` calls;
/// each sample is one batch's time per call. A call takes its input by
/// value, and a batch's inputs are made (`make`) before its clock starts:
/// what is timed is the call, not the copy of its input (a caller of the
/// dispatcher hands over the event it parsed; it does not copy one).
pub async fn per_call<T, M, F, Fut>(
    warmup: usize,
    samples: usize,
    batch: usize,
    make: M,
    mut call: F,
) -> Stats
where
    M: Fn() -> T,
    F: FnMut(T) -> Fut,
    Fut: Future<Output = ()>,
{
    for _ in 0..warmup {
        call(make()).await;
    }
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let inputs: Vec<T> = (0..batch).map(|_| make()).collect();
        let started = Instant::now();
        for input in inputs {
            call(input).await;
        }
        times.push(started.elapsed() / batch as u32);
    }
    Stats::of(times)
}

/// The ratio `a / b`, as `3.2×`.
pub fn ratio(a: Duration, b: Duration) -> String {
    format!("{:.1}×", a.as_secs_f64() / b.as_secs_f64())
}

/// A Markdown table.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!(
        "| {} |\n|{}\n",
        header.join(" | "),
        "---|".repeat(header.len())
    );
    for row in rows {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    out
}
