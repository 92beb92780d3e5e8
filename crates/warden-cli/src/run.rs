//! `warden run`: one task, in the foreground, with the exit-code contract.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use warden_backend::process::LimitDefaults;
use warden_backend::{DEFAULT_KILL_GRACE, Interrupts, LaunchRequest, ProcessBackend, ProcessBackendConfig, supervise};
use warden_core::{
    Bytes, ExitReason, HumanDuration, MilliCpu, Network, Origin, RunResult, TaskSpec, Tier, TierRequest, Timestamp,
    Usage, exit_code,
};

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    warden run -- python3 -c 'print(1)'\n  \
    warden run --memory 256Mi --cpus 0.5 --timeout 30s --workspace ./job -- make test\n  \
    warden run --spec task.yaml --result result.json")]
pub struct RunArgs {
    /// Isolation tier; `auto` lets policy choose.
    #[arg(long, value_parser = parse_tier)]
    tier: Option<TierRequest>,

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
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read spec {}", path.display()))?;
            let origin = path.display().to_string();
            let is_json = path.extension().is_some_and(|e| e == "json");
            let parsed =
                if is_json { TaskSpec::from_json(&text, &origin) } else { TaskSpec::from_yaml(&text, &origin) };
            parsed?
        }
        None => TaskSpec::default(),
    };
    if !args.command.is_empty() {
        spec.command = args.command.clone();
    }
    if let Some(t) = args.tier {
        spec.tier = t;
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

/// Which tier runs the task. Until the policy engine lands, `auto` means
/// the process tier, the only one this build has.
fn choose_tier(spec: &TaskSpec) -> Result<(Tier, String)> {
    match spec.tier.tier() {
        None => Ok((Tier::Process, "auto: the process tier is the only tier of this build".into())),
        Some(Tier::Process) => Ok((Tier::Process, "requested".into())),
        Some(other) => bail!("the {other} tier is not available in this build of warden"),
    }
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

pub async fn run(args: RunArgs, state_dir: &Path) -> i32 {
    let spec = build_spec(&args);
    let result = match &spec {
        Ok(spec) => execute(&args, spec, state_dir).await,
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

async fn execute(args: &RunArgs, spec: &TaskSpec, state_dir: &Path) -> Result<RunResult> {
    let (tier, why) = choose_tier(spec)?;
    let config = ProcessBackendConfig { state_dir: state_dir.to_owned(), ..Default::default() };
    let limits = LimitDefaults::default().resolve(spec);
    if args.explain {
        eprintln!("warden: tier {tier} ({why})");
        eprintln!(
            "warden: limits cpus={} memory={} pids={} tmp={} timeout={} network={}",
            limits.cpus,
            limits.memory,
            limits.pids,
            limits.tmp,
            limits.timeout.map_or("none".to_owned(), |t| t.to_string()),
            match limits.network {
                Network::None => "none",
                Network::Loopback => "loopback",
            }
        );
    }
    let backend = ProcessBackend::new(config)?;
    let req =
        LaunchRequest { id: spec.task_id(), spec: spec.clone(), limits, stdin_null: std::io::stdin().is_terminal() };
    let mut interrupts = Interrupts::from_os().context("cannot install signal handlers")?;
    Ok(supervise(&backend, &req, &mut interrupts, DEFAULT_KILL_GRACE).await)
}
