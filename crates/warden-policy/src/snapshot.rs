//! A policy snapshot: the schema, policies, rules and tests of one version,
//! loaded and validated as a whole (Cedar parse + strict schema validation,
//! Rhai compile, the set's own tests). A snapshot is immutable; a change on
//! disk builds a new one, and only a complete, valid one is ever used.

use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use warden_core::{TaskSpec, Tier};

use crate::cedar::{self, Policies, Source};
use crate::decide::{Defaults, decide};
use crate::error::{Error, Location};
use crate::rules::{self, RuleFile};
use crate::signals::Signals;

/// The largest policy, rule or test file accepted.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// The files of one policy set, before validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    pub schema: Source,
    pub policies: Vec<Source>,
    pub rules: Vec<Source>,
    pub tests: Vec<Source>,
}

/// Whether a directory entry is a file an editor or ConfigMap leaves
/// around rather than one of ours (swap files, backups, `..data` links).
fn ignored(name: &str) -> bool {
    name.starts_with('.')
        || name.starts_with('#')
        || name.ends_with('~')
        || name.ends_with(".swp")
        || name.ends_with(".tmp")
}

/// Reads the files of `dir` ending in `ext`, sorted by name.
fn read_dir(dir: &Path, ext: &str) -> Result<Vec<Source>, Error> {
    let io = |e: std::io::Error| Error::Io { path: dir.display().to_string(), source: e };
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if ignored(&name) || !name.ends_with(ext) {
            continue;
        }
        let path = entry.path();
        // Follows symlinks, as a ConfigMap's `file -> ..data/file` needs.
        let meta = std::fs::metadata(&path).map_err(|e| Error::Io { path: path.display().to_string(), source: e })?;
        if !meta.is_file() {
            continue;
        }
        out.push(read_source(&path, &name, meta.len())?);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn read_source(path: &Path, name: &str, len: u64) -> Result<Source, Error> {
    if len > MAX_FILE_BYTES {
        return Err(Error::Invalid(format!("{name}: {len} bytes is more than the {MAX_FILE_BYTES}-byte limit")));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::Io { path: path.display().to_string(), source: e })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = cedar::line_of(&String::from_utf8_lossy(&e.as_bytes()[..at]), at);
        Error::Invalid(format!("{name}:{line}: not valid UTF-8"))
    })?;
    Ok(Source { name: name.to_owned(), text })
}

impl Sources {
    /// Reads `policies/` (schema, `*.cedar`, `tests/*.yaml`) and `rules/`.
    pub fn from_dirs(policies: &Path, rules: &Path) -> Result<Self, Error> {
        let schema_path = policies.join("schema.cedarschema");
        let meta = std::fs::metadata(&schema_path)
            .map_err(|e| Error::Io { path: schema_path.display().to_string(), source: e })?;
        Ok(Sources {
            schema: read_source(&schema_path, "schema.cedarschema", meta.len())?,
            policies: read_dir(policies, ".cedar")?,
            rules: read_dir(rules, ".rhai")?,
            tests: read_dir(&policies.join("tests"), ".yaml")?,
        })
    }

    /// The policy set shipped inside the binary (the repository's
    /// `policies/` and `rules/`).
    pub fn embedded() -> Self {
        let src = |name: &str, text: &str| Source { name: name.to_owned(), text: text.to_owned() };
        Sources {
            schema: src("schema.cedarschema", include_str!("../../../policies/schema.cedarschema")),
            policies: vec![
                src("baseline.cedar", include_str!("../../../policies/baseline.cedar")),
                src("ceilings.cedar", include_str!("../../../policies/ceilings.cedar")),
            ],
            rules: vec![src("placement.rhai", include_str!("../../../rules/placement.rhai"))],
            tests: vec![src("defaults.yaml", include_str!("../../../policies/tests/defaults.yaml"))],
        }
    }

    /// The content hash that names this version.
    pub fn version(&self) -> String {
        let mut h = Sha256::new();
        for s in std::iter::once(&self.schema).chain(&self.policies).chain(&self.rules).chain(&self.tests) {
            h.update(s.name.as_bytes());
            h.update([0]);
            h.update((s.text.len() as u64).to_le_bytes());
            h.update(s.text.as_bytes());
        }
        h.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect()
    }
}

/// One policy test: a task and signals, and what must come of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyTest {
    pub name: String,
    pub task: serde_json::Value,
    #[serde(default)]
    pub signals: Signals,
    pub expect: Expect,
    #[serde(skip)]
    pub at: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    #[serde(default)]
    pub tier: Option<Tier>,
    #[serde(default)]
    pub runtime: Option<String>,
    #[serde(default)]
    pub refused: bool,
    /// A policy id that must appear among the reasons or permitters.
    #[serde(default)]
    pub by: Option<String>,
}

/// A validated policy set, ready to decide.
pub struct PolicySnapshot {
    pub version: String,
    pub policies: Policies,
    pub rules: Vec<RuleFile>,
    pub tests: Vec<PolicyTest>,
    pub sources: Sources,
    pub engine: rhai::Engine,
}

impl std::fmt::Debug for PolicySnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicySnapshot").field("version", &self.version).finish_non_exhaustive()
    }
}

/// The outcome of one policy test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestOutcome {
    pub name: String,
    pub at: String,
    pub failure: Option<String>,
}

impl PolicySnapshot {
    /// Loads and validates everything; does not run the tests.
    pub fn load(sources: Sources) -> Result<Self, Error> {
        Self::load_inner(sources, true, None)
    }

    /// As `load`, without reading the test files and with the schema's
    /// parsed form cached in `cache_dir`: what a one-shot decision
    /// (`warden run`) needs, at a lower start-up cost.
    pub fn load_for_decisions(sources: Sources, cache_dir: Option<&Path>) -> Result<Self, Error> {
        let cache = cache_dir.map(|d| cedar::SchemaCache { dir: d.to_owned() });
        Self::load_inner(sources, false, cache.as_ref())
    }

    fn load_inner(sources: Sources, parse_tests: bool, cache: Option<&cedar::SchemaCache>) -> Result<Self, Error> {
        let policies = cedar::load(&sources.schema, &sources.policies, cache)?;
        let engine = rules::engine();
        let rules =
            sources.rules.iter().map(|s| rules::compile(&engine, &s.name, &s.text)).collect::<Result<Vec<_>, _>>()?;
        if rules.is_empty() {
            return Err(Error::Invalid("no rules: at least one rules/*.rhai file must propose placements".into()));
        }
        let mut tests = Vec::new();
        for s in sources.tests.iter().filter(|_| parse_tests) {
            let parsed: Vec<PolicyTest> = yaml_serde::from_str(&s.text).map_err(|e| Error::Test {
                at: Location { file: s.name.clone(), line: e.location().map(|l| l.line()) },
                message: e.to_string(),
            })?;
            if parsed.is_empty() {
                return Err(Error::Test {
                    at: Location { file: s.name.clone(), line: None },
                    message: "contains no tests".into(),
                });
            }
            for mut t in parsed {
                t.at = s.name.clone();
                tests.push(t);
            }
        }
        Ok(PolicySnapshot { version: sources.version(), policies, rules, tests, sources, engine })
    }

    /// Loads, validates and runs the set's own tests: what a reload must
    /// pass before it is swapped in.
    pub fn build(sources: Sources) -> Result<Self, Error> {
        let snap = Self::load(sources)?;
        if let Some(failed) = snap.run_tests().into_iter().find(|t| t.failure.is_some()) {
            return Err(Error::Test {
                at: Location { file: failed.at.clone(), line: None },
                message: format!("test `{}` failed: {}", failed.name, failed.failure.unwrap_or_default()),
            });
        }
        Ok(snap)
    }

    /// Runs every policy test of the set.
    pub fn run_tests(&self) -> Vec<TestOutcome> {
        self.tests
            .iter()
            .map(|t| TestOutcome { name: t.name.clone(), at: t.at.clone(), failure: self.check(t).err() })
            .collect()
    }

    fn check(&self, t: &PolicyTest) -> Result<(), String> {
        let mut task: TaskSpec = serde_json::from_value(t.task.clone()).map_err(|e| format!("task: {e}"))?;
        if task.id.is_none() {
            task.id = Some("policy-test".to_owned().try_into().map_err(|e: warden_core::SpecError| e.to_string())?);
        }
        let task = task.normalize().map_err(|e| e.to_string())?;
        let d = decide(self, &task, &t.signals, Defaults::default());
        let got = match d.placement() {
            Some(p) => format!("{} ({})", p.tier, p.runtime),
            None => "refused".to_owned(),
        };
        let e = &t.expect;
        let ok = match d.placement() {
            None => e.refused,
            Some(p) => {
                !e.refused
                    && e.tier.is_none_or(|tier| tier == p.tier)
                    && e.runtime.as_ref().is_none_or(|r| *r == p.runtime)
            }
        };
        if !ok {
            return Err(format!("expected {}, got {got}\n{}", describe(e), d.explain()));
        }
        if let Some(id) = &e.by {
            let mentioned = d.explain().contains(id.as_str());
            if !mentioned {
                return Err(format!("expected policy `{id}` to decide it\n{}", d.explain()));
            }
        }
        Ok(())
    }
}

fn describe(e: &Expect) -> String {
    if e.refused {
        return "refused".into();
    }
    match (&e.tier, &e.runtime) {
        (Some(t), Some(r)) => format!("{t} ({r})"),
        (Some(t), None) => t.to_string(),
        (None, Some(r)) => format!("runtime {r}"),
        (None, None) => "a placement".into(),
    }
}
