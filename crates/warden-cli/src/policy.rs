//! `warden policy …`: tools for policy authors, and the policy set that
//! `warden run` decides with.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use warden_core::TaskSpec;
use warden_policy::{Available, CorpusTask, Defaults, PolicySnapshot, Signals, Sources, decide, diff, signals};

/// Where the policy set comes from. Without these, the set built into
/// warden (the repository's `policies/` and `rules/`) is used.
#[derive(Debug, Clone, Args)]
pub struct PolicySource {
    /// Directory with `schema.cedarschema`, `*.cedar` and `tests/*.yaml`.
    #[arg(long, value_name = "DIR", env = "WARDEN_POLICIES", requires = "rules")]
    pub policies: Option<PathBuf>,
    /// Directory with `*.rhai` rules.
    #[arg(long, value_name = "DIR", env = "WARDEN_RULES", requires = "policies")]
    pub rules: Option<PathBuf>,
}

impl PolicySource {
    pub fn sources(&self) -> Result<Sources> {
        match (&self.policies, &self.rules) {
            (Some(p), Some(r)) => Ok(Sources::from_dirs(p, r)?),
            _ => Ok(Sources::embedded()),
        }
    }

    /// Loads and validates the set (its tests are `warden policy test`'s).
    pub fn load(&self) -> Result<PolicySnapshot> {
        Ok(PolicySnapshot::load(self.sources()?)?)
    }
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Parse and validate a policy set; errors name file and line.
    Check(CheckArgs),
    /// Dry-run the decision for a task.
    Eval(EvalArgs),
    /// Run the policy set's tests (policies/tests/*.yaml).
    Test(CheckArgs),
    /// Replay a corpus of tasks against two policy sets and show what moves.
    Diff(DiffArgs),
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// JSON lines: each a task spec, or `{"task": {...}, "signals": {...}}`.
    #[arg(long)]
    corpus: PathBuf,
    /// The current set: a directory holding `policies/` and `rules/`, or
    /// `embedded` for the set built into warden.
    #[arg(long, default_value = "embedded")]
    from: String,
    /// The proposed set, likewise.
    #[arg(long)]
    to: String,
    /// Examples shown per move.
    #[arg(long, default_value_t = 3)]
    examples: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn set_at(which: &str) -> Result<PolicySnapshot> {
    let sources = if which == "embedded" {
        Sources::embedded()
    } else {
        let root = Path::new(which);
        Sources::from_dirs(&root.join("policies"), &root.join("rules"))?
    };
    PolicySnapshot::load(sources).with_context(|| format!("policy set `{which}`"))
}

/// Reads a JSON-lines corpus; errors name the line.
fn read_corpus(path: &Path) -> Result<Vec<CorpusTask>> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Entry {
        task: TaskSpec,
        #[serde(default)]
        signals: Signals,
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read corpus {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let origin = format!("{}:{}", path.display(), i + 1);
        let value: serde_json::Value = serde_json::from_str(line).with_context(|| format!("{origin}: not JSON"))?;
        let (task, signals) = if value.get("task").is_some() {
            let e: Entry = serde_json::from_value(value).with_context(|| format!("{origin}: not a corpus entry"))?;
            (e.task, e.signals)
        } else {
            (TaskSpec::from_json(line, &origin)?, Signals::default())
        };
        let mut task = task.normalize().with_context(|| origin.clone())?;
        if task.id.is_none() {
            task.id = Some(format!("line-{}", i + 1).try_into()?);
        }
        let label = match &task.name {
            Some(n) => format!("line {} ({n})", i + 1),
            None => format!("line {}", i + 1),
        };
        out.push(CorpusTask { label, task, signals });
    }
    Ok(out)
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    source: PolicySource,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The task (YAML or JSON).
    #[arg(long)]
    spec: PathBuf,
    /// Signals (YAML or JSON) instead of the ones measured on this node
    /// (which assume a node offering every tier).
    #[arg(long)]
    signals: Option<PathBuf>,
    /// Print the decision as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    source: PolicySource,
}

/// Reads a task spec file (JSON by extension, else YAML).
pub fn read_spec(path: &Path) -> Result<TaskSpec> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read spec {}", path.display()))?;
    let origin = path.display().to_string();
    let spec = if path.extension().is_some_and(|e| e == "json") {
        TaskSpec::from_json(&text, &origin)
    } else {
        TaskSpec::from_yaml(&text, &origin)
    };
    Ok(spec?)
}

/// The signals of `task` on this node now: its risk, the node's load, the
/// default price table.
pub fn live_signals(task: &TaskSpec) -> Signals {
    Signals {
        risk: signals::risk(task, &BTreeMap::new(), 0),
        load: signals::collect_load(),
        cost: Default::default(),
        available: AVAILABLE_HERE.clone(),
    }
}

/// What this build of warden can run on a node, before asking the engine:
/// a decision for a container is checked against the engine's runtimes
/// before it is used (`run::place`), so that process-tier tasks never pay
/// for asking.
pub static AVAILABLE_HERE: std::sync::LazyLock<Available> =
    std::sync::LazyLock::new(|| Available::only(&["process/native", "container/runc", "container/runsc"]));

fn read_signals(path: &Path) -> Result<Signals> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read signals {}", path.display()))?;
    yaml_serde::from_str(&text).with_context(|| format!("{}: not valid signals", path.display()))
}

pub fn run(cmd: PolicyCommand) -> Result<i32> {
    match cmd {
        PolicyCommand::Check(a) => {
            let snap = a.source.load()?;
            println!(
                "ok: policy set {} ({} policies, {} rule files, {} tests)",
                snap.version,
                snap.policies.set.policies().count(),
                snap.rules.len(),
                snap.tests.len()
            );
            Ok(0)
        }
        PolicyCommand::Test(a) => {
            let snap = a.source.load()?;
            let outcomes = snap.run_tests();
            let failed = outcomes.iter().filter(|o| o.failure.is_some()).count();
            for o in &outcomes {
                match &o.failure {
                    None => println!("ok    {} ({})", o.name, o.at),
                    Some(f) => println!("FAIL  {} ({})\n      {}", o.name, o.at, f.replace('\n', "\n      ")),
                }
            }
            println!("\n{} passed, {} failed", outcomes.len() - failed, failed);
            if outcomes.is_empty() {
                bail!("the policy set has no tests");
            }
            Ok(if failed == 0 { 0 } else { 1 })
        }
        PolicyCommand::Diff(a) => {
            let (from, to) = (set_at(&a.from)?, set_at(&a.to)?);
            let corpus = read_corpus(&a.corpus)?;
            eprintln!("replaying {} tasks against {} and {}", corpus.len(), from.version, to.version);
            let report = diff(&from, &to, &corpus, a.examples);
            if a.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
            Ok(0)
        }
        PolicyCommand::Eval(a) => {
            let snap = a.source.load()?;
            let mut task = read_spec(&a.spec)?.normalize()?;
            if task.id.is_none() {
                task.id = Some(warden_core::TaskId::generate());
            }
            // A dry run shows where policy would place the task on a node
            // offering every tier; `available` in --signals narrows it.
            let signals = match &a.signals {
                Some(p) => read_signals(p)?,
                None => Signals { available: Available::default(), ..live_signals(&task) },
            };
            let d = decide(&snap, &task, &signals, Defaults::default());
            if a.json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                print!("{}", d.explain());
            }
            Ok(if d.placement().is_some() { 0 } else { 1 })
        }
    }
}
