//! warden's policy engine: which tier, runtime and limits each task gets.
//!
//! Rhai rules (`rules/*.rhai`) turn a task and its signals (risk, load,
//! cost) into candidate placements, cheapest first; Cedar policies
//! (`policies/*.cedar`, validated strictly against
//! `policies/schema.cedarschema`) gate each one; the first permitted
//! candidate wins. Policy errors count as forbids (fail closed). Every
//! decision carries its explanation and the version of the policy set.
//!
//! A policy set is an immutable [`PolicySnapshot`], built and validated as
//! a whole (including its own tests) before it is used. This crate does no
//! process or container work; it only decides.

mod cedar;
mod decide;
mod diff;
mod error;
mod reload;
pub mod rules;
pub mod signals;
mod snapshot;

pub use cedar::{Source, line_of};
pub use decide::{Considered, Decision, Defaults, Judgement, Outcome, Placement, decide};
pub use diff::{CorpusTask, DiffReport, Move, diff, outcome_label};
pub use error::{Error, Location};
pub use reload::{PolicyEvent, PolicyStore, PolicyWatcher, VersionRecord, watch};
pub use signals::{Available, Signals};
pub use snapshot::{Expect, MAX_FILE_BYTES, PolicySnapshot, PolicyTest, Sources, TestOutcome};
