//! The state of one plugin call: WASI, outbound HTTP, the memory and
//! table limiter, the log budget, and the host's `log` and `config`
//! imports.

use super::bindings::triggerfish::host::{config, log};
use super::outbound::{Outbound, OutboundHooks};
use super::scheduler::Turn;
use crate::limits::Limits;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Bytes of a plugin's stderr kept to explain a trap (a Rust panic message).
const STDERR_KEPT: usize = 4 * 1024;

/// The configuration values a plugin reads through its `config` import.
pub type PluginConfig = BTreeMap<String, String>;

/// Log bytes left for one invocation, shared by the plugins of its chain.
#[derive(Debug)]
pub struct LogBudget {
    left: AtomicU64,
    truncated: AtomicBool,
}

impl LogBudget {
    pub fn new(bytes: u64) -> Arc<LogBudget> {
        Arc::new(LogBudget {
            left: AtomicU64::new(bytes),
            truncated: AtomicBool::new(false),
        })
    }

    /// Takes `bytes` from the budget; false when there is not enough left.
    fn take(&self, bytes: u64) -> bool {
        self.left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(bytes)
            })
            .is_ok()
    }
}

/// The log lines of one invocation (every plugin of its chain, every
/// attempt), for the caller who asks for them (Lambda's `X-Amz-Log-Type:
/// Tail`): one per invocation, never shared between invocations, keeping
/// only the last `capacity` bytes. Lines reach it only within the
/// invocation's log budget.
#[derive(Debug)]
pub struct LogTail {
    capacity: usize,
    text: Mutex<String>,
}

impl LogTail {
    /// What Lambda returns in `X-Amz-Log-Result`: the last 4 KB.
    pub const LAMBDA_BYTES: usize = 4 * 1024;

    pub fn new(capacity: usize) -> Arc<LogTail> {
        Arc::new(LogTail {
            capacity,
            text: Mutex::new(String::new()),
        })
    }

    /// Adds one line: `<UTC time>\t<LEVEL>\t<plugin>\t<message>`, its
    /// control characters escaped so it stays one line.
    pub fn push(&self, level: &str, plugin: &str, message: &str) {
        let message = escape_log_line(message);
        let mut text = self.text.lock().unwrap_or_else(|e| e.into_inner());
        let at = utc_timestamp(SystemTime::now());
        text.push_str(&format!("{at}\t{level}\t{plugin}\t{message}\n"));
        // Trimmed now and then, not on every line: at most twice the
        // capacity is ever held.
        if text.len() > 2 * self.capacity.max(1) {
            let cut = tail_start(&text, self.capacity);
            text.drain(..cut);
        }
    }

    /// The last `capacity` bytes of the lines (cut at a character
    /// boundary, so possibly a few bytes fewer).
    pub fn text(&self) -> String {
        let text = self.text.lock().unwrap_or_else(|e| e.into_inner());
        text[tail_start(&text, self.capacity)..].to_owned()
    }
}

/// Where the last `bytes` bytes of `text` start, moved forward to a
/// character boundary.
fn tail_start(text: &str, bytes: usize) -> usize {
    let mut start = text.len().saturating_sub(bytes);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    start
}

/// `2026-11-23T23:59:01.123Z`.
fn utc_timestamp(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    crate::encoding::iso8601_millis(since.as_millis() as u64)
}

/// The state of one plugin call: a fresh one per call, dropped with it.
pub struct CallState {
    /// Built when the plugin first calls a WASI import: most calls never
    /// do, and building one seeds two random number generators.
    wasi: Option<WasiCtx>,
    http: WasiHttpCtx,
    outbound: OutboundHooks,
    table: ResourceTable,
    /// The stderr the WASI context writes to, made with it.
    stderr: Option<MemoryOutputPipe>,
    limiter: CallLimiter,
    config: Arc<PluginConfig>,
    log_budget: Arc<LogBudget>,
    /// Where this call's log lines are also kept for the caller, under
    /// the plugin's name.
    log_tail: Option<(Arc<LogTail>, String)>,
    /// The call's claim on CPU turns, for the epoch callback; none for a
    /// load-time probe.
    pub(crate) turn: Option<Turn>,
}

impl CallState {
    pub fn new(
        limits: &Limits,
        config: Arc<PluginConfig>,
        outbound: Arc<Outbound>,
        log_budget: Arc<LogBudget>,
    ) -> CallState {
        CallState {
            wasi: None,
            http: WasiHttpCtx::new(),
            outbound: OutboundHooks { policy: outbound },
            table: ResourceTable::new(),
            stderr: None,
            limiter: CallLimiter {
                memory_bytes: limits.memory_bytes,
                table_elements: limits.table_elements,
                memory_refused: false,
            },
            config,
            log_budget,
            log_tail: None,
            turn: None,
        }
    }

    /// Keeps this call's log lines in `tail` too, under `plugin`'s name.
    pub fn capture_logs(&mut self, tail: Arc<LogTail>, plugin: &str) {
        self.log_tail = Some((tail, plugin.to_owned()));
    }

    pub(crate) fn limiter(&mut self) -> &mut CallLimiter {
        &mut self.limiter
    }

    /// Holds the call to at most `bytes` of memory: the engine's pool
    /// ceiling, when it is below the plugin's own limit.
    pub(crate) fn cap_memory(&mut self, bytes: u64) {
        self.limiter.memory_bytes = self.limiter.memory_bytes.min(bytes);
    }

    /// The most memory this call may have.
    pub(crate) fn memory_limit(&self) -> u64 {
        self.limiter.memory_bytes
    }

    /// Whether this call asked for more memory than its limit allows.
    pub(crate) fn limiter_memory_refused(&self) -> bool {
        self.limiter.memory_refused
    }

    /// The last line the plugin wrote to stderr (a Rust panic message ends
    /// up there), if any.
    pub fn last_stderr_line(&self) -> Option<String> {
        let contents = self.stderr.as_ref()?.contents();
        let text = String::from_utf8_lossy(&contents);
        text.lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty() && !l.starts_with("note:"))
            .map(str::to_owned)
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let stderr = &mut self.stderr;
        let ctx = self.wasi.get_or_insert_with(|| {
            let pipe = MemoryOutputPipe::new(STDERR_KEPT);
            *stderr = Some(pipe.clone());
            // No preopened directories, no environment, no arguments, no
            // network: a plugin sees only what the contract gives it.
            WasiCtx::builder().stderr(pipe).build()
        });
        WasiCtxView {
            ctx,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// Holds one instance to its tenant's memory and table limits, and
/// remembers a refused memory growth so a trap that follows is reported as
/// `out-of-memory` rather than a plain trap.
pub struct CallLimiter {
    memory_bytes: u64,
    table_elements: usize,
    pub(crate) memory_refused: bool,
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // `maximum` is the memory's declared maximum: past it the growth
        // fails whatever this says, and is out-of-memory all the same.
        let allowed =
            desired as u64 <= self.memory_bytes && maximum.is_none_or(|max| desired <= max);
        if !allowed {
            self.memory_refused = true;
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_elements)
    }
}

/// What every log line costs against the log budget on top of its bytes,
/// so a flood of empty lines is bounded like a flood of long ones.
pub const LOG_BYTES_PER_LINE: u64 = 64;

/// The message with every control character (newlines among them) and
/// Unicode line separator escaped, so one call writes exactly one log
/// line and cannot forge another tenant's.
fn escape_log_line(message: &str) -> std::borrow::Cow<'_, str> {
    let needs_escape = |c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}');
    if !message.chars().any(needs_escape) {
        return std::borrow::Cow::Borrowed(message);
    }
    let mut escaped = String::with_capacity(message.len() + 8);
    for c in message.chars() {
        if needs_escape(c) {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    std::borrow::Cow::Owned(escaped)
}

impl log::Host for CallState {
    fn write(&mut self, level: log::Level, message: String) {
        let cost = (message.len() as u64).saturating_add(LOG_BYTES_PER_LINE);
        if !self.log_budget.take(cost) {
            if !self.log_budget.truncated.swap(true, Ordering::Relaxed) {
                tracing::warn!(target: "plugin", "log budget of this invocation used up; further plugin log lines are dropped");
                if let Some((tail, plugin)) = &self.log_tail {
                    tail.push("WARN", plugin, "log budget of this invocation used up ([limits] log-kib); further lines are dropped");
                }
            }
            return;
        }
        let message = escape_log_line(&message);
        if let Some((tail, plugin)) = &self.log_tail {
            let level = match level {
                log::Level::Trace => "TRACE",
                log::Level::Debug => "DEBUG",
                log::Level::Info => "INFO",
                log::Level::Warn => "WARN",
                log::Level::Error => "ERROR",
            };
            tail.push(level, plugin, &message);
        }
        // The call's span carries tenant, plugin and trigger.
        match level {
            log::Level::Trace => tracing::trace!(target: "plugin", "{message}"),
            log::Level::Debug => tracing::debug!(target: "plugin", "{message}"),
            log::Level::Info => tracing::info!(target: "plugin", "{message}"),
            log::Level::Warn => tracing::warn!(target: "plugin", "{message}"),
            log::Level::Error => tracing::error!(target: "plugin", "{message}"),
        }
    }
}

impl config::Host for CallState {
    fn get(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }

    fn keys(&mut self) -> Vec<String> {
        self.config.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc() {
        let at = |secs| utc_timestamp(UNIX_EPOCH + std::time::Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(1_700_000_000), "2023-11-14T22:13:20.000Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn a_log_tail_keeps_the_last_bytes() {
        let tail = LogTail::new(100);
        for i in 0..1000 {
            tail.push("INFO", "10-a", &format!("line {i} é"));
        }
        let text = tail.text();
        assert!(text.len() <= 100 && text.len() > 90, "{}", text.len());
        assert!(text.ends_with("10-a\tline 999 é\n"), "{text}");
        assert!(tail.text.lock().unwrap().len() <= 200 + 64);
    }

    #[test]
    fn log_lines_cannot_break_in_two() {
        assert_eq!(escape_log_line("plain é"), "plain é");
        assert_eq!(
            escape_log_line("ok\n2026-11-23 INFO tenant=other forged\r\u{1b}[31m\u{2028}"),
            "ok\\n2026-11-23 INFO tenant=other forged\\r\\u{1b}[31m\\u{2028}"
        );
    }
}
