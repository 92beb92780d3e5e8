//! What a backend enforces and reports: effective limits, live stats, and
//! the result of a finished task with its exit-code contract.

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize, Serializer};

use crate::task::{Network, TaskId, Tier};
use crate::units::{Bytes, HumanDuration, MilliCpu};

/// The limits a workload actually runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub cpus: MilliCpu,
    pub memory: Bytes,
    pub pids: u32,
    pub tmp: Bytes,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    pub network: Network,
}

/// A live change of limits; `None` leaves a limit as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitUpdate {
    pub cpus: Option<MilliCpu>,
    pub memory: Option<Bytes>,
    pub pids: Option<u32>,
}

/// Pressure stall information for one resource: share of time some task
/// was stalled, averaged over 10 s, and the total stall time.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Pressure {
    pub some_avg10: f64,
    pub some_total_us: u64,
    pub full_avg10: f64,
    pub full_total_us: u64,
}

/// A sample of a running workload, as the reactor reads it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Stats {
    pub cpu_usage_us: u64,
    pub cpu_user_us: u64,
    pub cpu_system_us: u64,
    pub cpu_nr_periods: u64,
    pub cpu_nr_throttled: u64,
    pub cpu_throttled_us: u64,
    pub memory_bytes: u64,
    /// Highest memory use seen, when the kernel keeps it.
    pub memory_peak_bytes: Option<u64>,
    pub oom_kills: u64,
    /// Times the memory limit was hit (v1 `failcnt`, v2 `max` events).
    pub memory_limit_hits: u64,
    pub pids: u64,
    /// Times a fork was refused by the pids limit, when the kernel counts it.
    pub pids_limit_hits: u64,
    pub cpu_pressure: Option<Pressure>,
    pub memory_pressure: Option<Pressure>,
    pub io_pressure: Option<Pressure>,
}

/// Resource use of a finished task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    pub cpu_user_ms: u64,
    pub cpu_sys_ms: u64,
    pub peak_memory_bytes: u64,
    pub wall_ms: u64,
    pub oom_kills: u64,
}

impl Usage {
    /// The usage a task's last stats show, over `wall_ms` of wall time.
    pub fn from_stats(s: &Stats, wall_ms: u64) -> Self {
        Usage {
            cpu_user_ms: s.cpu_user_us / 1000,
            cpu_sys_ms: s.cpu_system_us / 1000,
            peak_memory_bytes: s.memory_peak_bytes.unwrap_or(s.memory_bytes),
            wall_ms,
            oom_kills: s.oom_kills,
        }
    }
}

/// Why a task ended. Each reason fixes the exit status of `warden run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum ExitReason {
    /// The task exited with this code.
    Exited { code: i32 },
    /// The task died of this signal.
    Signaled { signal: i32 },
    /// The memory limit killed it.
    OomKilled,
    /// It ran past its timeout and was stopped.
    Timeout,
    /// The command was not found.
    NotFound,
    /// The command was found but could not be executed.
    NotExecutable,
    /// warden itself failed or refused (bad input, policy, backend).
    Error,
}

/// Exit statuses of `warden run` that are not the task's own.
pub mod exit_code {
    pub const TIMEOUT: i32 = 124;
    pub const WARDEN_ERROR: i32 = 125;
    pub const NOT_EXECUTABLE: i32 = 126;
    pub const NOT_FOUND: i32 = 127;
    pub const SIGNAL_BASE: i32 = 128;
    pub const OOM_KILLED: i32 = 137;
}

impl ExitReason {
    /// The exit status `warden run` returns for this reason.
    pub fn exit_code(self) -> i32 {
        match self {
            ExitReason::Exited { code } => code & 0xff,
            ExitReason::Signaled { signal } => exit_code::SIGNAL_BASE + signal,
            ExitReason::OomKilled => exit_code::OOM_KILLED,
            ExitReason::Timeout => exit_code::TIMEOUT,
            ExitReason::NotFound => exit_code::NOT_FOUND,
            ExitReason::NotExecutable => exit_code::NOT_EXECUTABLE,
            ExitReason::Error => exit_code::WARDEN_ERROR,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ExitReason::Exited { .. } => "exited",
            ExitReason::Signaled { .. } => "signaled",
            ExitReason::OomKilled => "oom_killed",
            ExitReason::Timeout => "timeout",
            ExitReason::NotFound => "not_found",
            ExitReason::NotExecutable => "not_executable",
            ExitReason::Error => "error",
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Exited { code } => write!(f, "exited with code {code}"),
            ExitReason::Signaled { signal } => write!(f, "killed by signal {signal}"),
            other => f.write_str(other.name()),
        }
    }
}

/// A point in time, written as RFC 3339 with milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub SystemTime);

impl Timestamp {
    pub fn now() -> Self {
        Timestamp(SystemTime::now())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(self.0))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_rfc3339(&s).map(Timestamp).map_err(serde::de::Error::custom)
    }
}

/// One attempt at running a task on one tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub tier: Tier,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    pub started_at: Timestamp,
    pub ended_at: Timestamp,
    pub outcome: String,
}

/// The record of a finished `warden run`, written by `--result`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub task_id: TaskId,
    pub tenant: String,
    pub exit_code: i32,
    #[serde(flatten)]
    pub reason: ExitReason,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    pub tier_history: Vec<Attempt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    pub usage: Usage,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    /// What went wrong, for reasons that are warden's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_contract() {
        assert_eq!(ExitReason::Exited { code: 3 }.exit_code(), 3);
        assert_eq!(ExitReason::Signaled { signal: 15 }.exit_code(), 143);
        assert_eq!(ExitReason::OomKilled.exit_code(), 137);
        assert_eq!(ExitReason::Timeout.exit_code(), 124);
        assert_eq!(ExitReason::Error.exit_code(), 125);
        assert_eq!(ExitReason::NotExecutable.exit_code(), 126);
        assert_eq!(ExitReason::NotFound.exit_code(), 127);
    }

    #[test]
    fn result_json_has_reason_and_code() {
        let r = RunResult {
            task_id: TaskId::try_from("t1".to_owned()).unwrap(),
            tenant: "local".into(),
            exit_code: 137,
            reason: ExitReason::OomKilled,
            tier: Some(Tier::Process),
            tier_history: vec![],
            limits: None,
            usage: Usage::default(),
            started_at: Timestamp::now(),
            finished_at: Timestamp::now(),
            error: None,
        };
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["reason"], "oom_killed");
        assert_eq!(v["exit_code"], 137);
        assert_eq!(v["tier"], "process");
        let back: RunResult = serde_json::from_value(v).unwrap();
        assert_eq!(back.reason, ExitReason::OomKilled);
    }
}
