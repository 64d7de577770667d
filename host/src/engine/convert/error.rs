//! Why a value does not convert: [`ConvertError`].

/// A value that does not fit the contract, with the path to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertError {
    path: Vec<String>,
    message: String,
}

impl ConvertError {
    pub(super) fn new(message: impl Into<String>) -> Self {
        ConvertError {
            path: Vec::new(),
            message: message.into(),
        }
    }

    /// Prefixes the path with the field or key the error was found in.
    pub fn within(mut self, segment: impl Into<String>) -> Self {
        self.path.push(segment.into());
        self
    }

    /// The dotted path of the offending value, such as `request.userAttributes`.
    pub fn path(&self) -> String {
        let segments: Vec<&str> = self.path.iter().rev().map(String::as_str).collect();
        segments.join(".")
    }
}

impl std::fmt::Display for ConvertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "`{}`: {}", self.path(), self.message)
        }
    }
}

impl std::error::Error for ConvertError {}
