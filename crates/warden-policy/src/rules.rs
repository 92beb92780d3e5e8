//! Rhai rules: each `rules/*.rhai` file defines `propose(task, signals)`,
//! which returns candidate placements.
//!
//! Rhai runs sandboxed: limits on operations, call depth, expression
//! depth, string, array and map sizes, and a wall clock; `eval` is
//! disabled and no module resolver, file or network access exists. A rule
//! that fails — or a host function that panics — fails only the decision,
//! which then refuses the task (fail closed).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rhai::{AST, CallFnOptions, Dynamic, Engine, Scope};
use serde::{Deserialize, Serialize};
use warden_core::{Network, TaskSpec, Tier};

use crate::error::{Error, Location};
use crate::signals::Signals;

/// The longest a rule may run for one decision.
pub const RULE_WALL_CLOCK: Duration = Duration::from_millis(50);

/// A placement a rule proposes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Candidate {
    pub tier: Tier,
    pub runtime: String,
    pub cost: i64,
    pub rule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus_milli: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    #[serde(default)]
    pub reactions: Vec<String>,
}

impl Candidate {
    fn check(&self) -> Result<(), String> {
        if warden_core::strength(self.tier, &self.runtime).is_none() {
            return Err(format!("runtime `{}` does not exist at the {} tier", self.runtime, self.tier));
        }
        for (name, v) in [("cpus_milli", self.cpus_milli), ("memory_bytes", self.memory_bytes), ("pids", self.pids)] {
            if v.is_some_and(|v| v <= 0) {
                return Err(format!("`{name}` must be positive"));
            }
        }
        Ok(())
    }
}

/// The task as rules see it: plain values, units resolved.
#[derive(Debug, Clone, Serialize)]
pub struct TaskView {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub command: Vec<String>,
    pub image: String,
    pub origin: String,
    pub data_class: String,
    pub network: String,
    pub restartable: bool,
    pub requested_tier: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub cpus_milli: i64,
    pub memory_bytes: i64,
    pub pids: i64,
    pub timeout_ms: i64,
}

/// Requested limits the spec left unset, for the rules' view.
#[derive(Debug, Clone, Copy)]
pub struct ViewDefaults {
    pub cpus_milli: i64,
    pub memory_bytes: i64,
    pub pids: i64,
}

fn lower<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

impl TaskView {
    pub fn new(t: &TaskSpec, d: ViewDefaults) -> Self {
        let r = &t.resources;
        TaskView {
            id: t.id.as_ref().map(|i| i.to_string()).unwrap_or_default(),
            tenant: t.tenant.clone(),
            name: t.name.clone().unwrap_or_default(),
            command: t.command.clone(),
            image: t.image.clone().unwrap_or_default(),
            origin: lower(&t.risk.origin),
            data_class: lower(&t.risk.data_class),
            network: lower(&t.network),
            restartable: t.restartable,
            requested_tier: lower(&t.tier),
            labels: t.labels.clone(),
            cpus_milli: r.cpus.map_or(d.cpus_milli, |c| i64::from(c.get())),
            memory_bytes: r.memory.map_or(d.memory_bytes, |m| m.get() as i64),
            pids: r.pids.map_or(d.pids, i64::from),
            timeout_ms: r.timeout.map_or(0, |t| t.get().as_millis() as i64),
        }
    }
}

/// One compiled rules file.
#[derive(Debug, Clone)]
pub struct RuleFile {
    pub name: String,
    ast: Arc<AST>,
}

/// The sandboxed Rhai engine.
pub fn engine() -> Engine {
    use rhai::packages::{
        BasicArrayPackage, BasicMapPackage, BasicMathPackage, CorePackage, LogicPackage, MoreStringPackage, Package,
    };
    // Only what rules need: no clock, no blobs, no modules. `new_raw` also
    // spares the start-up cost of registering everything else.
    let mut e = Engine::new_raw();
    e.register_global_module(CorePackage::new().as_shared_module())
        .register_global_module(LogicPackage::new().as_shared_module())
        .register_global_module(BasicArrayPackage::new().as_shared_module())
        .register_global_module(BasicMapPackage::new().as_shared_module())
        .register_global_module(BasicMathPackage::new().as_shared_module())
        .register_global_module(MoreStringPackage::new().as_shared_module());
    e.set_max_operations(200_000)
        .set_max_call_levels(32)
        .set_max_expr_depths(64, 32)
        .set_max_string_size(16 * 1024)
        .set_max_array_size(1024)
        .set_max_map_size(256)
        .set_max_variables(256)
        .set_max_functions(256)
        .set_max_modules(0);
    e.set_fail_on_invalid_map_property(true);
    e.disable_symbol("eval");
    e.on_progress(|ops| {
        // Reading the clock is cheap, but not free: look every 1024 steps.
        if ops % 1024 != 0 {
            return None;
        }
        let late = DEADLINE.with(|d| d.get().is_some_and(|d| Instant::now() > d));
        late.then(|| Dynamic::from("wall-clock limit of the rule exceeded"))
    });
    e.on_print(|s| tracing::info!(target: "warden_policy::rules", "{s}"));
    e.on_debug(|s, _, pos| tracing::debug!(target: "warden_policy::rules", %pos, "{s}"));
    e
}

/// Compiles a rules file; it must define `propose(task, signals)`.
pub fn compile(engine: &Engine, name: &str, source: &str) -> Result<RuleFile, Error> {
    let ast = engine.compile(source).map_err(|e| Error::Rule {
        at: Location { file: name.to_owned(), line: e.1.line() },
        message: e.0.to_string(),
    })?;
    if !ast.iter_functions().any(|f| f.name == "propose" && f.params.len() == 2) {
        return Err(Error::Rule {
            at: Location { file: name.to_owned(), line: None },
            message: "defines no `propose(task, signals)` function".into(),
        });
    }
    Ok(RuleFile { name: name.to_owned(), ast: Arc::new(ast) })
}

/// Runs `propose` of one file under the wall clock.
pub fn propose(engine: &Engine, file: &RuleFile, task: &TaskView, signals: &Signals) -> Result<Vec<Candidate>, Error> {
    let fail =
        |line: Option<usize>, message: String| Error::Rule { at: Location { file: file.name.clone(), line }, message };
    let task = rhai::serde::to_dynamic(task).map_err(|e| fail(None, e.to_string()))?;
    let signals = rhai::serde::to_dynamic(signals).map_err(|e| fail(None, e.to_string()))?;
    DEADLINE.with(|d| d.set(Some(Instant::now() + RULE_WALL_CLOCK)));
    let call = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let opts = CallFnOptions::new().eval_ast(false).rewind_scope(true);
        engine.call_fn_with_options::<Dynamic>(opts, &mut Scope::new(), &file.ast, "propose", (task, signals))
    }));
    DEADLINE.with(|d| d.set(None));
    let out = match call {
        Ok(Ok(v)) => v,
        Ok(Err(err)) => {
            let message = match *err {
                rhai::EvalAltResult::ErrorTerminated(..) => {
                    format!("ran past its wall-clock limit of {} ms", RULE_WALL_CLOCK.as_millis())
                }
                ref other => other.to_string(),
            };
            return Err(fail(err.position().line(), message));
        }
        Err(_) => return Err(fail(None, "a host function panicked".into())),
    };
    let list: Vec<Dynamic> =
        out.into_array().map_err(|t| fail(None, format!("`propose` must return an array of candidates, not {t}")))?;
    list.into_iter()
        .enumerate()
        .map(|(i, d)| {
            let c: Candidate = rhai::serde::from_dynamic(&d).map_err(|e| fail(None, format!("candidate {i}: {e}")))?;
            c.check().map_err(|m| fail(None, format!("candidate {i}: {m}")))?;
            Ok(c)
        })
        .collect()
}

thread_local! {
    /// When the rule running on this thread must stop.
    static DEADLINE: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> TaskView {
        let t = TaskSpec { command: vec!["true".into()], ..Default::default() }.normalize().unwrap();
        TaskView::new(&t, ViewDefaults { cpus_milli: 1000, memory_bytes: 1 << 30, pids: 1024 })
    }

    fn run(src: &str) -> Result<Vec<Candidate>, Error> {
        let e = engine();
        let f = compile(&e, "t.rhai", src)?;
        propose(&e, &f, &view(), &Signals::default())
    }

    #[test]
    fn a_rule_proposes_candidates() {
        let c = run(r#"fn propose(task, signals) { [#{ tier: "process", runtime: "native", cost: 1, rule: "r" }] }"#)
            .unwrap();
        assert_eq!(c[0].tier, Tier::Process);
    }

    #[test]
    fn hostile_rules_fail_cleanly() {
        let cases = [
            ("fn propose(t, s) { loop {} }", "operations"),
            ("fn propose(t, s) { let x = []; loop { x.push(x.len()); } }", "array"),
            ("fn f(n) { f(n + 1) } fn propose(t, s) { f(0) }", "stack overflow"),
            ("fn propose(t, s) { let s = \"x\"; loop { s += s; } }", "string"),
            ("fn propose(t, s) { throw \"nope\" }", "nope"),
            ("fn propose(t, s) { eval(\"1\") }", "eval"),
            ("fn propose(t, s) { 42 }", "array"),
            ("fn propose(t, s) { [#{ tier: \"vm\", runtime: \"x\", cost: 1, rule: \"r\" }] }", "candidate 0"),
            ("fn propose(t, s) { [#{ tier: \"process\", runtime: \"runsc\", cost: 1, rule: \"r\" }] }", "runtime"),
            ("fn propose(t, s) { [#{ tier: \"pod\", runtime: \"gvisor\", cost: 1, rule: \"r\", extra: 1 }] }", "extra"),
            ("fn propose(t, s) { t.no_such_field }", "no_such_field"),
            ("fn propose(t, s) { import \"x\" as y; [] }", "modules"),
        ];
        for (src, needle) in cases {
            let err = run(src).expect_err(src).to_string();
            assert!(err.to_lowercase().contains(needle), "{src}: {err}");
            assert!(err.contains("t.rhai"), "errors name the file: {err}");
        }
    }

    #[test]
    fn compile_errors_name_file_and_line() {
        let err = run("fn propose(t, s) {\n  let = ;\n}").unwrap_err().to_string();
        assert!(err.contains("t.rhai:2"), "{err}");
        let err = run("fn other() { 1 }").unwrap_err().to_string();
        assert!(err.contains("propose"), "{err}");
    }

    #[test]
    fn a_slow_rule_hits_the_wall_clock() {
        // Few operations but slow ones: string building near the size cap.
        let src = "fn propose(t, s) { let n = 0; loop { n += 1; if n > 10000000 { break; } } [] }";
        let e = {
            let mut e = engine();
            e.set_max_operations(0);
            e
        };
        let f = compile(&e, "slow.rhai", src).unwrap();
        let start = Instant::now();
        let err = propose(&e, &f, &view(), &Signals::default()).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(err.to_string().contains("wall-clock limit"), "{err}");
    }
}
