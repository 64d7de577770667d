//! What can go wrong with an event: the kinds a chain stops on (part of
//! the API), a chain's error, and the errors of an event that never ran.

use crate::engine::convert::ConvertError;
use crate::trigger::{RouteError, Trigger};

/// What kind of failure stopped a chain. The names are part of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A plugin returned an error: the event is refused with its message.
    Denied,
    /// The chain ran past its wall-clock budget.
    ///
    /// Retried (up to the tenant's `attempts`) only when another attempt
    /// could pass: the host had no free instance slot, or the plugin call
    /// ran (held a CPU turn) for less than half the budget *and* no other
    /// call of the same tenant held or waited for a turn while it waited
    /// for one. A call that waited behind its own tenant's calls was
    /// slowed by its tenant's concurrency, and retrying it would only add
    /// to the load.
    Timeout,
    /// A plugin call used up its fuel.
    OutOfFuel,
    /// A plugin tried to grow its memory past its limit.
    OutOfMemory,
    /// A plugin trapped: panic, stack overflow, bad memory access and so on.
    Trap,
    /// A plugin returned something the host cannot send back (too large,
    /// or not representable as JSON).
    InvalidOutput,
    /// A plugin file of the tenant cannot be loaded, so its chain cannot
    /// run as configured.
    NoHandler,
}

impl ErrorKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Denied => "denied",
            ErrorKind::Timeout => "timeout",
            ErrorKind::OutOfFuel => "out-of-fuel",
            ErrorKind::OutOfMemory => "out-of-memory",
            ErrorKind::Trap => "trap",
            ErrorKind::InvalidOutput => "invalid-output",
            ErrorKind::NoHandler => "no-handler",
        }
    }

    /// The kind as an exception name, for Lambda's `errorType`.
    pub fn error_type(self) -> &'static str {
        match self {
            ErrorKind::Denied => "Denied",
            ErrorKind::Timeout => "Timeout",
            ErrorKind::OutOfFuel => "OutOfFuel",
            ErrorKind::OutOfMemory => "OutOfMemory",
            ErrorKind::Trap => "Trap",
            ErrorKind::InvalidOutput => "InvalidOutput",
            ErrorKind::NoHandler => "NoHandler",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A chain that stopped on an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainError {
    pub kind: ErrorKind,
    pub trigger: Trigger,
    /// The plugin that failed, if one did.
    pub plugin: Option<String>,
    /// The handler's own message for a denial; what went wrong otherwise.
    pub message: String,
    /// Attempts made, retries included.
    pub attempts: u32,
}

impl ChainError {
    /// The message in the words of the trigger's family; for Cognito's
    /// triggers, "PreSignUp failed with error <message>."
    pub fn cognito_message(&self) -> String {
        self.trigger
            .family()
            .failure_message(self.trigger, &self.message)
    }
}

impl std::fmt::Display for ChainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}", self.cognito_message(), self.kind)?;
        if let Some(plugin) = &self.plugin {
            write!(f, " in plugin {plugin}")?;
        }
        f.write_str(")")
    }
}

impl std::error::Error for ChainError {}

/// Why an event could not be run.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// The event cannot be routed to a trigger.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// The event does not fit the trigger's shape.
    #[error("the event does not fit the {trigger} trigger: {error}")]
    Shape {
        trigger: Trigger,
        error: ConvertError,
    },
    /// The chain ran and stopped on an error.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The tenant already runs as many invocations as its quota allows.
    #[error("the tenant already runs {limit} invocations at once, its [quotas] concurrency; try again shortly")]
    TooManyRequests { limit: usize },
    /// The sync's chain succeeded, but its outcome could not be kept and
    /// published (Cognito Streams): the sync failed.
    #[error("the sync was not stored: {0}; try again")]
    SyncStore(String),
}
