//! cgroup v1: one hierarchy per controller (`cpu`, `cpuacct`, `memory`,
//! `pids`, `freezer`), possibly co-mounted, plus the controller-less cgroup2
//! mount of "hybrid" hosts.
//!
//! On a hybrid host the cgroup2 side does what needs no controller: CPU
//! usage (`cpu.stat`), freezing (`cgroup.freeze`), `cgroup.kill` and
//! pressure. The v1 `cpuacct` and `freezer` cgroups are then not created at
//! all: every cgroup directory costs a mkdir, an attach and an rmdir on the
//! launch path.

use std::path::{Path, PathBuf};

use warden_core::{Bytes, LimitUpdate, MilliCpu, Stats};

use super::files::{self, kv};
use super::{CPU_PERIOD_US, CgroupLimits, Error, PARENT, Result};

pub const REQUIRED: [&str; 5] = ["cpu", "cpuacct", "memory", "pids", "freezer"];

/// v1's "unlimited" for memory, as the kernel prints it (page-rounded i64::MAX).
const MEM_UNLIMITED: u64 = 0x7FFF_FFFF_FFFF_F000;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mounts {
    pub cpu: Option<PathBuf>,
    pub cpuacct: Option<PathBuf>,
    pub memory: Option<PathBuf>,
    pub pids: Option<PathBuf>,
    pub freezer: Option<PathBuf>,
    pub unified: Option<PathBuf>,
}

impl Mounts {
    pub fn at(root: &Path) -> Self {
        Mounts {
            cpu: Some(root.join("cpu")),
            cpuacct: Some(root.join("cpuacct")),
            memory: Some(root.join("memory")),
            pids: Some(root.join("pids")),
            freezer: Some(root.join("freezer")),
            unified: Some(root.join("unified")).filter(|u| u.exists()),
        }
    }

    /// Records a v1 mount from its super options (`rw,cpu,cpuacct`).
    pub fn add(&mut self, superopts: &str, path: PathBuf) {
        for opt in superopts.split(',') {
            let slot = match opt {
                "cpu" => &mut self.cpu,
                "cpuacct" => &mut self.cpuacct,
                "memory" => &mut self.memory,
                "pids" => &mut self.pids,
                "freezer" => &mut self.freezer,
                _ => continue,
            };
            slot.get_or_insert_with(|| path.clone());
        }
    }

    pub fn is_complete(&self) -> bool {
        self.cpu.is_some()
            && self.cpuacct.is_some()
            && self.memory.is_some()
            && self.pids.is_some()
            && self.freezer.is_some()
    }

    pub fn is_empty(&self) -> bool {
        self.cpu.is_none()
            && self.cpuacct.is_none()
            && self.memory.is_none()
            && self.pids.is_none()
            && self.freezer.is_none()
    }
}

#[derive(Debug)]
pub struct Cgroup {
    cpu: PathBuf,
    memory: PathBuf,
    pids: PathBuf,
    /// Either the cgroup2 side (hybrid hosts) or v1 `cpuacct` + `freezer`.
    extra: Extra,
}

#[derive(Debug)]
enum Extra {
    Unified(PathBuf),
    V1 { cpuacct: PathBuf, freezer: PathBuf },
}

fn mount(m: &Option<PathBuf>) -> PathBuf {
    // `Hierarchy::from_mountinfo` only builds complete mounts.
    m.clone().unwrap_or_default()
}

impl Cgroup {
    /// The directories of the cgroup at `rel` below each mount.
    pub fn paths(m: &Mounts, rel: &Path) -> Self {
        let at = |root: &Option<PathBuf>| mount(root).join(rel);
        let extra = match &m.unified {
            Some(u) => Extra::Unified(u.join(rel)),
            None => Extra::V1 { cpuacct: at(&m.cpuacct), freezer: at(&m.freezer) },
        };
        Cgroup { cpu: at(&m.cpu), memory: at(&m.memory), pids: at(&m.pids), extra }
    }

    pub fn create(m: &Mounts, name: &str) -> Result<Self> {
        let cg = Self::paths(m, &Path::new(PARENT).join(name));
        let mut made: Vec<PathBuf> = Vec::new();
        for dir in cg.dirs() {
            let step = dir.parent().map_or(Ok(()), files::mkdir).and_then(|()| files::mkdir_new(&dir));
            if let Err(e) = step {
                for d in made.iter().rev() {
                    let _ = files::rmdir_retry(d);
                }
                return Err(e);
            }
            made.push(dir);
        }
        Ok(cg)
    }

    /// Every distinct directory (co-mounted controllers share one).
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = Vec::with_capacity(5);
        let extra = match &self.extra {
            Extra::Unified(u) => vec![u],
            Extra::V1 { cpuacct, freezer } => vec![cpuacct, freezer],
        };
        for d in [&self.cpu, &self.memory, &self.pids].into_iter().chain(extra) {
            if !v.contains(d) {
                v.push(d.clone());
            }
        }
        v
    }

    pub fn unified_dir(&self) -> Option<&Path> {
        match &self.extra {
            Extra::Unified(u) => Some(u),
            Extra::V1 { .. } => None,
        }
    }

    pub fn procs_file(&self) -> PathBuf {
        self.pids.join("cgroup.procs")
    }

    pub fn attach(&self, pid: u32) -> Result<()> {
        let pid = pid.to_string();
        for d in self.dirs() {
            files::write(&d.join("cgroup.procs"), &pid)?;
        }
        Ok(())
    }

    pub fn update(&self, u: &LimitUpdate) -> Result<CgroupLimits> {
        if let Some(cpus) = u.cpus {
            files::write(&self.cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
            let quota = cpus.quota_us(CPU_PERIOD_US).to_string();
            let path = self.cpu.join("cpu.cfs_quota_us");
            files::write(&path, &quota)?;
            check(&path, &quota, files::read(&path)?.trim())?;
        }
        if let Some(mem) = u.memory {
            self.set_memory(mem)?;
        }
        if let Some(pids) = u.pids {
            let path = self.pids.join("pids.max");
            files::write(&path, &pids.to_string())?;
            check(&path, &pids.to_string(), files::read(&path)?.trim())?;
        }
        self.read_limits()
    }

    fn set_memory(&self, mem: Bytes) -> Result<()> {
        let limit = self.memory.join("memory.limit_in_bytes");
        let memsw = self.memory.join("memory.memsw.limit_in_bytes");
        let value = mem.get().to_string();
        // memsw must stay >= limit: raise memsw first when growing.
        let has_memsw = memsw.exists();
        let current = files::read_opt(&limit)?.and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(MEM_UNLIMITED);
        if has_memsw && mem.get() > current {
            files::write(&memsw, &value)?;
            files::write(&limit, &value)?;
        } else {
            files::write(&limit, &value)?;
            if has_memsw {
                files::write(&memsw, &value)?;
            }
        }
        // The kernel rounds down to whole pages.
        let found = files::read_u64(&limit)?;
        if found > mem.get() || mem.get() - found >= 4096 * 16 {
            return Err(Error::NotApplied { path: limit, wanted: value, found: found.to_string() });
        }
        Ok(())
    }

    fn read_limits(&self) -> Result<CgroupLimits> {
        let quota_path = self.cpu.join("cpu.cfs_quota_us");
        let quota: i64 = files::read(&quota_path)?.trim().parse().unwrap_or(-1);
        let period = files::read_u64(&self.cpu.join("cpu.cfs_period_us")).unwrap_or(CPU_PERIOD_US);
        let cpus =
            if quota <= 0 || period == 0 { MilliCpu::MAX } else { MilliCpu((quota as u64 * 1000 / period) as u32) };
        let memory = Bytes(files::read_u64(&self.memory.join("memory.limit_in_bytes"))?);
        let pids_text = files::read(&self.pids.join("pids.max"))?;
        let pids = pids_text.trim().parse().unwrap_or(u32::MAX);
        Ok(CgroupLimits { cpus, memory, pids })
    }

    pub fn set_frozen(&self, frozen: bool) -> Result<()> {
        match &self.extra {
            Extra::Unified(u) => super::v2::set_frozen(u, frozen),
            Extra::V1 { freezer, .. } => {
                let path = freezer.join("freezer.state");
                let want = if frozen { "FROZEN" } else { "THAWED" };
                files::write(&path, want)?;
                files::wait_until(&path, want, || Ok(files::read(&path)?.trim() == want))
            }
        }
    }

    /// (usage, user, system) CPU time in microseconds.
    fn cpu_times(&self) -> Result<(u64, u64, u64)> {
        match &self.extra {
            Extra::Unified(u) => {
                let stat = files::read(&u.join("cpu.stat"))?;
                Ok((kv(&stat, "usage_usec"), kv(&stat, "user_usec"), kv(&stat, "system_usec")))
            }
            Extra::V1 { cpuacct, .. } => {
                let us = |f: &str| files::read_u64(&cpuacct.join(f)).map(|ns| ns / 1000);
                Ok((us("cpuacct.usage")?, us("cpuacct.usage_user")?, us("cpuacct.usage_sys")?))
            }
        }
    }

    pub fn stats(&self) -> Result<Stats> {
        let cpu_stat = files::read(&self.cpu.join("cpu.stat"))?;
        let (usage, user, system) = self.cpu_times()?;
        let oom_control = files::read(&self.memory.join("memory.oom_control"))?;
        let pids_events = files::read_opt(&self.pids.join("pids.events"))?.unwrap_or_default();
        let psi = |f: &str| match self.unified_dir() {
            Some(u) => files::read_pressure(&u.join(f)),
            None => Ok(None),
        };
        Ok(Stats {
            cpu_usage_us: usage,
            cpu_user_us: user,
            cpu_system_us: system,
            cpu_nr_periods: kv(&cpu_stat, "nr_periods"),
            cpu_nr_throttled: kv(&cpu_stat, "nr_throttled"),
            cpu_throttled_us: kv(&cpu_stat, "throttled_time") / 1000,
            memory_bytes: files::read_u64(&self.memory.join("memory.usage_in_bytes"))?,
            memory_peak_bytes: Some(files::read_u64(&self.memory.join("memory.max_usage_in_bytes"))?),
            oom_kills: kv(&oom_control, "oom_kill"),
            memory_limit_hits: files::read_u64(&self.memory.join("memory.failcnt"))?,
            pids: files::read_u64(&self.pids.join("pids.current"))?,
            pids_limit_hits: kv(&pids_events, "max"),
            cpu_pressure: psi("cpu.pressure")?,
            memory_pressure: psi("memory.pressure")?,
            io_pressure: psi("io.pressure")?,
        })
    }
}

fn check(path: &Path, wanted: &str, found: &str) -> Result<()> {
    if wanted == found {
        Ok(())
    } else {
        Err(Error::NotApplied { path: path.to_owned(), wanted: wanted.to_owned(), found: found.to_owned() })
    }
}
