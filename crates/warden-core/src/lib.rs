//! warden's task model: the task spec, tiers, limits, units, stats and run
//! results, as plain serde types.
//!
//! This crate does no I/O and depends on nothing heavy, so that every other
//! crate (the CLI, the backends, the policy engine, the API) can share it.
//! Parsing is strict: an unknown field or a malformed unit is an error that
//! names the field.

pub mod outcome;
pub mod task;
pub mod units;

pub use outcome::{Attempt, ExitReason, LimitUpdate, Limits, Pressure, RunResult, Stats, Timestamp, Usage, exit_code};
pub use task::{
    DataClass, Network, Origin, RUNTIMES, Resources, Risk, SpecError, TaskId, TaskSpec, Tier, TierRequest, strength,
};
pub use units::{Bytes, HumanDuration, MilliCpu, UnitError};
