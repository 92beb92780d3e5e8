//! cgroup v2: one directory per task with `cpu.max`, `memory.max`,
//! `pids.max`, `cgroup.freeze` and `cgroup.kill`.

use std::path::{Path, PathBuf};

use warden_core::{Bytes, LimitUpdate, MilliCpu, Stats};

use super::files::{self, kv};
use super::{CPU_PERIOD_US, CgroupLimits, Error, PARENT, Result};

const CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

#[derive(Debug)]
pub struct Cgroup {
    dir: PathBuf,
}

/// Enables warden's controllers for the children of `dir`, if not already.
fn delegate(dir: &Path) -> Result<()> {
    let path = dir.join("cgroup.subtree_control");
    let enabled = files::read_opt(&path)?.unwrap_or_default();
    let missing: Vec<String> =
        CONTROLLERS.iter().filter(|c| !enabled.split_whitespace().any(|e| e == **c)).map(|c| format!("+{c}")).collect();
    if missing.is_empty() {
        return Ok(());
    }
    files::write(&path, &missing.join(" "))
}

/// Freezes or thaws the cgroup2 directory `dir` and waits until the
/// kernel reports it done (a core feature: no controller needed).
pub fn set_frozen(dir: &Path, frozen: bool) -> Result<()> {
    files::write(&dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
    let events = dir.join("cgroup.events");
    let want = u64::from(frozen);
    files::wait_until(&events, if frozen { "frozen 1" } else { "frozen 0" }, || {
        Ok(kv(&files::read(&events)?, "frozen") == want)
    })
}

impl Cgroup {
    /// The cgroup at `rel` below the root.
    pub fn paths(root: &Path, rel: &Path) -> Self {
        Cgroup { dir: root.join(rel) }
    }

    pub fn create(root: &Path, name: &str) -> Result<Self> {
        let cg = Self::paths(root, &Path::new(PARENT).join(name));
        let parent = root.join(PARENT);
        delegate(root)?;
        files::mkdir(&parent)?;
        delegate(&parent)?;
        files::mkdir_new(&cg.dir)?;
        Ok(cg)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn attach(&self, pid: u32) -> Result<()> {
        files::write(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    pub fn update(&self, u: &LimitUpdate) -> Result<CgroupLimits> {
        if let Some(cpus) = u.cpus {
            let value = format!("{} {CPU_PERIOD_US}", cpus.quota_us(CPU_PERIOD_US));
            self.write_checked("cpu.max", &value)?;
        }
        if let Some(mem) = u.memory {
            let value = mem.get().to_string();
            // No swap: a memory limit that swap can stretch is no limit.
            let swap = self.dir.join("memory.swap.max");
            if swap.exists() {
                files::write(&swap, "0")?;
            }
            self.write_checked("memory.max", &value)?;
        }
        if let Some(pids) = u.pids {
            self.write_checked("pids.max", &pids.to_string())?;
        }
        self.read_limits()
    }

    fn write_checked(&self, file: &str, value: &str) -> Result<()> {
        let path = self.dir.join(file);
        files::write(&path, value)?;
        let found = files::read(&path)?;
        let found = found.trim();
        // memory.max is rounded down to a page.
        let same = found == value
            || match (found.parse::<u64>(), value.parse::<u64>()) {
                (Ok(f), Ok(v)) => f <= v && v - f < 4096,
                _ => false,
            };
        if same { Ok(()) } else { Err(Error::NotApplied { path, wanted: value.to_owned(), found: found.to_owned() }) }
    }

    fn read_limits(&self) -> Result<CgroupLimits> {
        let cpu_max = files::read(&self.dir.join("cpu.max"))?;
        let mut parts = cpu_max.split_whitespace();
        let quota = parts.next().unwrap_or("max");
        let period: u64 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(CPU_PERIOD_US);
        let cpus = match quota.parse::<u64>() {
            Ok(q) if period > 0 => MilliCpu((q * 1000 / period) as u32),
            _ => MilliCpu::MAX,
        };
        let max = |f: &str| -> Result<u64> {
            let s = files::read(&self.dir.join(f))?;
            Ok(s.trim().parse().unwrap_or(u64::MAX))
        };
        Ok(CgroupLimits {
            cpus,
            memory: Bytes(max("memory.max")?),
            pids: u32::try_from(max("pids.max")?).unwrap_or(u32::MAX),
        })
    }

    pub fn set_frozen(&self, frozen: bool) -> Result<()> {
        set_frozen(&self.dir, frozen)
    }

    pub fn stats(&self) -> Result<Stats> {
        let d = &self.dir;
        let cpu_stat = files::read(&d.join("cpu.stat"))?;
        let mem_events = files::read_opt(&d.join("memory.events"))?.unwrap_or_default();
        let pids_events = files::read_opt(&d.join("pids.events"))?.unwrap_or_default();
        let peak = match files::read_opt(&d.join("memory.peak"))? {
            Some(s) => Some(files::parse_u64(&d.join("memory.peak"), s.trim())?),
            None => None,
        };
        Ok(Stats {
            cpu_usage_us: kv(&cpu_stat, "usage_usec"),
            cpu_user_us: kv(&cpu_stat, "user_usec"),
            cpu_system_us: kv(&cpu_stat, "system_usec"),
            cpu_nr_periods: kv(&cpu_stat, "nr_periods"),
            cpu_nr_throttled: kv(&cpu_stat, "nr_throttled"),
            cpu_throttled_us: kv(&cpu_stat, "throttled_usec"),
            memory_bytes: files::read_u64(&d.join("memory.current"))?,
            memory_peak_bytes: peak,
            oom_kills: kv(&mem_events, "oom_kill"),
            memory_limit_hits: kv(&mem_events, "max"),
            pids: files::read_u64(&d.join("pids.current"))?,
            pids_limit_hits: kv(&pids_events, "max"),
            cpu_pressure: files::read_pressure(&d.join("cpu.pressure"))?,
            memory_pressure: files::read_pressure(&d.join("memory.pressure"))?,
            io_pressure: files::read_pressure(&d.join("io.pressure"))?,
        })
    }
}
