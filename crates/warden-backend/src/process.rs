//! The process tier: a task in warden's Linux sandbox under a cgroup.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use warden_core::{Bytes, LimitUpdate, Limits, MilliCpu, Stats, TaskId, Tier, Usage};
use warden_linux::cgroup::{self, Cgroup, CgroupLimits, Hierarchy};
use warden_linux::sandbox::{DEFAULT_PATH, Sandbox, SandboxConfig, SandboxSpec, TaskExit};
use warden_linux::seccomp::Filter;

use crate::{Backend, BackendError, Exit, Finished, Gate, LaunchRequest, Result, Workload, workspace};

/// Limits for what a task leaves unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitDefaults {
    pub cpus: MilliCpu,
    pub memory: Bytes,
    pub pids: u32,
    pub tmp: Bytes,
}

impl Default for LimitDefaults {
    fn default() -> Self {
        LimitDefaults { cpus: MilliCpu(1000), memory: Bytes::mib(1024), pids: 1024, tmp: Bytes::mib(64) }
    }
}

impl LimitDefaults {
    /// The limits a spec runs under: its own where set, these elsewhere.
    pub fn resolve(&self, spec: &warden_core::TaskSpec) -> Limits {
        let r = &spec.resources;
        Limits {
            cpus: r.cpus.unwrap_or(self.cpus),
            memory: r.memory.unwrap_or(self.memory),
            pids: r.pids.unwrap_or(self.pids),
            tmp: r.tmp.unwrap_or(self.tmp),
            timeout: r.timeout,
            network: spec.network,
        }
    }
}

/// Configuration of the process tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessBackendConfig {
    /// Where temporary workspaces live (never visible to tasks).
    pub state_dir: PathBuf,
    pub sandbox: SandboxConfig,
    pub defaults: LimitDefaults,
}

impl Default for ProcessBackendConfig {
    fn default() -> Self {
        ProcessBackendConfig {
            state_dir: PathBuf::from("/var/lib/warden"),
            sandbox: SandboxConfig::default(),
            defaults: LimitDefaults::default(),
        }
    }
}

/// The process tier, built from its config.
#[derive(Debug)]
pub struct ProcessBackend {
    config: ProcessBackendConfig,
    hierarchy: Hierarchy,
    filter: Filter,
}

impl ProcessBackend {
    /// Detects the cgroup hierarchy and compiles the seccomp filter.
    pub fn new(config: ProcessBackendConfig) -> Result<Self> {
        if !nix::unistd::geteuid().is_root() {
            return Err(BackendError::Unavailable {
                tier: "process",
                reason: "warden needs root to create cgroups and map user ids".into(),
            });
        }
        let hierarchy = Hierarchy::detect()?;
        Self::with_hierarchy(config, hierarchy)
    }

    /// As `new`, on a given hierarchy.
    pub fn with_hierarchy(config: ProcessBackendConfig, hierarchy: Hierarchy) -> Result<Self> {
        let filter = Filter::sandbox_default().map_err(BackendError::io("build the seccomp filter"))?;
        Ok(ProcessBackend { config, hierarchy, filter })
    }

    fn env(req: &LaunchRequest) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = Vec::with_capacity(req.spec.env.len() + 2);
        if !req.spec.env.contains_key("PATH") {
            env.push(("PATH".into(), DEFAULT_PATH.into()));
        }
        if !req.spec.env.contains_key("HOME") {
            env.push(("HOME".into(), "/tmp".into()));
        }
        env.extend(req.spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env
    }
}

impl Backend for ProcessBackend {
    type Workload = ProcessWorkload;

    fn tier(&self) -> Tier {
        Tier::Process
    }

    fn runtime(&self) -> &str {
        "native"
    }

    async fn launch<G: Gate>(&self, req: &LaunchRequest, gate: G) -> Result<ProcessWorkload> {
        let started = Instant::now();
        if let Some(ws) = &req.spec.workspace {
            workspace::check(ws, &self.config.state_dir)?;
        }
        let temp_ws = match &req.spec.workspace {
            Some(_) => None,
            None => Some(workspace::make_temp(&self.config.state_dir, &req.id, self.config.sandbox.host_task_id())?),
        };
        let workspace = temp_ws.clone().or_else(|| req.spec.workspace.clone()).unwrap_or_default();
        tracing::trace!(task = %req.id, "workspace ready");
        let env = Self::env(req);
        let hostname = format!("warden-{}", req.id.short());
        let spec = SandboxSpec {
            argv: &req.spec.command,
            env: &env,
            workspace: &workspace,
            network: req.limits.network,
            hostname: &hostname,
            tmp_size: req.limits.tmp,
            stdin_null: req.stdin_null,
            die_with_supervisor: true,
        };
        let limits = CgroupLimits { cpus: req.limits.cpus, memory: req.limits.memory, pids: req.limits.pids };
        let mut cgroup = None;
        let mut effective = limits;
        let mut gate = gate;
        let spawned = Sandbox::spawn(&self.config.sandbox, &spec, &self.filter, |pid| {
            gate.opened();
            let cg = self.hierarchy.create(req.id.as_str(), &limits).map_err(|e| match e {
                cgroup::Error::Create { ref source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists => {
                    BackendError::Duplicate { id: req.id.to_string() }
                }
                other => other.into(),
            })?;
            let attached = cg.attach(pid);
            cgroup = Some(cg);
            attached?;
            let update = gate.pass()?;
            if update != LimitUpdate::default()
                && let Some(cg) = &cgroup
            {
                effective = cg.update(&update)?;
            }
            Ok::<_, BackendError>(())
        });
        let watched = spawned.and_then(|sandbox| {
            let fd = sandbox.pidfd().try_clone_to_owned().map_err(BackendError::io("duplicate the pidfd"))?;
            let exited = watch(fd).map_err(BackendError::io("watch the pidfd"))?;
            Ok((sandbox, exited))
        });
        let (sandbox, exited, cg) = match (watched, cgroup) {
            (Ok((sandbox, exited)), Some(cg)) => (sandbox, exited, cg),
            (result, cg) => {
                let err = match result {
                    // Cannot happen: `join` ran, or spawn failed before it.
                    Ok(_) => BackendError::io("launch the sandbox")(std::io::Error::other("no cgroup was joined")),
                    Err(e) => e,
                };
                if let Some(cg) = cg {
                    let _ = cg.kill();
                    let _ = cg.remove();
                }
                if let Some(ws) = &temp_ws {
                    let _ = std::fs::remove_dir_all(ws);
                }
                return Err(err);
            }
        };
        tracing::debug!(task = %req.id, pid = sandbox.pid(), "process sandbox started");
        Ok(ProcessWorkload {
            id: req.id.clone(),
            sandbox: Some(sandbox),
            cgroup: cg,
            exited,
            temp_workspace: temp_ws,
            started,
            network: req.limits.network,
            tmp: req.limits.tmp,
            timeout: req.limits.timeout,
            started_limits: effective,
        })
    }
}

/// Registers the pidfd with the reactor. `AsyncFd::new` is deprecated for
/// types that could change their fd; an `OwnedFd` cannot, so it is sound.
#[allow(deprecated)]
fn watch(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    AsyncFd::new(fd)
}

/// A task running in the process sandbox.
#[derive(Debug)]
pub struct ProcessWorkload {
    id: TaskId,
    sandbox: Option<Sandbox>,
    cgroup: Cgroup,
    exited: AsyncFd<OwnedFd>,
    temp_workspace: Option<PathBuf>,
    started: Instant,
    network: warden_core::Network,
    tmp: Bytes,
    timeout: Option<warden_core::HumanDuration>,
    started_limits: CgroupLimits,
}

impl ProcessWorkload {
    /// init's pid on the host.
    pub fn pid(&self) -> Option<i32> {
        self.sandbox.as_ref().map(Sandbox::pid)
    }

    fn limits_of(&self, l: CgroupLimits) -> Limits {
        Limits {
            cpus: l.cpus,
            memory: l.memory,
            pids: l.pids,
            tmp: self.tmp,
            timeout: self.timeout,
            network: self.network,
        }
    }

    /// Removes the cgroup and the temporary workspace. `kill` first when
    /// processes may remain (error paths); after init was reaped its pid
    /// namespace is gone and with it every process of the task.
    fn remove_leftovers(&self, kill: bool) {
        if kill && let Err(e) = self.cgroup.kill() {
            tracing::warn!(task = %self.id, error = %e, "could not kill what is left in the cgroup");
        }
        if let Err(e) = self.cgroup.remove() {
            tracing::warn!(task = %self.id, error = %e, "could not remove the cgroup");
        }
        tracing::trace!(task = %self.id, "cgroup removed");
        // Most tasks leave their scratch workspace empty: try one rmdir first.
        if let Some(ws) = &self.temp_workspace
            && let Err(e) = std::fs::remove_dir(ws).or_else(|_| std::fs::remove_dir_all(ws))
        {
            tracing::warn!(task = %self.id, error = %e, path = %ws.display(), "could not remove the workspace");
        }
    }
}

impl Workload for ProcessWorkload {
    fn id(&self) -> &TaskId {
        &self.id
    }

    async fn wait(&mut self) -> Result<()> {
        loop {
            let mut guard = self.exited.readable().await.map_err(BackendError::io("wait for the sandbox"))?;
            // A pidfd polls readable once the process has exited.
            let mut fds = [nix::poll::PollFd::new(self.exited.get_ref().as_fd(), nix::poll::PollFlags::POLLIN)];
            match nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO) {
                Ok(n) if n > 0 => return Ok(()),
                _ => guard.clear_ready(),
            }
        }
    }

    async fn signal(&self, sig: i32) -> Result<()> {
        match &self.sandbox {
            Some(s) => s.signal(sig).map_err(BackendError::io(format!("send signal {sig}"))),
            None => Ok(()),
        }
    }

    async fn update(&self, update: &LimitUpdate) -> Result<Limits> {
        let l = self.cgroup.update(update)?;
        Ok(self.limits_of(l))
    }

    async fn freeze(&self) -> Result<()> {
        Ok(self.cgroup.freeze()?)
    }

    async fn thaw(&self) -> Result<()> {
        Ok(self.cgroup.thaw()?)
    }

    async fn stats(&self) -> Result<Stats> {
        Ok(self.cgroup.stats()?)
    }

    async fn kill(&self) -> Result<()> {
        if let Some(s) = &self.sandbox {
            s.kill();
        }
        // A frozen task cannot die; thaw so the kill lands. Then make sure
        // nothing of the cgroup survives.
        let _ = self.cgroup.thaw();
        Ok(self.cgroup.kill()?)
    }

    async fn finish(mut self) -> Result<Finished> {
        let status = match self.sandbox.as_mut() {
            Some(s) => s.reap().map_err(BackendError::io("reap the sandbox")),
            None => Ok(TaskExit::Killed),
        };
        self.sandbox = None;
        tracing::trace!(task = %self.id, "sandbox reaped");
        let wall_ms = self.started.elapsed().as_millis() as u64;
        let stats = self.cgroup.stats();
        tracing::trace!(task = %self.id, "stats read");
        self.remove_leftovers(status.is_err());
        tracing::trace!(task = %self.id, "cleaned up");
        let status = status?;
        let stats = stats?;
        let oom = stats.oom_kills > 0;
        let exit = match status {
            TaskExit::Exited(code) => Exit::Exited(code),
            TaskExit::Signaled(libc::SIGKILL) if oom => Exit::OomKilled,
            TaskExit::Signaled(sig) => Exit::Signaled(sig),
            TaskExit::Killed if oom => Exit::OomKilled,
            TaskExit::Killed => Exit::Killed,
        };
        Ok(Finished { exit, usage: Usage::from_stats(&stats, wall_ms) })
    }

    fn limits(&self) -> Limits {
        self.limits_of(self.started_limits)
    }
}

impl Drop for ProcessWorkload {
    fn drop(&mut self) {
        // Dropped without `finish` (an error path): leave nothing behind.
        if let Some(mut s) = self.sandbox.take() {
            s.kill();
            let _ = s.reap();
            self.remove_leftovers(true);
        }
    }
}
