//! The signals a decision weighs: risk (from the task), load (from the
//! node) and cost (from configuration). Each collector is a small function
//! over text the kernel gives, so that it can be tested on fixed input;
//! signals can also be given explicitly (dry runs, tests, replay).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use warden_core::{Network, Origin, TaskSpec, Tier};

/// Everything a decision is made from, besides the task.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Signals {
    pub risk: RiskSignals,
    pub load: LoadSignals,
    pub cost: CostSignals,
    /// The placements this node can run, as `tier/runtime`; candidates
    /// outside it are passed over. Every placement when not given.
    pub available: Available,
}

/// The `tier/runtime` pairs a node offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Available(pub Vec<String>);

impl Default for Available {
    fn default() -> Self {
        Available(
            ["process/native", "container/runc", "container/runsc", "pod/gvisor", "pod/kata"]
                .map(String::from)
                .to_vec(),
        )
    }
}

impl Available {
    pub fn only(pairs: &[&str]) -> Self {
        Available(pairs.iter().map(|s| (*s).to_owned()).collect())
    }

    pub fn offers(&self, tier: Tier, runtime: &str) -> bool {
        self.0.iter().any(|p| p.split_once('/') == Some((tier.as_str(), runtime)))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RiskSignals {
    /// 0 (none) to 100 (hostile), from the task's origin, network request,
    /// data class and past anomalies.
    pub score: i64,
    /// The tenant's class from configuration: trusted, standard or trial.
    pub tenant_class: String,
    /// Anomalies this task (by name) caused before.
    pub past_anomalies: i64,
}

impl Default for RiskSignals {
    fn default() -> Self {
        RiskSignals { score: 0, tenant_class: "standard".into(), past_anomalies: 0 }
    }
}

/// Node load, as integers (Cedar has no floats): pressure in hundredths of
/// a percent, load average in thousandths.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoadSignals {
    pub cpu_pressure: i64,
    pub memory_pressure: i64,
    pub io_pressure: i64,
    pub loadavg_milli: i64,
    pub memory_available_mib: i64,
    pub running_process: i64,
    pub running_container: i64,
    pub running_pod: i64,
}

/// What one tier costs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierCost {
    pub startup_ms: i64,
    pub overhead_pct: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CostSignals {
    pub process: TierCost,
    pub container: TierCost,
    pub pod: TierCost,
    /// The tenant's budget left, in cost units.
    pub budget_left: i64,
}

impl Default for CostSignals {
    /// Start-up times measured on the reference machine (README).
    fn default() -> Self {
        CostSignals {
            process: TierCost { startup_ms: 5, overhead_pct: 1 },
            container: TierCost { startup_ms: 300, overhead_pct: 3 },
            pod: TierCost { startup_ms: 3000, overhead_pct: 10 },
            budget_left: 1_000_000,
        }
    }
}

impl CostSignals {
    pub fn of(&self, tier: Tier) -> &TierCost {
        match tier {
            Tier::Process => &self.process,
            Tier::Container => &self.container,
            Tier::Pod => &self.pod,
        }
    }
}

/// The risk score of a task: its origin first, raised by what it asks for.
pub fn risk_score(task: &TaskSpec, past_anomalies: i64) -> i64 {
    let base = match task.risk.origin {
        Origin::Internal => 0,
        Origin::External => 50,
        Origin::Untrusted => 90,
    };
    let network = if task.network == Network::Loopback { 5 } else { 0 };
    (base + network + past_anomalies * 10).clamp(0, 100)
}

/// Risk signals of `task`, with the tenant's class from `classes`.
pub fn risk(task: &TaskSpec, classes: &BTreeMap<String, String>, past_anomalies: i64) -> RiskSignals {
    RiskSignals {
        score: risk_score(task, past_anomalies),
        tenant_class: classes.get(&task.tenant).cloned().unwrap_or_else(|| "standard".into()),
        past_anomalies,
    }
}

/// `some avg10` of a PSI file, in hundredths of a percent.
pub fn parse_psi_some_avg10(text: &str) -> Option<i64> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    let v = line.split_whitespace().find_map(|f| f.strip_prefix("avg10="))?;
    let pct: f64 = v.parse().ok()?;
    Some((pct * 100.0).round() as i64)
}

/// The 1-minute load average of `/proc/loadavg`, in thousandths.
pub fn parse_loadavg_milli(text: &str) -> Option<i64> {
    let v: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some((v * 1000.0).round() as i64)
}

/// `MemAvailable` of `/proc/meminfo`, in MiB.
pub fn parse_mem_available_mib(text: &str) -> Option<i64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// Reads the node's load from `/proc` (the running counts are the caller's).
pub fn collect_load() -> LoadSignals {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    LoadSignals {
        cpu_pressure: parse_psi_some_avg10(&read("/proc/pressure/cpu")).unwrap_or(0),
        memory_pressure: parse_psi_some_avg10(&read("/proc/pressure/memory")).unwrap_or(0),
        io_pressure: parse_psi_some_avg10(&read("/proc/pressure/io")).unwrap_or(0),
        loadavg_milli: parse_loadavg_milli(&read("/proc/loadavg")).unwrap_or(0),
        memory_available_mib: parse_mem_available_mib(&read("/proc/meminfo")).unwrap_or(0),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_files() {
        let psi = "some avg10=12.34 avg60=1.00 avg300=0.00 total=99\nfull avg10=1.00 avg60=0.00 avg300=0.00 total=1\n";
        assert_eq!(parse_psi_some_avg10(psi), Some(1234));
        assert_eq!(parse_psi_some_avg10("garbage"), None);
        assert_eq!(parse_loadavg_milli("0.52 0.40 0.31 1/234 5678\n"), Some(520));
        let meminfo = "MemTotal:       24000000 kB\nMemFree:  1000 kB\nMemAvailable:   2097152 kB\n";
        assert_eq!(parse_mem_available_mib(meminfo), Some(2048));
    }

    #[test]
    fn risk_rises_with_origin_and_history() {
        let mut t = TaskSpec { command: vec!["x".into()], ..Default::default() };
        assert_eq!(risk_score(&t, 0), 0);
        t.risk.origin = Origin::External;
        assert_eq!(risk_score(&t, 0), 50);
        t.risk.origin = Origin::Untrusted;
        t.network = Network::Loopback;
        assert_eq!(risk_score(&t, 3), 100, "clamped");
        let classes = BTreeMap::from([("acme".to_owned(), "trial".to_owned())]);
        t.tenant = "acme".into();
        assert_eq!(risk(&t, &classes, 0).tenant_class, "trial");
        t.tenant = "other".into();
        assert_eq!(risk(&t, &classes, 0).tenant_class, "standard");
    }

    #[test]
    fn collected_load_is_sane_on_this_host() {
        let l = collect_load();
        assert!(l.memory_available_mib > 0, "{l:?}");
        assert!(l.cpu_pressure >= 0 && l.cpu_pressure <= 10_000);
    }
}
