use std::fmt;

/// A place in a policy or rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    pub line: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.file),
            None => f.write_str(&self.file),
        }
    }
}

/// Errors of the policy engine; each names the file (and line) at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{at}: {message}")]
    Cedar { at: Location, message: String },
    #[error("{at}: {message}")]
    Rule { at: Location, message: String },
    #[error("{at}: {message}")]
    Test { at: Location, message: String },
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{0}")]
    Invalid(String),
}
