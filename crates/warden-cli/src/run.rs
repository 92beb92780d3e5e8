//! `warden run`: one task, in the foreground, with the exit-code contract.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use std::sync::{Arc, Mutex};

use warden_backend::{
    BackendError, ContainerBackend, ContainerBackendConfig, DEFAULT_KILL_GRACE, Gate, Interrupts, LaunchRequest,
    ProcessBackend, ProcessBackendConfig, open_gate, supervise,
};
use warden_core::{
    Bytes, ExitReason, HumanDuration, LimitUpdate, Limits, MilliCpu, Network, Origin, RunResult, TaskSpec, Tier,
    TierRequest, Timestamp, Usage, exit_code,
};
use warden_policy::{Decision, Defaults, Outcome, Placement, PolicySnapshot, decide};

use crate::policy::PolicySource;

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    warden run -- python3 -c 'print(1)'\n  \
    warden run --memory 256Mi --cpus 0.5 --timeout 30s --workspace ./job -- make test\n  \
    warden run --spec task.yaml --result result.json")]
pub struct RunArgs {
    /// Isolation tier; `auto` lets policy choose.
    #[arg(long, value_parser = parse_tier)]
    tier: Option<TierRequest>,

    /// Runtime within the tier: `runc` or `runsc` (gVisor) for containers.
    /// Policy may choose a stronger one, never a weaker one.
    #[arg(long)]
    runtime: Option<String>,

    /// Image of the container (local only: warden never pulls).
    #[arg(long)]
    image: Option<String>,

    /// CPU limit, a count (`0.5`, `2`) or millicpus (`500m`).
    #[arg(long, value_parser = parse_unit::<MilliCpu>)]
    cpus: Option<MilliCpu>,

    /// Memory limit (`64Mi`, `1Gi`; `M`/`G` are powers of 1000).
    #[arg(long, value_parser = parse_unit::<Bytes>)]
    memory: Option<Bytes>,

    /// Most processes and threads at once.
    #[arg(long)]
    pids: Option<u32>,

    /// Wall-clock limit (`30s`, `5m`, `1h30m`): SIGTERM, a grace, SIGKILL.
    #[arg(long, value_parser = parse_unit::<HumanDuration>)]
    timeout: Option<HumanDuration>,

    /// Size of the task's private /tmp.
    #[arg(long, value_parser = parse_unit::<Bytes>)]
    tmp_size: Option<Bytes>,

    /// Host directory mounted read-write at /workspace (default: a fresh
    /// one, removed afterwards).
    #[arg(long)]
    workspace: Option<PathBuf>,

    /// `none` (default) or `loopback` (a private namespace with only lo).
    #[arg(long, value_parser = parse_network)]
    network: Option<Network>,

    /// Environment variable for the task (repeatable). Nothing of warden's
    /// own environment is passed on.
    #[arg(long = "env", short = 'e', value_name = "K=V", value_parser = parse_kv)]
    env: Vec<(String, String)>,

    /// Tenant the task belongs to.
    #[arg(long)]
    tenant: Option<String>,

    /// Label (repeatable).
    #[arg(long = "label", value_name = "K=V", value_parser = parse_kv)]
    labels: Vec<(String, String)>,

    /// Where the task's code comes from: internal, external or untrusted.
    #[arg(long, value_parser = parse_origin)]
    origin: Option<Origin>,

    /// Task name.
    #[arg(long)]
    name: Option<String>,

    /// Task id (default: generated).
    #[arg(long)]
    id: Option<String>,

    /// Read the task from a YAML or JSON file; flags override its fields.
    #[arg(long)]
    spec: Option<PathBuf>,

    /// Write the result (exit code, reason, tier, limits, usage, times) as
    /// JSON to this file.
    #[arg(long)]
    result: Option<PathBuf>,

    /// Explain on stderr which tier and limits were chosen and why.
    #[arg(long)]
    explain: bool,

    #[command(flatten)]
    policy: PolicySource,

    /// The command and its arguments.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

fn parse_unit<T: std::str::FromStr>(s: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e: T::Err| e.to_string())
}

fn parse_tier(s: &str) -> Result<TierRequest, String> {
    s.parse().map_err(|e: warden_core::SpecError| e.to_string())
}

fn parse_network(s: &str) -> Result<Network, String> {
    s.parse().map_err(|e: warden_core::SpecError| e.to_string())
}

fn parse_origin(s: &str) -> Result<Origin, String> {
    s.parse().map_err(|e: warden_core::SpecError| e.to_string())
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("`{s}` is not of the form KEY=VALUE")),
    }
}

/// Reads `--spec` (if any) and lays the flags over it.
fn build_spec(args: &RunArgs) -> Result<TaskSpec> {
    let mut spec = match &args.spec {
        Some(path) => crate::policy::read_spec(path)?,
        None => TaskSpec::default(),
    };
    if !args.command.is_empty() {
        spec.command = args.command.clone();
    }
    if let Some(t) = args.tier {
        spec.tier = t;
    }
    if let Some(r) = &args.runtime {
        spec.runtime = Some(r.clone());
    }
    if let Some(i) = &args.image {
        spec.image = Some(i.clone());
    }
    let r = &mut spec.resources;
    r.cpus = args.cpus.or(r.cpus);
    r.memory = args.memory.or(r.memory);
    r.pids = args.pids.or(r.pids);
    r.timeout = args.timeout.or(r.timeout);
    r.tmp = args.tmp_size.or(r.tmp);
    if let Some(ws) = &args.workspace {
        spec.workspace = Some(ws.clone());
    }
    if let Some(n) = args.network {
        spec.network = n;
    }
    spec.env.extend(args.env.iter().cloned());
    spec.labels.extend(args.labels.iter().cloned());
    if let Some(t) = &args.tenant {
        spec.tenant = t.clone();
    }
    if let Some(o) = args.origin {
        spec.risk.origin = o;
    }
    if let Some(n) = &args.name {
        spec.name = Some(n.clone());
    }
    if let Some(id) = &args.id {
        spec.id = Some(id.clone().try_into()?);
    }
    Ok(spec.normalize()?)
}

/// Asks the policy set where the task runs. A container placement is
/// checked against the runtimes the engine offers; if it lacks the chosen
/// one (or is down), the decision is made again with what it has. Blocks:
/// call it off the async runtime.
fn place(
    policy: &PolicySource,
    spec: &TaskSpec,
    explain: bool,
    cache: &Path,
    socket: &Path,
) -> Result<(Placement, Decision)> {
    let snapshot =
        PolicySnapshot::load_for_decisions(policy.sources()?, Some(cache)).context("cannot load the policy set")?;
    tracing::trace!(version = %snapshot.version, "policy set loaded");
    let mut signals = crate::policy::live_signals(spec);
    let mut decision = decide(&snapshot, spec, &signals, Defaults::default());
    let mut engine_error = None;
    if decision.placement().is_some_and(|p| p.tier == Tier::Container) {
        let offered = container_runtimes(socket).unwrap_or_else(|e| {
            engine_error = Some(e);
            vec![]
        });
        if decision.placement().is_some_and(|p| !offered.contains(&p.runtime)) {
            let mut available = vec!["process/native".to_owned()];
            available.extend(offered.iter().map(|r| format!("container/{r}")));
            signals.available = warden_policy::Available(available);
            decision = decide(&snapshot, spec, &signals, Defaults::default());
        }
    }
    tracing::trace!("decided");
    if explain {
        for line in decision.explain().lines() {
            eprintln!("warden: {line}");
        }
    }
    let p = match &decision.outcome {
        Outcome::Placed(p) => p.clone(),
        Outcome::Refused { reasons } => {
            let why = engine_error.map(|e| format!(" (the container tier is unavailable: {e})")).unwrap_or_default();
            bail!("refused by policy {}: {}{why}", decision.policy_version, reasons.join("; "))
        }
    };
    if p.tier == Tier::Pod {
        bail!("policy placed the task on the pod tier ({}), which this build of warden cannot run yet", p.runtime);
    }
    Ok((p, decision))
}

/// The container runtimes warden knows that the engine at `socket`
/// offers, or why there are none.
fn container_runtimes(socket: &Path) -> Result<Vec<String>, String> {
    let probe = async { warden_backend::container::probe(socket, std::time::Duration::from_secs(5)).await };
    let info = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?
        .block_on(probe)
        .map_err(|e| e.to_string())?;
    Ok(info.runtimes.into_iter().filter(|r| warden_backend::container::RUNTIMES.contains(&r.as_str())).collect())
}

/// The limits of `spec` tightened by a placement (policy may tighten limits,
/// never loosen them).
fn tightened(mut limits: Limits, p: &Placement) -> Limits {
    limits.cpus = limits.cpus.min(p.cpus);
    limits.memory = limits.memory.min(p.memory);
    limits.pids = limits.pids.min(p.pids);
    limits.network = p.network;
    limits
}

fn error_result(spec: Option<&TaskSpec>, error: &anyhow::Error) -> RunResult {
    let now = Timestamp::now();
    RunResult {
        task_id: spec.and_then(|s| s.id.clone()).unwrap_or_else(warden_core::TaskId::generate),
        tenant: spec.map_or_else(|| warden_core::task::DEFAULT_TENANT.to_owned(), |s| s.tenant.clone()),
        exit_code: exit_code::WARDEN_ERROR,
        reason: ExitReason::Error,
        tier: None,
        tier_history: vec![],
        limits: None,
        usage: Usage::default(),
        started_at: now,
        finished_at: now,
        error: Some(format!("{error:#}")),
    }
}

/// Writes the result file atomically (temporary file, then rename).
fn write_result(path: &Path, result: &RunResult) -> Result<()> {
    let json = serde_json::to_vec_pretty(result)?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("result")));
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(&json)?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

pub async fn run(args: RunArgs, state_dir: &Path, docker_socket: &Path) -> i32 {
    let spec = build_spec(&args);
    let result = match &spec {
        Ok(spec) => execute(&args, spec, state_dir, docker_socket).await,
        Err(e) => Err(anyhow::anyhow!("{e:#}")),
    };
    let result = match result {
        Ok(r) => r,
        Err(e) => error_result(spec.as_ref().ok(), &e),
    };
    if let Some(err) = &result.error {
        eprintln!("warden: error: {err}");
    }
    if let Some(path) = &args.result
        && let Err(e) = write_result(path, &result)
    {
        eprintln!("warden: error: {e:#}");
        return exit_code::WARDEN_ERROR;
    }
    result.exit_code
}

/// Decides on a thread that starts once the sandbox's processes exist (a
/// thread faulting in pages while the sandbox is cloned would slow the
/// clone), and holds the task until the decision permits it.
struct DecisionGate {
    policy: PolicySource,
    spec: TaskSpec,
    explain: bool,
    cache: PathBuf,
    socket: PathBuf,
    requested: Limits,
    decided: Arc<Mutex<Option<Placement>>>,
    thread: Option<std::thread::JoinHandle<Result<Placement>>>,
}

impl DecisionGate {
    fn start(&mut self) {
        if self.thread.is_none() {
            let (policy, spec, explain, cache, socket) =
                (self.policy.clone(), self.spec.clone(), self.explain, self.cache.clone(), self.socket.clone());
            self.thread =
                Some(std::thread::spawn(move || place(&policy, &spec, explain, &cache, &socket).map(|(p, _)| p)));
        }
    }
}

impl Gate for DecisionGate {
    fn opened(&mut self) {
        self.start();
    }

    fn pass(mut self) -> Result<LimitUpdate, BackendError> {
        self.start();
        let placement = self
            .thread
            .take()
            .and_then(|t| t.join().ok())
            .ok_or_else(|| BackendError::Refused("the policy decision was lost".into()))?
            .map_err(|e| BackendError::Refused(format!("{e:#}")))?;
        let limits = tightened(self.requested, &placement);
        let (network, tier) = (placement.network, placement.tier);
        if let Ok(mut s) = self.decided.lock() {
            *s = Some(placement);
        }
        if tier != Tier::Process {
            return Err(BackendError::Superseded(format!("policy chose the {tier} tier")));
        }
        if network != self.requested.network {
            return Err(BackendError::Superseded("policy chose another network".into()));
        }
        Ok(LimitUpdate { cpus: Some(limits.cpus), memory: Some(limits.memory), pids: Some(limits.pids) })
    }
}

/// Runs the task. At the process tier, the policy decision (loading a
/// policy set costs a few milliseconds in a fresh process) runs while the
/// sandbox is being built; the task starts only once the decision permits
/// it, under the limits the decision set. A decision that needs another
/// workload (another network, the container tier) launches that one
/// instead. A task that asks for the container tier is decided first.
async fn execute(args: &RunArgs, spec: &TaskSpec, state_dir: &Path, socket: &Path) -> Result<RunResult> {
    let config = ProcessBackendConfig { state_dir: state_dir.to_owned(), ..Default::default() };
    let requested = config.defaults.resolve(spec);
    let stdin_null = std::io::stdin().is_terminal();
    let mut interrupts = Interrupts::from_os().context("cannot install signal handlers")?;
    let cache = state_dir.join("cache");

    if spec.tier.tier().is_some_and(|t| t > Tier::Process) {
        let (policy, s, explain, cache, sock) =
            (args.policy.clone(), spec.clone(), args.explain, cache.clone(), socket.to_owned());
        let (placement, _) = tokio::task::spawn_blocking(move || place(&policy, &s, explain, &cache, &sock))
            .await
            .context("the policy decision was lost")??;
        return run_container(spec, &placement, requested, state_dir, socket, stdin_null, 1, &mut interrupts).await;
    }

    let backend = ProcessBackend::new(config)?;
    let decided: Arc<Mutex<Option<Placement>>> = Arc::default();
    let gate = DecisionGate {
        policy: args.policy.clone(),
        spec: spec.clone(),
        explain: args.explain,
        cache,
        socket: socket.to_owned(),
        requested,
        decided: decided.clone(),
        thread: None,
    };
    let req = LaunchRequest { id: spec.task_id(), spec: spec.clone(), limits: requested, stdin_null, attempt: 1 };
    let result = supervise(&backend, &req, gate, &mut interrupts, DEFAULT_KILL_GRACE).await;
    // The gate refuses a sandbox built for another placement than the one
    // decided (`Superseded`): run the decided one.
    let placement = decided.lock().ok().and_then(|s| s.clone());
    match placement {
        Some(p) if p.tier == Tier::Container && result.reason == ExitReason::Error => {
            run_container(spec, &p, requested, state_dir, socket, stdin_null, 2, &mut interrupts).await
        }
        Some(p) if p.network != requested.network && result.reason == ExitReason::Error => {
            let mut spec = spec.clone();
            spec.network = p.network;
            let req =
                LaunchRequest { id: spec.task_id(), limits: tightened(requested, &p), spec, stdin_null, attempt: 2 };
            Ok(supervise(&backend, &req, open_gate(), &mut interrupts, DEFAULT_KILL_GRACE).await)
        }
        _ => Ok(result),
    }
}

/// Runs the task in a container on the runtime policy chose.
#[allow(clippy::too_many_arguments)]
async fn run_container(
    spec: &TaskSpec,
    placement: &Placement,
    requested: Limits,
    state_dir: &Path,
    socket: &Path,
    stdin_null: bool,
    attempt: u32,
    interrupts: &mut Interrupts,
) -> Result<RunResult> {
    let config = ContainerBackendConfig {
        socket: socket.to_owned(),
        runtime: placement.runtime.clone(),
        state_dir: state_dir.to_owned(),
        ..Default::default()
    };
    // `place` asked the engine which runtimes it has.
    let backend = ContainerBackend::connect(config)?;
    let req = LaunchRequest {
        id: spec.task_id(),
        spec: spec.clone(),
        limits: tightened(requested, placement),
        stdin_null,
        attempt,
    };
    Ok(supervise(&backend, &req, open_gate(), interrupts, DEFAULT_KILL_GRACE).await)
}
