//! The task spec every part of warden shares: the CLI, the HTTP API and the
//! policy engine read the same `TaskSpec`, from YAML or JSON.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::units::{Bytes, HumanDuration, MilliCpu};

/// Why a task spec was refused. The message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("`{field}`: {message}")]
    Invalid { field: String, message: String },
}

impl SpecError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError::Invalid { field: field.into(), message: message.into() }
    }
}

/// A task's identity: 1–64 of `[A-Za-z0-9._-]`, not starting with `.` or `-`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TaskId(String);

impl TaskId {
    /// A fresh, time-ordered id.
    pub fn generate() -> Self {
        TaskId(uuid::Uuid::now_v7().simple().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A short form for host names and logs.
    pub fn short(&self) -> &str {
        let s = &self.0;
        // Time-ordered ids share their prefix; the tail tells tasks apart.
        &s[s.len().saturating_sub(12)..]
    }
}

/// Checks a name made of `[A-Za-z0-9._-]`, 1..=max long, not starting with `.` or `-`.
fn check_name(field: &str, s: &str, max: usize) -> Result<(), SpecError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if s.is_empty() || s.len() > max {
        return Err(SpecError::invalid(field, format!("must be 1 to {max} characters")));
    }
    if let Some(c) = s.chars().find(|c| !ok_char(*c)) {
        return Err(SpecError::invalid(
            field,
            format!("`{s}` has `{}`; use letters, digits, `.`, `_` and `-`", c.escape_default()),
        ));
    }
    if s.starts_with(['.', '-']) {
        return Err(SpecError::invalid(field, format!("`{s}` must not start with `.` or `-`")));
    }
    Ok(())
}

impl TryFrom<String> for TaskId {
    type Error = SpecError;
    fn try_from(s: String) -> Result<Self, SpecError> {
        check_name("id", &s, 64)?;
        Ok(TaskId(s))
    }
}

impl From<TaskId> for String {
    fn from(id: TaskId) -> String {
        id.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses one of a serde enum's lowercase names, naming the field on error.
fn parse_choice<T: serde::de::DeserializeOwned>(field: &str, s: &str, what: &str) -> Result<T, SpecError> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| SpecError::invalid(field, format!("`{s}` is not {what}")))
}

/// Isolation tiers, weakest first. `Ord` follows strength.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Process,
    Container,
    Pod,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Process, Tier::Container, Tier::Pod];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Process => "process",
            Tier::Container => "container",
            Tier::Pod => "pod",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The tier a task asks for: `auto` lets policy choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TierRequest {
    #[default]
    Auto,
    Process,
    Container,
    Pod,
}

impl TierRequest {
    /// The explicit tier asked for, if any.
    pub fn tier(self) -> Option<Tier> {
        match self {
            TierRequest::Auto => None,
            TierRequest::Process => Some(Tier::Process),
            TierRequest::Container => Some(Tier::Container),
            TierRequest::Pod => Some(Tier::Pod),
        }
    }
}

impl From<Tier> for TierRequest {
    fn from(t: Tier) -> Self {
        match t {
            Tier::Process => TierRequest::Process,
            Tier::Container => TierRequest::Container,
            Tier::Pod => TierRequest::Pod,
        }
    }
}

impl FromStr for TierRequest {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        parse_choice("tier", s, "a tier (use auto, process, container or pod)")
    }
}

/// What network a task gets. Either way it never reaches the host's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// A network namespace with nothing in it, not even a working `lo`.
    #[default]
    None,
    /// A private namespace whose only interface is its own `lo`.
    Loopback,
}

impl FromStr for Network {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        parse_choice("network", s, "a network mode (use none or loopback)")
    }
}

/// Where the task's code came from: the main risk signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Code the platform team owns and reviews.
    #[default]
    Internal,
    /// Code from outside the team, e.g. a partner's or a package.
    External,
    /// Code nobody vouches for: user uploads, generated code.
    Untrusted,
}

impl FromStr for Origin {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        parse_choice("risk.origin", s, "an origin (use internal, external or untrusted)")
    }
}

/// How sensitive the data a task touches is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataClass {
    Public,
    #[default]
    Internal,
    Confidential,
    Restricted,
}

/// Risk hints given by whoever submits the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Risk {
    pub origin: Origin,
    pub data_class: DataClass,
}

/// What a task asks for; unset fields take the backend's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Resources {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<MilliCpu>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<Bytes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Size of the private `/tmp`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tmp: Option<Bytes>,
}

/// A task as a scheduler submits it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaskSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<TaskId>,
    pub tenant: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub command: Vec<String>,
    /// Image for the container and pod tiers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub env: BTreeMap<String, String>,
    /// Host directory mounted read-write at `/workspace`; a fresh one when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace: Option<PathBuf>,
    pub resources: Resources,
    pub network: Network,
    pub labels: BTreeMap<String, String>,
    pub risk: Risk,
    pub restartable: bool,
    pub tier: TierRequest,
    /// A runtime asked for within the tier (`runc`, `runsc`; `gvisor`,
    /// `kata` for pods). Like the tier, policy may raise it to a stronger
    /// one, never lower it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
}

/// Runtimes by tier, weakest first within each tier.
pub const RUNTIMES: [(Tier, &str); 5] = [
    (Tier::Process, "native"),
    (Tier::Container, "runc"),
    (Tier::Container, "runsc"),
    (Tier::Pod, "gvisor"),
    (Tier::Pod, "kata"),
];

/// How strongly a placement isolates: tiers first, then runtimes within a
/// tier (gVisor's `runsc` over `runc`). `None` for an unknown pair.
pub fn strength(tier: Tier, runtime: &str) -> Option<usize> {
    RUNTIMES.iter().position(|(t, r)| *t == tier && *r == runtime)
}

pub const DEFAULT_TENANT: &str = "local";

impl TaskSpec {
    /// Reads a spec from YAML (which includes JSON), naming the field and
    /// position of any error. `origin` names the source in messages.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, SpecError> {
        let parsed = serde_path_to_error::deserialize(yaml_serde::Deserializer::from_str(text));
        parsed.map_err(|e| path_error(origin, e))
    }

    /// Reads a spec from JSON, naming the field and position of any error.
    pub fn from_json(text: &str, origin: &str) -> Result<Self, SpecError> {
        let parsed = serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(text));
        parsed.map_err(|e| path_error(origin, e))
    }

    /// Fills in what may be left out (id, tenant) and checks what serde
    /// cannot: names, the command, env, workspace path, limits.
    pub fn normalize(mut self) -> Result<Self, SpecError> {
        if self.id.is_none() {
            self.id = Some(TaskId::generate());
        }
        if self.tenant.is_empty() {
            self.tenant = DEFAULT_TENANT.to_owned();
        }
        check_name("tenant", &self.tenant, 63)?;
        if let Some(name) = &self.name {
            check_name("name", name, 128)?;
        }
        if self.command.is_empty() {
            return Err(SpecError::invalid("command", "is missing: give the program and its arguments"));
        }
        if self.command[0].is_empty() {
            return Err(SpecError::invalid("command[0]", "is empty"));
        }
        for (i, arg) in self.command.iter().enumerate() {
            if arg.contains('\0') {
                return Err(SpecError::invalid(format!("command[{i}]"), "contains a NUL byte"));
            }
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains(['=', '\0']) {
                return Err(SpecError::invalid(
                    format!("env.{k}"),
                    "a variable name must be non-empty without `=` or NUL",
                ));
            }
            if v.contains('\0') {
                return Err(SpecError::invalid(format!("env.{k}"), "contains a NUL byte"));
            }
        }
        for (k, v) in &self.labels {
            check_label_key(k)?;
            if v.len() > 256 || v.contains('\0') {
                return Err(SpecError::invalid(
                    format!("labels.{k}"),
                    "values are at most 256 characters, without NUL",
                ));
            }
        }
        if let Some(ws) = &self.workspace {
            check_workspace_path(ws)?;
        }
        if let Some(image) = &self.image
            && (image.is_empty() || image.contains(char::is_whitespace))
        {
            return Err(SpecError::invalid("image", format!("`{image}` is not an image reference")));
        }
        if let Some(rt) = &self.runtime {
            let fits = match self.tier.tier() {
                Some(t) => strength(t, rt).is_some(),
                None => RUNTIMES.iter().any(|(_, r)| r == rt),
            };
            if !fits {
                let tier = self.tier.tier().map_or("any", Tier::as_str);
                return Err(SpecError::invalid(
                    "runtime",
                    format!(
                        "`{rt}` is not a runtime of {tier} tier (process: native; container: runc, runsc; pod: gvisor, kata)"
                    ),
                ));
            }
            if self.tier == TierRequest::Auto {
                // A runtime implies its tier.
                let tier = RUNTIMES.iter().find(|(_, r)| r == rt).map(|(t, _)| *t);
                if let Some(t) = tier {
                    self.tier = TierRequest::from(t);
                }
            }
        }
        let r = &self.resources;
        if r.pids == Some(0) {
            return Err(SpecError::invalid("resources.pids", "must be at least 1"));
        }
        if let Some(m) = r.memory
            && m.get() < Bytes::MIB
        {
            return Err(SpecError::invalid("resources.memory", format!("`{m}` is less than the 1Mi minimum")));
        }
        if let Some(t) = r.tmp
            && t.get() < 64 * Bytes::KIB
        {
            return Err(SpecError::invalid("resources.tmp", format!("`{t}` is less than the 64Ki minimum")));
        }
        Ok(self)
    }

    /// The id; `normalize` guarantees one.
    pub fn task_id(&self) -> TaskId {
        self.id.clone().unwrap_or_else(TaskId::generate)
    }
}

fn path_error<E: std::fmt::Display>(origin: &str, e: serde_path_to_error::Error<E>) -> SpecError {
    let path = e.path().to_string();
    let inner = e.into_inner().to_string();
    let message = if path == "." { inner } else { format!("`{path}`: {inner}") };
    SpecError::Parse { origin: origin.to_owned(), message }
}

fn check_label_key(k: &str) -> Result<(), SpecError> {
    let ok = !k.is_empty()
        && k.len() <= 128
        && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    if ok {
        Ok(())
    } else {
        Err(SpecError::invalid(format!("labels.{k}"), "keys are 1 to 128 of letters, digits, `.`, `_`, `-` and `/`"))
    }
}

/// Lexical checks on a workspace path; the backend checks symlinks when it
/// opens it.
pub fn check_workspace_path(ws: &Path) -> Result<(), SpecError> {
    if ws.as_os_str().is_empty() {
        return Err(SpecError::invalid("workspace", "is empty"));
    }
    if ws.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(SpecError::invalid(
            "workspace",
            format!("`{}` contains `..`; give the directory itself", ws.display()),
        ));
    }
    if ws.components().all(|c| matches!(c, Component::RootDir | Component::CurDir)) {
        return Err(SpecError::invalid("workspace", format!("`{}` would expose the whole host", ws.display())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_spec_parses_and_normalizes() {
        let text = r#"
name: nightly-report
command: [python3, report.py, --day, "2026-12-04"]
env: { LANG: C.UTF-8 }
resources: { cpus: 0.5, memory: 256Mi, pids: 64, timeout: 10m }
network: loopback
labels: { team: data }
risk: { origin: external, data_class: confidential }
restartable: true
tier: container
"#;
        let spec = TaskSpec::from_yaml(text, "task.yaml").unwrap().normalize().unwrap();
        assert_eq!(spec.tenant, "local");
        assert!(spec.id.is_some());
        assert_eq!(spec.resources.memory, Some(Bytes::mib(256)));
        assert_eq!(spec.resources.cpus, Some(MilliCpu(500)));
        assert_eq!(spec.network, Network::Loopback);
        assert_eq!(spec.risk.origin, Origin::External);
        assert_eq!(spec.tier, TierRequest::Container);
    }

    #[test]
    fn json_spec_parses() {
        let spec =
            TaskSpec::from_json(r#"{"command":["true"],"tenant":"acme"}"#, "task.json").unwrap().normalize().unwrap();
        assert_eq!(spec.tenant, "acme");
    }

    #[test]
    fn errors_name_the_field() {
        let err = TaskSpec::from_yaml("command: [x]\nresources: { memory: 64X }\n", "t.yaml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("t.yaml") && msg.contains("resources.memory") && msg.contains("`64X`"), "{msg}");

        let err = TaskSpec::from_yaml("command: [x]\nresource: {}\n", "t.yaml").unwrap_err();
        assert!(err.to_string().contains("unknown field `resource`"), "{err}");

        let err = TaskSpec::from_json(r#"{"command":["x"],"resources":{"cpus":"lots"}}"#, "t.json").unwrap_err();
        assert!(err.to_string().contains("resources.cpus"), "{err}");

        let err = TaskSpec::from_yaml("command: [x]\nresources: { timeout: 30 }\n", "t.yaml").unwrap_err();
        assert!(err.to_string().contains("resources.timeout") && err.to_string().contains("missing unit"), "{err}");
    }

    #[test]
    fn semantic_checks_name_the_field() {
        let cases: &[(&str, &str)] = &[
            ("{}", "`command`"),
            ("command: ['']", "`command[0]`"),
            ("command: [x]\ntenant: 'a b'", "`tenant`"),
            ("command: [x]\nid: ../etc", "id"),
            ("command: [x]\nworkspace: /srv/../etc", "`workspace`"),
            ("command: [x]\nworkspace: /", "`workspace`"),
            ("command: [x]\nresources: { pids: 0 }", "`resources.pids`"),
            ("command: [x]\nresources: { memory: 1k }", "`resources.memory`"),
            ("command: [x]\nenv: { 'A=B': c }", "env.A=B"),
            ("command: [x]\nlabels: { 'bad key': c }", "labels.bad key"),
            ("command: [x]\nnetwork: host", "network"),
            ("command: [x]\ntier: vm", "tier"),
            ("command: [x]\nrisk: { origin: space }", "risk.origin"),
        ];
        for (text, field) in cases {
            let err = TaskSpec::from_yaml(text, "t.yaml").and_then(TaskSpec::normalize).unwrap_err();
            assert!(err.to_string().contains(field), "{text:?}: {err} should name {field}");
        }
    }
}
