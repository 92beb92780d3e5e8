//! The backend interface every tier implements, the process tier's
//! implementation, and the foreground supervisor that runs one task to its
//! end (timeout, forwarded signals, result).
//!
//! A [`Backend`] launches a task as a [`Workload`]; the workload can be
//! waited on, signalled, updated live, frozen and thawed, sampled, killed
//! and finally cleaned up. The reactor and the server will drive these same
//! calls; `warden run` drives them through [`supervise`]. This crate decides
//! nothing about *which* tier a task gets: that is the policy engine's job.

pub mod container;
mod error;
pub mod process;
mod supervise;
pub mod workspace;

pub use container::{ContainerBackend, ContainerBackendConfig, ContainerWorkload};
pub use error::{BackendError, Result};
pub use process::{ProcessBackend, ProcessBackendConfig, ProcessWorkload};
pub use supervise::{Interrupts, supervise};

use std::time::Duration;

use warden_core::{LimitUpdate, Limits, Stats, TaskId, TaskSpec, Tier, Usage};

/// What to launch: a normalized spec and the limits decided for it.
#[derive(Debug, Clone)]
pub struct LaunchRequest {
    pub spec: TaskSpec,
    pub id: TaskId,
    pub limits: Limits,
    /// Give the task `/dev/null` as stdin (set when the caller's stdin is
    /// a terminal: no terminal is ever handed to a task).
    pub stdin_null: bool,
    /// Which attempt at the task this is (1 for the first); containers
    /// carry it as a label.
    pub attempt: u32,
}

/// How a workload ended, as the backend saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Exited(i32),
    Signaled(i32),
    OomKilled,
    /// Killed by warden (timeout, cancel) before it ended by itself.
    Killed,
}

/// What is left of a workload after cleanup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    pub exit: Exit,
    pub usage: Usage,
}

/// One isolation tier.
#[allow(async_fn_in_trait)]
pub trait Backend {
    type Workload: Workload;

    fn tier(&self) -> Tier;

    /// The runtime within the tier (`native` for the process tier).
    fn runtime(&self) -> &str;

    /// Starts the task; returns once its command runs (or failed to).
    ///
    /// `gate` is called once the workload is ready to start but before any
    /// of the task's code runs; the task starts only if it returns `Ok`,
    /// under its limits changed by the returned update. This lets a caller
    /// decide (policy) while the backend prepares the workload.
    async fn launch<G: Gate>(&self, req: &LaunchRequest, gate: G) -> Result<Self::Workload>;
}

/// The last word before a task starts: `Ok` with limit changes, or why not.
pub trait Gate: Send {
    /// The workload's processes exist and are being set up: a gate that
    /// decides something can start deciding now.
    fn opened(&mut self) {}

    /// The workload is ready; its task starts only if this returns `Ok`.
    fn pass(self) -> Result<LimitUpdate>;
}

impl<F: FnOnce() -> Result<LimitUpdate> + Send> Gate for F {
    fn pass(self) -> Result<LimitUpdate> {
        self()
    }
}

/// A gate that lets every task start as requested.
pub fn open_gate() -> impl Gate {
    || Ok(LimitUpdate::default())
}

/// A running task on some tier.
#[allow(async_fn_in_trait)]
pub trait Workload {
    fn id(&self) -> &TaskId;

    /// Resolves when the workload has ended. Cancel-safe.
    async fn wait(&mut self) -> Result<()>;

    /// Delivers a signal to the task's process group.
    async fn signal(&self, sig: i32) -> Result<()>;

    /// Changes limits live; returns the effective limits read back.
    async fn update(&self, update: &LimitUpdate) -> Result<Limits>;

    async fn freeze(&self) -> Result<()>;
    async fn thaw(&self) -> Result<()>;
    async fn stats(&self) -> Result<Stats>;

    /// Kills every process of the workload.
    async fn kill(&self) -> Result<()>;

    /// Collects the exit and usage and removes everything the workload
    /// held (cgroups, temporary workspace). Call after `wait`.
    async fn finish(self) -> Result<Finished>;

    /// The limits it started under.
    fn limits(&self) -> Limits;
}

/// How long a task gets between SIGTERM and SIGKILL when it is stopped.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(2);
