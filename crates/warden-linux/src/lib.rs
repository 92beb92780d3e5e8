//! warden's Linux seam: everything that talks to the kernel.
//!
//! - [`cgroup`]: cgroup v1 and v2 behind one interface, rooted at a path so
//!   tests can run the logic on a temporary directory;
//! - [`seccomp`]: the process tier's seccomp-bpf filter;
//! - [`sandbox`]: the process sandbox (namespaces, mounts, ids, caps,
//!   rlimits, seccomp) and its per-task init;
//! - [`sys`]: raw syscalls the other crates of the ecosystem lack.
//!
//! This is the one crate of the workspace that may use `unsafe`; each block
//! says why it is sound. It knows nothing of policy or of other tiers.

pub mod cgroup;
pub mod sandbox;
pub mod seccomp;
pub mod sys;
