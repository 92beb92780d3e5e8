//! cgroup v1 and v2 behind one interface.
//!
//! A [`Hierarchy`] is detected from `/proc/self/mountinfo` (or built from a
//! root path, which is how the tests run the v1 and v2 logic against a
//! temporary directory laid out like `/sys/fs/cgroup`). It creates
//! [`Cgroup`]s under a parent of warden's own (`warden/`), and the caller
//! never knows which version it got: limits, live updates with read-back,
//! freeze/thaw, stats, kill and removal work the same.
//!
//! On a v1 "hybrid" host the cgroup is also created in the cgroup2 hierarchy
//! mounted at `unified/` (which has no controllers): that gives per-task
//! pressure (PSI) and `cgroup.kill`.

mod files;
mod v1;
mod v2;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use warden_core::{Bytes, LimitUpdate, MilliCpu, Stats};

pub use files::parse_pressure;

/// The CFS period warden uses, in microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;

/// Errors of the cgroup layer, each naming the file involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to create cgroup {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("failed to write `{value}` to {path}: {source}")]
    Write { path: PathBuf, value: String, source: io::Error },
    #[error("failed to read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("failed to remove cgroup {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
    #[error("{path} reads `{found}` after writing `{wanted}`: the kernel did not take the update")]
    NotApplied { path: PathBuf, wanted: String, found: String },
    #[error("no usable cgroup hierarchy: {0}")]
    NoHierarchy(String),
    #[error("cgroup {path} did not reach `{state}` within {waited:?}")]
    Timeout { path: PathBuf, state: &'static str, waited: Duration },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The limits a cgroup enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLimits {
    pub cpus: MilliCpu,
    pub memory: Bytes,
    pub pids: u32,
}

/// Which cgroup version a hierarchy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// Where the controllers live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// One mount per controller, and maybe a controller-less cgroup2 mount.
    V1(v1::Mounts),
    /// One unified hierarchy.
    V2 { root: PathBuf },
}

/// The parent directory warden creates its cgroups under.
pub const PARENT: &str = "warden";

impl Hierarchy {
    /// Reads the mounted hierarchies from `/proc/self/mountinfo`.
    pub fn detect() -> Result<Self> {
        let info = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|source| Error::Read { path: "/proc/self/mountinfo".into(), source })?;
        Self::from_mountinfo(&info)
    }

    /// Parses mountinfo text; a pure function so that it can be tested.
    pub fn from_mountinfo(info: &str) -> Result<Self> {
        let mut mounts = v1::Mounts::default();
        let mut unified = None;
        for line in info.lines() {
            // id parent major:minor root mountpoint opts... - fstype source superopts
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let mountpoint = pre.split(' ').nth(4).unwrap_or_default();
            let mut post = post.split(' ');
            let fstype = post.next().unwrap_or_default();
            let superopts = post.nth(1).unwrap_or_default();
            let path = PathBuf::from(unescape_mountinfo(mountpoint));
            match fstype {
                "cgroup2" if mountpoint == "/sys/fs/cgroup" => return Ok(Hierarchy::V2 { root: path }),
                "cgroup2" => unified = Some(path),
                "cgroup" => mounts.add(superopts, path),
                _ => {}
            }
        }
        if mounts.is_complete() {
            mounts.unified = unified;
            return Ok(Hierarchy::V1(mounts));
        }
        if let Some(root) = unified
            && mounts.is_empty()
        {
            return Ok(Hierarchy::V2 { root });
        }
        Err(Error::NoHierarchy(format!(
            "need cgroup v2, or v1 with the {} controllers mounted",
            v1::REQUIRED.join(", ")
        )))
    }

    /// A v2 hierarchy rooted at `root` (tests use a temporary directory).
    pub fn v2_at(root: impl Into<PathBuf>) -> Self {
        Hierarchy::V2 { root: root.into() }
    }

    /// A v1 hierarchy with every controller at `root/<controller>` and, if
    /// that directory exists, the unified mount at `root/unified` (tests use
    /// a temporary directory).
    pub fn v1_at(root: &Path) -> Self {
        Hierarchy::V1(v1::Mounts::at(root))
    }

    pub fn version(&self) -> Version {
        match self {
            Hierarchy::V1(_) => Version::V1,
            Hierarchy::V2 { .. } => Version::V2,
        }
    }

    /// Creates `warden/<name>` with `limits` applied. Nothing is left behind
    /// if any step fails.
    pub fn create(&self, name: &str, limits: &CgroupLimits) -> Result<Cgroup> {
        let cg = match self {
            Hierarchy::V1(m) => Cgroup::V1(v1::Cgroup::create(m, name)?),
            Hierarchy::V2 { root } => Cgroup::V2(v2::Cgroup::create(root, name)?),
        };
        if let Err(e) = cg.apply(limits) {
            // The cgroup is empty; removing it cannot race with any task.
            let _ = cg.remove();
            return Err(e);
        }
        Ok(cg)
    }

    /// Opens an existing cgroup `warden/<name>` (to adopt a running task).
    pub fn open(&self, name: &str) -> Result<Cgroup> {
        self.open_at(&Path::new(PARENT).join(name))
    }

    /// Opens an existing cgroup at `rel` below the hierarchy's root, such
    /// as a container's `docker/<id>`.
    pub fn open_at(&self, rel: &Path) -> Result<Cgroup> {
        let cg = match self {
            Hierarchy::V1(m) => Cgroup::V1(v1::Cgroup::paths(m, rel)),
            Hierarchy::V2 { root } => Cgroup::V2(v2::Cgroup::paths(root, rel)),
        };
        let probe = cg.procs_file();
        if !probe.exists() {
            return Err(Error::Read { path: probe, source: io::Error::from(io::ErrorKind::NotFound) });
        }
        Ok(cg)
    }
}

fn unescape_mountinfo(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let mut out = String::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v as char);
            i += 4;
            continue;
        }
        out.push(bytes[i] as char);
        i += 1;
    }
    out
}

/// One task's cgroup, whichever version.
#[derive(Debug)]
pub enum Cgroup {
    V1(v1::Cgroup),
    V2(v2::Cgroup),
}

impl Cgroup {
    /// Moves `pid` (and later its children) into the cgroup.
    pub fn attach(&self, pid: u32) -> Result<()> {
        match self {
            Cgroup::V1(c) => c.attach(pid),
            Cgroup::V2(c) => c.attach(pid),
        }
    }

    /// Sets every limit.
    pub fn apply(&self, l: &CgroupLimits) -> Result<()> {
        self.update(&LimitUpdate { cpus: Some(l.cpus), memory: Some(l.memory), pids: Some(l.pids) }).map(|_| ())
    }

    /// Changes limits live and reads them back. Returns the effective
    /// limits after the write; an update the kernel did not take is an
    /// [`Error::NotApplied`].
    pub fn update(&self, u: &LimitUpdate) -> Result<CgroupLimits> {
        match self {
            Cgroup::V1(c) => c.update(u),
            Cgroup::V2(c) => c.update(u),
        }
    }

    /// The limits in force, read from the kernel.
    pub fn limits(&self) -> Result<CgroupLimits> {
        self.update(&LimitUpdate::default())
    }

    /// Freezes every process in the cgroup and waits until they are.
    pub fn freeze(&self) -> Result<()> {
        match self {
            Cgroup::V1(c) => c.set_frozen(true),
            Cgroup::V2(c) => c.set_frozen(true),
        }
    }

    /// Thaws a frozen cgroup.
    pub fn thaw(&self) -> Result<()> {
        match self {
            Cgroup::V1(c) => c.set_frozen(false),
            Cgroup::V2(c) => c.set_frozen(false),
        }
    }

    /// Reads usage counters and pressure.
    pub fn stats(&self) -> Result<Stats> {
        match self {
            Cgroup::V1(c) => c.stats(),
            Cgroup::V2(c) => c.stats(),
        }
    }

    /// The pids in the cgroup.
    pub fn procs(&self) -> Result<Vec<u32>> {
        files::read_pids(&self.procs_file())
    }

    fn procs_file(&self) -> PathBuf {
        match self {
            Cgroup::V1(c) => c.procs_file(),
            Cgroup::V2(c) => c.dir().join("cgroup.procs"),
        }
    }

    /// SIGKILLs every process in the cgroup, atomically where the kernel
    /// has `cgroup.kill`, else by freezing, killing each and thawing.
    pub fn kill(&self) -> Result<()> {
        let kill_file = match self {
            Cgroup::V1(c) => c.unified_dir().map(|d| d.join("cgroup.kill")),
            Cgroup::V2(c) => Some(c.dir().join("cgroup.kill")),
        };
        if let Some(f) = kill_file.filter(|f| f.exists()) {
            return files::write(&f, "1");
        }
        self.freeze()?;
        for pid in self.procs()? {
            // A pid that already exited is fine to miss.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
        self.thaw()
    }

    /// Removes the cgroup directories, waiting briefly for exiting tasks.
    pub fn remove(&self) -> Result<()> {
        let dirs = match self {
            Cgroup::V1(c) => c.dirs(),
            Cgroup::V2(c) => vec![c.dir().to_owned()],
        };
        let mut first_err = None;
        for dir in dirs {
            if let Err(e) = files::rmdir_retry(&dir) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests;
