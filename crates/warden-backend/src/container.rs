//! The container tier: a task in a Docker container, created through the
//! Engine API on `runc` or on gVisor's `runsc`.
//!
//! The container gets what the process tier gives a task: no network (the
//! engine's `none` mode: a private namespace with only loopback), a
//! read-only root, `/workspace` read-write, a size-capped `/tmp`, a non-root
//! user, no capabilities, `no-new-privileges`, warden's own seccomp profile,
//! memory (no swap), cpu and pids limits. Nothing else of the host is
//! mounted. Every container is labelled with its task so that it can be
//! found again.
//!
//! warden never pulls: a missing image is an error naming it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerStatsResponse, ContainerUpdateBody, HostConfig, Mount, MountBindOptions,
    MountBindOptionsPropagationEnum, MountTmpfsOptions, MountType, ResourcesUlimits,
};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, InspectContainerOptions, KillContainerOptions,
    RemoveContainerOptions, StatsOptions, WaitContainerOptions,
};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use warden_core::{LimitUpdate, Limits, Stats, TaskId, Tier, Usage};
use warden_linux::cgroup::Hierarchy;
use warden_linux::sandbox::DEFAULT_PATH;

use crate::{Backend, BackendError, Exit, Finished, Gate, LaunchRequest, Result, Workload, workspace};

/// Labels every warden container carries.
pub const LABEL_MANAGED: &str = "io.warden.managed";
pub const LABEL_TASK: &str = "io.warden.task";
pub const LABEL_TENANT: &str = "io.warden.tenant";
pub const LABEL_ATTEMPT: &str = "io.warden.attempt";

/// The container runtimes this tier knows, weakest first.
pub const RUNTIMES: [&str; 2] = ["runc", "runsc"];

/// Configuration of the container tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContainerBackendConfig {
    /// The engine's socket.
    pub socket: PathBuf,
    /// How long one engine call may take before it counts as failed.
    pub api_timeout_secs: u64,
    /// `runc` or `runsc`.
    pub runtime: String,
    /// The image of tasks that name none.
    pub default_image: Option<String>,
    /// Where temporary workspaces live.
    pub state_dir: PathBuf,
    /// The host uid and gid tasks run as when their workspace does not say
    /// otherwise (the same id as the process tier's tasks).
    pub task_id: u32,
    /// Threads gVisor itself needs on top of the task's pids limit (its
    /// sandbox runs ~40 idle; below ~256 in total it breaks).
    pub gvisor_threads: u32,
}

impl Default for ContainerBackendConfig {
    fn default() -> Self {
        ContainerBackendConfig {
            socket: PathBuf::from("/var/run/docker.sock"),
            api_timeout_secs: 30,
            runtime: "runc".into(),
            default_image: None,
            state_dir: PathBuf::from("/var/lib/warden"),
            task_id: warden_linux::sandbox::SandboxConfig::default().host_task_id(),
            gvisor_threads: 256,
        }
    }
}

/// What a node's engine offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EngineInfo {
    pub version: String,
    pub runtimes: Vec<String>,
    pub cgroup_driver: String,
}

/// Connects to the engine at `socket` and asks what it offers.
pub async fn probe(socket: &Path, timeout: Duration) -> Result<EngineInfo> {
    let docker = connect(socket, timeout.as_secs().max(1))?;
    let info = tokio::time::timeout(timeout, docker.info())
        .await
        .map_err(|_| unreachable_engine(socket, "it did not answer in time"))?
        .map_err(|e| unreachable_engine(socket, &e.to_string()))?;
    let mut runtimes: Vec<String> = info.runtimes.unwrap_or_default().into_keys().collect();
    runtimes.sort();
    Ok(EngineInfo {
        version: info.server_version.unwrap_or_default(),
        runtimes,
        cgroup_driver: info.cgroup_driver.map(|d| d.to_string()).unwrap_or_default(),
    })
}

/// A container of warden's, as its labels describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Managed {
    pub container_id: String,
    pub task: String,
    pub tenant: String,
    pub attempt: u32,
    /// The engine's state: `running`, `exited`, `paused`…
    pub state: String,
}

/// Every container warden created on the engine at `socket`, found by its
/// labels (after a restart of the sidecar, say).
pub async fn managed(socket: &Path, timeout: Duration) -> Result<Vec<Managed>> {
    let docker = connect(socket, timeout.as_secs().max(1))?;
    let options = bollard::query_parameters::ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([("label".to_owned(), vec![format!("{LABEL_MANAGED}=true")])])),
        ..Default::default()
    };
    let list = docker.list_containers(Some(options)).await.map_err(|e| engine_error(socket, "list containers", e))?;
    Ok(list
        .into_iter()
        .map(|c| {
            let labels = c.labels.unwrap_or_default();
            let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
            Managed {
                container_id: c.id.unwrap_or_default(),
                task: label(LABEL_TASK),
                tenant: label(LABEL_TENANT),
                attempt: label(LABEL_ATTEMPT).parse().unwrap_or(0),
                state: c.state.map(|s| s.to_string()).unwrap_or_default(),
            }
        })
        .collect())
}

fn connect(socket: &Path, timeout_secs: u64) -> Result<Docker> {
    let path = socket.to_str().ok_or_else(|| unreachable_engine(socket, "the socket path is not UTF-8"))?;
    Docker::connect_with_unix(path, timeout_secs, bollard::API_DEFAULT_VERSION)
        .map_err(|e| unreachable_engine(socket, &e.to_string()))
}

fn unreachable_engine(socket: &Path, why: &str) -> BackendError {
    BackendError::Unavailable {
        tier: "container",
        reason: format!("no Docker engine answers at {}: {why}", socket.display()),
    }
}

/// The container tier on one runtime.
#[derive(Debug)]
pub struct ContainerBackend {
    docker: Docker,
    config: ContainerBackendConfig,
    /// For writing a container's cgroup directly (runsc has no update).
    hierarchy: Option<Hierarchy>,
    seccomp: String,
}

impl ContainerBackend {
    /// Connects to the engine and checks that it offers the runtime.
    pub async fn new(config: ContainerBackendConfig) -> Result<Self> {
        let info = probe(&config.socket, Duration::from_secs(config.api_timeout_secs)).await?;
        if !info.runtimes.contains(&config.runtime) {
            return Err(BackendError::Unavailable {
                tier: "container",
                reason: format!(
                    "the engine at {} has no runtime `{}` (it has: {})",
                    config.socket.display(),
                    config.runtime,
                    info.runtimes.join(", ")
                ),
            });
        }
        Self::connect(config)
    }

    /// Connects without asking the engine anything, for a caller that
    /// already knows it offers the runtime (see [`probe`]).
    pub fn connect(config: ContainerBackendConfig) -> Result<Self> {
        if !RUNTIMES.contains(&config.runtime.as_str()) {
            return Err(BackendError::Unavailable {
                tier: "container",
                reason: format!("unknown runtime `{}` (known: {})", config.runtime, RUNTIMES.join(", ")),
            });
        }
        let docker = connect(&config.socket, config.api_timeout_secs)?;
        Ok(ContainerBackend {
            docker,
            hierarchy: Hierarchy::detect().ok(),
            seccomp: warden_linux::seccomp::oci_profile().to_string(),
            config,
        })
    }

    fn host_config(&self, limits: &Limits, workspace: &Path) -> HostConfig {
        let gvisor = self.config.runtime == "runsc";
        let pids = i64::from(limits.pids) + if gvisor { i64::from(self.config.gvisor_threads) } else { 0 };
        let memory = limits.memory.get() as i64;
        let mut ulimits = vec![
            ResourcesUlimits { name: Some("core".into()), soft: Some(0), hard: Some(0) },
            ResourcesUlimits { name: Some("nofile".into()), soft: Some(1024), hard: Some(4096) },
        ];
        if gvisor {
            // gVisor's own threads grow with the task's processes, and a
            // sandbox whose host pids limit is hit dies as a whole. Its
            // kernel enforces RLIMIT_NPROC per sandbox, so the task's limit
            // goes there (a fork past it fails with EAGAIN, as at the other
            // tiers) and the host limit keeps room for gVisor. At runc, the
            // rlimit would count every task of the shared uid: not there.
            let n = i64::from(limits.pids);
            ulimits.push(ResourcesUlimits { name: Some("nproc".into()), soft: Some(n), hard: Some(n) });
        }
        HostConfig {
            runtime: Some(self.config.runtime.clone()),
            // `none` is a private network namespace with only loopback: what
            // both `none` and `loopback` ask for at this tier.
            network_mode: Some("none".into()),
            readonly_rootfs: Some(true),
            mounts: Some(vec![
                Mount {
                    typ: Some(MountType::BIND),
                    source: Some(workspace.display().to_string()),
                    target: Some("/workspace".into()),
                    read_only: Some(false),
                    bind_options: Some(MountBindOptions {
                        propagation: Some(MountBindOptionsPropagationEnum::RPRIVATE),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                // Through the mounts API, not `tmpfs`: that one copies the
                // image's /tmp mode over the one asked for.
                Mount {
                    typ: Some(MountType::TMPFS),
                    target: Some("/tmp".into()),
                    tmpfs_options: Some(MountTmpfsOptions {
                        size_bytes: Some(limits.tmp.get() as i64),
                        mode: Some(0o1777),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ]),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into(), format!("seccomp={}", self.seccomp)]),
            memory: Some(memory),
            memory_swap: Some(memory),
            nano_cpus: Some(i64::from(limits.cpus.get()) * 1_000_000),
            pids_limit: Some(pids),
            ulimits: Some(ulimits),
            ipc_mode: Some("private".into()),
            // The engine's init (tini) as pid 1, as the process tier has its
            // own: it forwards signals and reaps, and the task is not pid
            // 1, so signals keep their default actions.
            init: Some(true),
            privileged: Some(false),
            auto_remove: Some(false),
            ..Default::default()
        }
    }

    /// Mounts the task's view of `workspace` at `<state>/views/<id>`.
    fn mount_view(&self, id: &TaskId, workspace: &Path) -> Result<PathBuf> {
        use std::os::unix::fs::DirBuilderExt;
        let parent = self.config.state_dir.join("views");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&parent)
            .map_err(BackendError::io(format!("create {}", parent.display())))?;
        let at = parent.join(id.as_str());
        std::fs::DirBuilder::new().mode(0o700).create(&at).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => BackendError::Duplicate { id: id.to_string() },
            _ => BackendError::io(format!("create {}", at.display()))(e),
        })?;
        if let Err(e) =
            warden_linux::sandbox::mount_workspace(workspace, &at, self.config.task_id, self.config.runtime == "runsc")
        {
            let _ = std::fs::remove_dir(&at);
            return Err(e.into());
        }
        Ok(at)
    }

    /// Runs the engine calls of a launch; on failure the caller removes
    /// what was created.
    async fn create_and_start(
        &self,
        req: &LaunchRequest,
        name: &str,
        limits: &Limits,
        workspace: &Path,
        image: &str,
    ) -> Result<(Attached, watch::Receiver<Option<Waited>>)> {
        let mut env: Vec<String> = Vec::with_capacity(req.spec.env.len() + 2);
        if !req.spec.env.contains_key("PATH") {
            env.push(format!("PATH={DEFAULT_PATH}"));
        }
        if !req.spec.env.contains_key("HOME") {
            env.push("HOME=/tmp".into());
        }
        env.extend(req.spec.env.iter().map(|(k, v)| format!("{k}={v}")));
        let (entry, args) =
            req.spec.command.split_first().ok_or_else(|| BackendError::NotFound { command: "".into() })?;
        let stdin = !req.stdin_null;
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            entrypoint: Some(vec![entry.clone()]),
            cmd: Some(args.to_vec()),
            env: Some(env),
            user: Some(format!("{0}:{0}", self.config.task_id)),
            working_dir: Some("/workspace".into()),
            hostname: Some(format!("warden-{}", req.id.short())),
            labels: Some(HashMap::from([
                (LABEL_MANAGED.to_owned(), "true".to_owned()),
                (LABEL_TASK.to_owned(), req.id.to_string()),
                (LABEL_TENANT.to_owned(), req.spec.tenant.clone()),
                (LABEL_ATTEMPT.to_owned(), req.attempt.to_string()),
            ])),
            attach_stdin: Some(stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(stdin),
            stdin_once: Some(stdin),
            tty: Some(false),
            network_disabled: Some(true),
            host_config: Some(self.host_config(limits, workspace)),
            ..Default::default()
        };
        let options = CreateContainerOptions { name: Some(name.to_owned()), ..Default::default() };
        self.docker.create_container(Some(options), body).await.map_err(|e| match e {
            DockerError::DockerResponseServerError { status_code: 409, .. } => {
                BackendError::Duplicate { id: req.id.to_string() }
            }
            DockerError::DockerResponseServerError { status_code: 404, .. } => {
                BackendError::ImageMissing { image: image.to_owned() }
            }
            other => engine_error(&self.config.socket, "create the container", other),
        })?;
        // Attach before start so that no output is lost.
        let attach = AttachContainerOptions { stream: true, stdin, stdout: true, stderr: true, ..Default::default() };
        let io =
            self.docker.attach_container(name, Some(attach)).await.map_err(on_engine(&self.config.socket, "attach"))?;
        let attached = Attached::spawn(io, stdin);
        self.docker.start_container(name, None).await.map_err(on_engine(&self.config.socket, "start the container"))?;
        // After the start, "not-running" answers at once for a container
        // that already ended ("next-exit" would wait for an exit that came
        // before the wait reached the engine).
        Ok((attached, self.watch_exit(name)))
    }

    /// Follows the container to its exit on a task of its own.
    fn watch_exit(&self, name: &str) -> watch::Receiver<Option<Waited>> {
        let (tx, rx) = watch::channel(None);
        let docker = self.docker.clone();
        let name = name.to_owned();
        let socket = self.config.socket.clone();
        tokio::spawn(async move {
            let options = WaitContainerOptions { condition: "not-running".into() };
            let mut stream = docker.wait_container(&name, Some(options));
            let waited = match stream.next().await {
                Some(Ok(r)) => Waited::Exited(r.status_code),
                // bollard reports a non-zero exit as an error.
                Some(Err(DockerError::DockerContainerWaitError { code, .. })) => Waited::Exited(code),
                Some(Err(e)) => Waited::Lost(engine_error(&socket, "wait for the container", e).to_string()),
                None => Waited::Lost(format!("the engine at {} closed the wait", socket.display())),
            };
            let _ = tx.send(Some(waited));
        });
        rx
    }
}

/// [`engine_error`] for `map_err`.
fn on_engine<'a>(socket: &'a Path, what: &'a str) -> impl Fn(DockerError) -> BackendError + 'a {
    move |e| engine_error(socket, what, e)
}

fn engine_error(socket: &Path, what: &str, e: DockerError) -> BackendError {
    let detail = match &e {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        DockerError::RequestTimeoutError => "the engine did not answer in time".into(),
        other => other.to_string(),
    };
    BackendError::Engine { what: what.to_owned(), socket: socket.to_owned(), detail }
}

/// How the wait for the container ended.
#[derive(Debug, Clone)]
enum Waited {
    Exited(i64),
    /// The engine went away or refused; the container's fate is unknown.
    Lost(String),
}

/// The copiers of the container's output (and input).
#[derive(Debug)]
struct Attached {
    output: JoinHandle<()>,
    input: Option<JoinHandle<()>>,
}

impl Attached {
    fn spawn(io: bollard::container::AttachContainerResults, stdin: bool) -> Self {
        let mut stream = io.output;
        let output = tokio::spawn(async move {
            let (mut out, mut err) = (tokio::io::stdout(), tokio::io::stderr());
            while let Some(Ok(chunk)) = stream.next().await {
                let written = match chunk {
                    LogOutput::StdOut { message } | LogOutput::Console { message } => out.write_all(&message).await,
                    LogOutput::StdErr { message } => err.write_all(&message).await,
                    LogOutput::StdIn { .. } => Ok(()),
                };
                if written.is_err() {
                    break;
                }
            }
            let _ = out.flush().await;
            let _ = err.flush().await;
        });
        let input = stdin.then(|| {
            let mut sink = io.input;
            tokio::spawn(async move {
                let mut stdin = tokio::io::stdin();
                let _ = tokio::io::copy(&mut stdin, &mut sink).await;
                let _ = sink.shutdown().await;
            })
        });
        Attached { output, input }
    }

    /// Waits (a bounded time) for the output to be written out.
    async fn drain(self) {
        if let Some(input) = self.input {
            input.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.output).await;
    }
}

impl Backend for ContainerBackend {
    type Workload = ContainerWorkload;

    fn tier(&self) -> Tier {
        Tier::Container
    }

    fn runtime(&self) -> &str {
        &self.config.runtime
    }

    async fn launch<G: Gate>(&self, req: &LaunchRequest, gate: G) -> Result<ContainerWorkload> {
        let started = Instant::now();
        let image = req.spec.image.clone().or_else(|| self.config.default_image.clone()).ok_or_else(|| {
            BackendError::Refused("the container tier needs an image: give --image or `image:`".into())
        })?;
        // Never pull: only a local image will do.
        match self.docker.inspect_image(&image).await {
            Ok(_) => {}
            Err(DockerError::DockerResponseServerError { status_code: 404, .. }) => {
                return Err(BackendError::ImageMissing { image });
            }
            Err(e) => return Err(engine_error(&self.config.socket, "look up the image", e)),
        }
        let mut gate = gate;
        gate.opened();
        let update = gate.pass()?;
        let mut limits = req.limits;
        limits.cpus = update.cpus.unwrap_or(limits.cpus);
        limits.memory = update.memory.unwrap_or(limits.memory);
        limits.pids = update.pids.unwrap_or(limits.pids);

        if let Some(ws) = &req.spec.workspace {
            workspace::check(ws, &self.config.state_dir)?;
        }
        let temp_workspace = match &req.spec.workspace {
            Some(_) => None,
            None => Some(workspace::make_temp(&self.config.state_dir, &req.id, self.config.task_id)?),
        };
        let ws = match (&temp_workspace, &req.spec.workspace) {
            (Some(t), _) => t.clone(),
            (None, Some(w)) => w.clone(),
            (None, None) => unreachable!("a workspace is given or made"),
        };
        // The engine bind-mounts a host path and cannot map ids: it gets a
        // view of the workspace mounted by warden, id-mapped as at the
        // process tier, so that the task (a non-root id) can write a
        // workspace someone else owns, and its files stay the owner's.
        let view = match self.mount_view(&req.id, &ws) {
            Ok(v) => v,
            Err(e) => {
                if let Some(t) = &temp_workspace {
                    let _ = std::fs::remove_dir_all(t);
                }
                return Err(e);
            }
        };
        let name = format!("warden-{}", req.id);
        let mut workload = ContainerWorkload {
            id: req.id.clone(),
            name: name.clone(),
            docker: self.docker.clone(),
            socket: self.config.socket.clone(),
            runtime: self.config.runtime.clone(),
            cgroup_root: self.hierarchy.clone(),
            gvisor_threads: self.config.gvisor_threads,
            limits,
            current: Mutex::new(limits),
            view: Some(view.clone()),
            temp_workspace,
            started,
            exit: None,
            attached: None,
            last_stats: Arc::new(Mutex::new(None)),
            sampler: None,
            created: false,
            finished: false,
        };
        match self.create_and_start(req, &name, &limits, &view, &image).await {
            Ok((attached, exit)) => {
                workload.created = true;
                workload.attached = Some(attached);
                workload.exit = Some(exit);
                workload.sampler = Some(workload.spawn_sampler());
                tracing::debug!(task = %req.id, runtime = %self.config.runtime, "container started");
                Ok(workload)
            }
            Err(e) => {
                // Created or not, remove whatever carries the name (a
                // duplicate's container is not ours to remove).
                workload.created = !matches!(e, BackendError::Duplicate { .. });
                workload.cleanup().await;
                workload.finished = true;
                Err(e)
            }
        }
    }
}

/// A task running in a container.
#[derive(Debug)]
pub struct ContainerWorkload {
    id: TaskId,
    name: String,
    docker: Docker,
    socket: PathBuf,
    runtime: String,
    cgroup_root: Option<Hierarchy>,
    gvisor_threads: u32,
    limits: Limits,
    current: Mutex<Limits>,
    /// The workspace view the container binds (unmounted at the end).
    view: Option<PathBuf>,
    temp_workspace: Option<PathBuf>,
    started: Instant,
    exit: Option<watch::Receiver<Option<Waited>>>,
    attached: Option<Attached>,
    last_stats: Arc<Mutex<Option<ContainerStatsResponse>>>,
    sampler: Option<JoinHandle<()>>,
    created: bool,
    finished: bool,
}

impl ContainerWorkload {
    /// The container's name (`warden-<task id>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Keeps the engine's latest stats sample, for the usage at the end.
    fn spawn_sampler(&self) -> JoinHandle<()> {
        let (docker, name, last) = (self.docker.clone(), self.name.clone(), self.last_stats.clone());
        tokio::spawn(async move {
            let mut stream = docker.stats(&name, Some(StatsOptions { stream: true, one_shot: false }));
            while let Some(Ok(s)) = stream.next().await {
                // An exited container reports zeros: keep the last real one.
                if s.cpu_stats.as_ref().and_then(|c| c.cpu_usage.as_ref()).and_then(|u| u.total_usage).unwrap_or(0) > 0
                    && let Ok(mut l) = last.lock()
                {
                    *l = Some(s);
                }
            }
        })
    }

    /// The container's cgroup on the host (`docker/<id>` with the cgroupfs
    /// driver).
    async fn cgroup(&self) -> Result<warden_linux::cgroup::Cgroup> {
        let root = self.cgroup_root.as_ref().ok_or_else(|| BackendError::Unavailable {
            tier: "container",
            reason: "no cgroup hierarchy found on this host".into(),
        })?;
        let info = self
            .docker
            .inspect_container(&self.name, None::<InspectContainerOptions>)
            .await
            .map_err(on_engine(&self.socket, "inspect"))?;
        let id = info.id.unwrap_or_default();
        let parent =
            info.host_config.and_then(|h| h.cgroup_parent).filter(|p| !p.is_empty()).unwrap_or_else(|| "docker".into());
        Ok(root.open_at(&Path::new(parent.trim_start_matches('/')).join(id))?)
    }

    async fn cleanup(&mut self) {
        if let Some(s) = self.sampler.take() {
            s.abort();
        }
        if self.created {
            let options = RemoveContainerOptions { force: true, v: true, ..Default::default() };
            match self.docker.remove_container(&self.name, Some(options)).await {
                Ok(()) | Err(DockerError::DockerResponseServerError { status_code: 404, .. }) => {}
                Err(e) => tracing::warn!(task = %self.id, error = %e, "could not remove the container"),
            }
        }
        if let Some(view) = self.view.take() {
            remove_view(&view);
        }
        if let Some(ws) = &self.temp_workspace
            && let Err(e) = std::fs::remove_dir(ws).or_else(|_| std::fs::remove_dir_all(ws))
        {
            tracing::warn!(task = %self.id, error = %e, path = %ws.display(), "could not remove the workspace");
        }
    }
}

fn remove_view(view: &Path) {
    if let Err(e) = warden_linux::sandbox::unmount_workspace(view).and_then(|()| std::fs::remove_dir(view)) {
        tracing::warn!(error = %e, path = %view.display(), "could not remove the workspace view");
    }
}

fn stats_of(s: &ContainerStatsResponse) -> Stats {
    let cpu = s.cpu_stats.as_ref();
    let usage = cpu.and_then(|c| c.cpu_usage.as_ref());
    let throttling = cpu.and_then(|c| c.throttling_data.as_ref());
    let mem = s.memory_stats.as_ref();
    let ns_to_us = |v: Option<u64>| v.unwrap_or(0) / 1000;
    Stats {
        cpu_usage_us: ns_to_us(usage.and_then(|u| u.total_usage)),
        cpu_user_us: ns_to_us(usage.and_then(|u| u.usage_in_usermode)),
        cpu_system_us: ns_to_us(usage.and_then(|u| u.usage_in_kernelmode)),
        cpu_nr_periods: throttling.and_then(|t| t.periods).unwrap_or(0),
        cpu_nr_throttled: throttling.and_then(|t| t.throttled_periods).unwrap_or(0),
        cpu_throttled_us: ns_to_us(throttling.and_then(|t| t.throttled_time)),
        memory_bytes: mem.and_then(|m| m.usage).unwrap_or(0),
        memory_peak_bytes: mem.and_then(|m| m.max_usage),
        oom_kills: 0,
        memory_limit_hits: mem.and_then(|m| m.failcnt).unwrap_or(0),
        pids: s.pids_stats.as_ref().and_then(|p| p.current).unwrap_or(0),
        pids_limit_hits: 0,
        cpu_pressure: None,
        memory_pressure: None,
        io_pressure: None,
    }
}

impl Workload for ContainerWorkload {
    fn id(&self) -> &TaskId {
        &self.id
    }

    async fn wait(&mut self) -> Result<()> {
        let Some(rx) = self.exit.as_mut() else { return Ok(()) };
        let waited = rx.wait_for(Option::is_some).await.map(|w| w.clone());
        match waited {
            Ok(Some(Waited::Lost(why))) => Err(BackendError::Lost(why)),
            Ok(_) => Ok(()),
            Err(_) => Err(BackendError::Lost("the wait for the container was dropped".into())),
        }
    }

    async fn signal(&self, sig: i32) -> Result<()> {
        let options = KillContainerOptions { signal: sig.to_string() };
        match self.docker.kill_container(&self.name, Some(options)).await {
            // Not running any more: nothing to signal.
            Ok(()) | Err(DockerError::DockerResponseServerError { status_code: 409, .. }) => Ok(()),
            Err(e) => Err(on_engine(&self.socket, "signal the container")(e)),
        }
    }

    async fn update(&self, update: &LimitUpdate) -> Result<Limits> {
        let mut want = *self.current.lock().map_err(|_| BackendError::Lost("limits lock poisoned".into()))?;
        want.cpus = update.cpus.unwrap_or(want.cpus);
        want.memory = update.memory.unwrap_or(want.memory);
        want.pids = update.pids.unwrap_or(want.pids);
        let cgroup = self.cgroup().await?;
        if self.runtime == "runsc" {
            // runsc has no `update`: write the container's host cgroup.
            let host = LimitUpdate { pids: update.pids.map(|p| p.saturating_add(self.gvisor_threads)), ..*update };
            cgroup.update(&host)?;
        } else {
            let memory = update.memory.map(|m| m.get() as i64);
            let body = ContainerUpdateBody {
                memory,
                memory_swap: memory,
                nano_cpus: update.cpus.map(|c| i64::from(c.get()) * 1_000_000),
                pids_limit: update.pids.map(i64::from),
                ..Default::default()
            };
            self.docker
                .update_container(&self.name, body)
                .await
                .map_err(on_engine(&self.socket, "update the container"))?;
        }
        // Read back what the kernel enforces.
        let got = cgroup.limits()?;
        let gvisor = if self.runtime == "runsc" { self.gvisor_threads } else { 0 };
        let effective = Limits { cpus: got.cpus, memory: got.memory, pids: got.pids.saturating_sub(gvisor), ..want };
        if (effective.cpus, effective.memory, effective.pids) != (want.cpus, want.memory, want.pids) {
            return Err(BackendError::NotApplied {
                asked: format!("cpus={} memory={} pids={}", want.cpus, want.memory, want.pids),
                got: format!("cpus={} memory={} pids={}", effective.cpus, effective.memory, effective.pids),
            });
        }
        if let Ok(mut c) = self.current.lock() {
            *c = effective;
        }
        Ok(effective)
    }

    async fn freeze(&self) -> Result<()> {
        self.docker.pause_container(&self.name).await.map_err(on_engine(&self.socket, "pause the container"))
    }

    async fn thaw(&self) -> Result<()> {
        self.docker.unpause_container(&self.name).await.map_err(on_engine(&self.socket, "unpause the container"))
    }

    async fn stats(&self) -> Result<Stats> {
        let mut stream = self.docker.stats(&self.name, Some(StatsOptions { stream: false, one_shot: true }));
        match stream.next().await {
            Some(Ok(s)) => Ok(stats_of(&s)),
            Some(Err(e)) => Err(on_engine(&self.socket, "read the container's stats")(e)),
            None => Err(BackendError::Lost("the engine sent no stats".into())),
        }
    }

    async fn kill(&self) -> Result<()> {
        // A paused container cannot die; unpause so the kill lands.
        let _ = self.docker.unpause_container(&self.name).await;
        self.signal(libc::SIGKILL).await
    }

    async fn finish(mut self) -> Result<Finished> {
        let wall_ms = self.started.elapsed().as_millis() as u64;
        let waited = self.exit.as_ref().and_then(|rx| rx.borrow().clone());
        if let Some(a) = self.attached.take() {
            a.drain().await;
        }
        let inspected = self.docker.inspect_container(&self.name, None::<InspectContainerOptions>).await;
        let last = self.last_stats.lock().ok().and_then(|l| l.clone());
        self.cleanup().await;
        self.finished = true;
        let state = inspected.map_err(on_engine(&self.socket, "inspect the container"))?.state.unwrap_or_default();
        let code = match (state.exit_code, waited) {
            (Some(c), _) if state.running != Some(true) => c,
            (_, Some(Waited::Exited(c))) => c,
            (_, Some(Waited::Lost(why))) => return Err(BackendError::Lost(why)),
            _ => return Err(BackendError::Lost("the container's exit is unknown".into())),
        };
        let oom = state.oom_killed == Some(true);
        let exit = match code {
            _ if oom => Exit::OomKilled,
            // The engine reports a death by signal N as 128 + N.
            c if (129..=128 + 64).contains(&c) => Exit::Signaled((c - 128) as i32),
            c => Exit::Exited(c as i32),
        };
        let mut stats = last.as_ref().map(stats_of).unwrap_or_default();
        // The engine's stats do not count OOM kills; its state does.
        stats.oom_kills = u64::from(oom);
        Ok(Finished { exit, usage: Usage::from_stats(&stats, wall_ms) })
    }

    fn limits(&self) -> Limits {
        self.limits
    }
}

impl Drop for ContainerWorkload {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Dropped without `finish` (an error path): remove the container
        // from a thread of its own, as no runtime may be left to do it.
        if let Some(s) = self.sampler.take() {
            s.abort();
        }
        let (docker, name, ws, view, created) =
            (self.docker.clone(), self.name.clone(), self.temp_workspace.take(), self.view.take(), self.created);
        let cleaner = std::thread::spawn(move || {
            if created && let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                let options = RemoveContainerOptions { force: true, v: true, ..Default::default() };
                let _ = rt.block_on(docker.remove_container(&name, Some(options)));
            }
            if let Some(view) = view {
                remove_view(&view);
            }
            if let Some(ws) = ws {
                let _ = std::fs::remove_dir_all(ws);
            }
        });
        let _ = cleaner.join();
    }
}
