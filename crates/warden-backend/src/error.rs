use std::io;

use warden_linux::cgroup;
use warden_linux::sandbox::SpawnError;

/// Errors of the backends. The command-line exit status follows from the
/// variant: not found 127, not executable 126, anything else 125.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("command `{command}` not found")]
    NotFound { command: String },
    #[error("command `{command}` cannot be executed: {reason}")]
    NotExecutable { command: String, reason: String },
    #[error("{0}")]
    Spawn(SpawnError),
    #[error(transparent)]
    Cgroup(#[from] cgroup::Error),
    #[error("the {tier} tier is not available: {reason}")]
    Unavailable { tier: &'static str, reason: String },
    #[error("{0}")]
    Refused(String),
    /// The gate's decision needs a differently built workload (e.g. another
    /// network): launch again with the decided spec.
    #[error("superseded: {0}")]
    Superseded(String),
    #[error("task `{id}` is already running on this node")]
    Duplicate { id: String },
    #[error("image `{image}` is not on this node (warden never pulls: build or load it here)")]
    ImageMissing { image: String },
    #[error("the Docker engine at {} failed to {what}: {detail}", socket.display())]
    Engine { what: String, socket: std::path::PathBuf, detail: String },
    /// The workload's fate is unknown (its engine went away).
    #[error("lost track of the task: {0}")]
    Lost(String),
    #[error("the limits did not take: asked {asked}, the kernel enforces {got}")]
    NotApplied { asked: String, got: String },
    #[error("failed to {what}: {source}")]
    Io { what: String, source: io::Error },
}

impl From<SpawnError> for BackendError {
    fn from(e: SpawnError) -> Self {
        match e {
            SpawnError::NotFound { command } => BackendError::NotFound { command },
            SpawnError::NotExecutable { command, source } => {
                BackendError::NotExecutable { command, reason: source.to_string() }
            }
            other => BackendError::Spawn(other),
        }
    }
}

impl BackendError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> BackendError {
        let what = what.into();
        move |source| BackendError::Io { what, source }
    }
}

pub type Result<T, E = BackendError> = std::result::Result<T, E>;
