//! Logging into the host's tracing.

pub use crate::bindings::host::triggerfish::host::log::Level;

/// Writes a line to the host's log, in the span of this call (tagged with
/// tenant, plugin and trigger). The host keeps a bounded number of bytes
/// per invocation (`log-kib`, 64 KiB by default) and drops lines past it.
///
/// Outside WebAssembly (a plugin's native unit tests) the line goes to
/// stderr and to [`testing::logs`](crate::testing::logs).
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::bindings::host::triggerfish::host::log::write(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::record_log(level, message);
}

/// Logs at trace level, `format!` style.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)*) => { $crate::log($crate::Level::Trace, &::std::format!($($arg)*)) };
}

/// Logs at debug level, `format!` style.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log($crate::Level::Debug, &::std::format!($($arg)*)) };
}

/// Logs at info level, `format!` style.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log($crate::Level::Info, &::std::format!($($arg)*)) };
}

/// Logs at warn level, `format!` style.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log($crate::Level::Warn, &::std::format!($($arg)*)) };
}

/// Logs at error level, `format!` style. Logging does not stop the chain:
/// return an error (see [`deny!`](crate::deny!)) for that.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log($crate::Level::Error, &::std::format!($($arg)*)) };
}
