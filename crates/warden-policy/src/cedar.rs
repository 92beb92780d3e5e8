//! The Cedar side: the schema, the policies (each with an id and its source
//! line), strict validation, and one authorization per candidate that
//! fails closed.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, EntityId, EntityTypeName, EntityUid, PolicyId, PolicySet,
    PrincipalConstraint, Request, RestrictedExpression, Schema, ValidationMode, Validator,
};
use miette::Diagnostic;

use crate::error::{Error, Location};
use crate::signals::LoadSignals;

/// A source file: its name (for messages) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub name: String,
    pub text: String,
}

/// The 1-based line of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

/// The first line a diagnostic points at, if any.
fn diag_line(d: &dyn Diagnostic, text: &str) -> Option<usize> {
    d.labels()?.next().map(|l| line_of(text, l.offset()))
}

/// The deepest bracket nesting accepted in a policy or schema file.
pub const MAX_NESTING: usize = 64;
/// The most boolean or unary operators accepted in one policy.
pub const MAX_OPERATORS: usize = 128;

/// Refuses input whose shape would make a recursive parser or evaluator
/// overflow its stack: deep bracket nesting, or one policy with thousands
/// of chained operators. Strings and comments are skipped.
pub fn check_shape(src: &Source) -> Result<(), Error> {
    let fail = |line: usize, message: String| {
        Err(Error::Cedar { at: Location { file: src.name.clone(), line: Some(line) }, message })
    };
    let b = src.text.as_bytes();
    let (mut depth, mut ops, mut line, mut i) = (0usize, 0usize, 1usize, 0usize);
    while i < b.len() {
        match b[i] {
            b'\n' => line += 1,
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    } else if b[i] == b'\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return fail(line, format!("nested more than {MAX_NESTING} brackets deep"));
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b'&' | b'|' | b'!' | b'-' => {
                ops += 1;
                if ops > MAX_OPERATORS * 2 {
                    return fail(line, format!("more than {MAX_OPERATORS} operators in one policy"));
                }
            }
            b';' => ops = 0,
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Where the JSON form of schemas is kept between runs. Cedar parses its
/// JSON schema format several times faster than its human one, which
/// matters for a one-shot `warden run`; entries are named by the hash of
/// the human form, so a stale entry cannot be used.
#[derive(Debug, Clone)]
pub struct SchemaCache {
    pub dir: std::path::PathBuf,
}

impl SchemaCache {
    fn path(&self, schema: &Source) -> std::path::PathBuf {
        use sha2::Digest;
        let hash: String =
            sha2::Sha256::digest(schema.text.as_bytes()).iter().take(12).map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("schema-{hash}.json"))
    }
}

fn parse_schema(schema: &Source, cache: Option<&SchemaCache>) -> Result<Schema, Error> {
    if let Some(json) = cache.and_then(|c| std::fs::read_to_string(c.path(schema)).ok())
        && let Ok(s) = Schema::from_json_str(&json)
    {
        return Ok(s);
    }
    let fail = |line: Option<usize>, message: String| Error::Cedar {
        at: Location { file: schema.name.clone(), line },
        message,
    };
    let (fragment, _warnings) = cedar_policy::SchemaFragment::from_cedarschema_str(&schema.text).map_err(|e| {
        fail(
            diag_line(&e, &schema.text),
            format!("{e}: {}", std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default()),
        )
    })?;
    let parsed = Schema::from_schema_fragments([fragment.clone()]).map_err(|e| fail(None, e.to_string()))?;
    if let (Some(c), Ok(json)) = (cache, fragment.to_json_string()) {
        // Best effort: a cache that cannot be written only costs time.
        let path = c.path(schema);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let written = std::fs::create_dir_all(&c.dir)
            .and_then(|()| std::fs::write(&tmp, json))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    Ok(parsed)
}

/// Validated policies with where each came from.
#[derive(Debug, Clone)]
pub struct Policies {
    pub set: PolicySet,
    pub schema: Schema,
    /// Policy id → "file:line".
    pub origins: BTreeMap<String, String>,
    index: ScopeIndex,
    /// The request's names, taken from the schema once (parsing them per
    /// request would start Cedar's name parser in every fresh process).
    tenant: EntityTypeName,
    task: EntityTypeName,
    run: EntityUid,
    authorizer: Authorizer,
}

/// Policies by principal scope. Cedar evaluates every policy of a set for
/// every request, so a thousand tenant-scoped policies would cost a
/// thousand evaluations per candidate; a tenant's requests only need the
/// policies whose scope can name it.
///
/// A policy scoped `principal == Tenant::"a"`, `principal in Tenant::"a"`
/// or `principal is Tenant in Tenant::"a"` can only match tenant `a`:
/// warden passes no entity hierarchy, so `in` is equality. Every other
/// policy (unscoped, `is Tenant`, or naming another type) is kept for all
/// tenants, which is always safe: a policy whose scope does not match is
/// not applicable, so evaluating it too changes nothing.
#[derive(Debug, Clone, Default)]
struct ScopeIndex {
    /// Policies that may apply to any tenant.
    general: PolicySet,
    /// For each tenant named in a scope: `general` plus its own policies.
    by_tenant: HashMap<String, PolicySet>,
}

impl ScopeIndex {
    fn build(set: &PolicySet, tenant_type: &EntityTypeName) -> Result<Self, String> {
        let mut general = PolicySet::new();
        let mut scoped: HashMap<String, Vec<cedar_policy::Policy>> = HashMap::new();
        for p in set.policies() {
            let named = match p.principal_constraint() {
                PrincipalConstraint::Eq(uid) | PrincipalConstraint::In(uid) | PrincipalConstraint::IsIn(_, uid)
                    if uid.type_name() == tenant_type =>
                {
                    Some(uid.id().unescaped().to_owned())
                }
                _ => None,
            };
            match named {
                Some(tenant) => scoped.entry(tenant).or_default().push(p.clone()),
                None => general.add(p.clone()).map_err(|e| e.to_string())?,
            }
        }
        let mut by_tenant = HashMap::with_capacity(scoped.len());
        for (tenant, own) in scoped {
            let mut set = general.clone();
            for p in own {
                set.add(p).map_err(|e| e.to_string())?;
            }
            by_tenant.insert(tenant, set);
        }
        Ok(ScopeIndex { general, by_tenant })
    }

    fn for_tenant(&self, tenant: &str) -> &PolicySet {
        self.by_tenant.get(tenant).unwrap_or(&self.general)
    }
}

/// Parses the schema and every policy file, names each policy by its
/// `@id` annotation (else `file#n`), and validates strictly.
pub fn load(schema: &Source, files: &[Source], cache: Option<&SchemaCache>) -> Result<Policies, Error> {
    for f in std::iter::once(schema).chain(files) {
        check_shape(f)?;
    }
    let schema_parsed = parse_schema(schema, cache)?;
    let mut set = PolicySet::new();
    let mut origins = BTreeMap::new();
    for f in files {
        let parsed = PolicySet::from_str(&f.text).map_err(|e| Error::Cedar {
            at: Location { file: f.name.clone(), line: diag_line(&e, &f.text) },
            message: e.to_string(),
        })?;
        if parsed.policies().next().is_none() {
            // Most likely a file caught half-written; an empty file has no
            // business in a policy directory either way.
            return Err(Error::Cedar {
                at: Location { file: f.name.clone(), line: None },
                message: "contains no policies".into(),
            });
        }
        for (n, p) in parsed.policies().enumerate() {
            let id = p.annotation("id").map(str::to_owned).unwrap_or_else(|| format!("{}#{n}", f.name));
            let line = f.text.find(&format!("@id(\"{id}\")")).map(|o| line_of(&f.text, o));
            let at = Location { file: f.name.clone(), line };
            if origins.insert(id.clone(), at.to_string()).is_some() {
                return Err(Error::Cedar { at, message: format!("policy id `{id}` is used twice") });
            }
            set.add(p.new_id(PolicyId::new(&id))).map_err(|e| Error::Cedar { at, message: e.to_string() })?;
        }
        if parsed.templates().next().is_some() {
            return Err(Error::Cedar {
                at: Location { file: f.name.clone(), line: None },
                message: "templates are not supported; write static policies".into(),
            });
        }
    }
    let result = Validator::new(schema_parsed.clone()).validate(&set, ValidationMode::Strict);
    if let Some(e) = result.validation_errors().next() {
        let id = e.policy_id().to_string();
        let file = origins.get(&id).cloned().unwrap_or_else(|| "policies".into());
        return Err(Error::Cedar {
            at: Location { file, line: None },
            message: format!("policy `{id}` does not match the schema: {e}"),
        });
    }
    let names = || -> Option<(EntityTypeName, EntityTypeName, EntityUid)> {
        let find = |name: &str| schema_parsed.entity_types().find(|t| t.basename() == name).cloned();
        let run = schema_parsed.actions().find(|a| a.id().unescaped() == "run").cloned()?;
        Some((find("Tenant")?, find("Task")?, run))
    };
    let schema_error =
        |message: String| Error::Cedar { at: Location { file: schema.name.clone(), line: None }, message };
    let Some((tenant, task, run)) = names() else {
        return Err(schema_error(
            "the schema must declare entity types `Tenant` and `Task` and the action `run`".into(),
        ));
    };
    // Requests are built by warden, always of the same shape: check that
    // shape against the schema once here rather than on every request.
    let sample = RequestContext::sample().to_cedar().map_err(|e| schema_error(e.to_string()))?;
    Request::new(
        EntityUid::from_type_name_and_id(tenant.clone(), EntityId::new("t")),
        run.clone(),
        EntityUid::from_type_name_and_id(task.clone(), EntityId::new("t")),
        sample,
        Some(&schema_parsed),
    )
    .map_err(|e| {
        schema_error(format!(
            "the context of action `run` does not match what warden provides: {}",
            context_mismatch(schema).unwrap_or_else(|| e.to_string())
        ))
    })?;
    let index = ScopeIndex::build(&set, &tenant).map_err(schema_error)?;
    Ok(Policies { set, schema: schema_parsed, origins, index, tenant, task, run, authorizer: Authorizer::new() })
}

/// Names the fields that differ between the schema's context of `run` and
/// the one warden builds, when the schema declares it inline.
fn context_mismatch(schema: &Source) -> Option<String> {
    let (fragment, _) = cedar_policy::SchemaFragment::from_cedarschema_str(&schema.text).ok()?;
    let json = fragment.to_json_value().ok()?;
    let declared = json.as_object()?.values().find_map(|ns| {
        ns.pointer("/actions/run/appliesTo/context/attributes")?
            .as_object()
            .map(|a| a.keys().cloned().collect::<Vec<_>>())
    })?;
    let ours = RequestContext::FIELDS;
    let extra: Vec<_> = declared.iter().filter(|f| !ours.contains(&f.as_str())).map(|f| format!("`{f}`")).collect();
    let missing: Vec<_> = ours.iter().filter(|f| !declared.iter().any(|d| d == *f)).map(|f| format!("`{f}`")).collect();
    Some(match (extra.is_empty(), missing.is_empty()) {
        (false, _) => format!("the schema declares {}, which warden does not provide", extra.join(", ")),
        (true, false) => format!("the schema lacks {}, which warden provides", missing.join(", ")),
        (true, true) => "a field has a different type than warden provides (see the shipped schema)".into(),
    })
}

/// The context of one request, as `policies/schema.cedarschema` declares
/// it: the candidate placement and the signals it was chosen from.
#[derive(Debug, Clone)]
pub struct RequestContext<'a> {
    pub tier: &'a str,
    pub runtime: &'a str,
    pub cpus_milli: i64,
    pub memory_mib: i64,
    pub pids: i64,
    pub network: &'a str,
    pub rule: &'a str,
    pub requested_tier: &'a str,
    pub origin: &'a str,
    pub data_class: &'a str,
    pub tenant_class: &'a str,
    pub restartable: bool,
    /// `key=value`.
    pub labels: &'a [String],
    pub load: &'a LoadSignals,
    pub budget_left: i64,
}

impl RequestContext<'_> {
    const FIELDS: [&'static str; 15] = [
        "tier",
        "runtime",
        "cpus_milli",
        "memory_mib",
        "pids",
        "network",
        "rule",
        "requested_tier",
        "origin",
        "data_class",
        "tenant_class",
        "restartable",
        "labels",
        "load",
        "budget_left",
    ];

    fn sample() -> RequestContext<'static> {
        static LOAD: LoadSignals = LoadSignals {
            cpu_pressure: 0,
            memory_pressure: 0,
            io_pressure: 0,
            loadavg_milli: 0,
            memory_available_mib: 0,
            running_process: 0,
            running_container: 0,
            running_pod: 0,
        };
        RequestContext {
            tier: "process",
            runtime: "native",
            cpus_milli: 1,
            memory_mib: 1,
            pids: 1,
            network: "none",
            rule: "r",
            requested_tier: "auto",
            origin: "internal",
            data_class: "internal",
            tenant_class: "standard",
            restartable: false,
            labels: &[],
            load: &LOAD,
            budget_left: 0,
        }
    }

    /// Builds Cedar's context directly, without a trip through JSON.
    pub fn to_cedar(&self) -> Result<Context, Box<cedar_policy::ContextCreationError>> {
        let s = |v: &str| RestrictedExpression::new_string(v.to_owned());
        let n = RestrictedExpression::new_long;
        let l = self.load;
        let load = RestrictedExpression::new_record([
            ("cpu_pressure".to_owned(), n(l.cpu_pressure)),
            ("memory_pressure".to_owned(), n(l.memory_pressure)),
            ("io_pressure".to_owned(), n(l.io_pressure)),
            ("loadavg_milli".to_owned(), n(l.loadavg_milli)),
            ("memory_available_mib".to_owned(), n(l.memory_available_mib)),
            ("running_process".to_owned(), n(l.running_process)),
            ("running_container".to_owned(), n(l.running_container)),
            ("running_pod".to_owned(), n(l.running_pod)),
        ])
        .map_err(|e| Box::new(cedar_policy::ContextCreationError::from(e)))?;
        let values = [
            s(self.tier),
            s(self.runtime),
            n(self.cpus_milli),
            n(self.memory_mib),
            n(self.pids),
            s(self.network),
            s(self.rule),
            s(self.requested_tier),
            s(self.origin),
            s(self.data_class),
            s(self.tenant_class),
            RestrictedExpression::new_bool(self.restartable),
            RestrictedExpression::new_set(self.labels.iter().map(|v| s(v))),
            load,
            n(self.budget_left),
        ];
        Context::from_pairs(Self::FIELDS.iter().map(|f| (*f).to_owned()).zip(values)).map_err(Box::new)
    }
}

/// The answer for one candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Permit {
        by: Vec<String>,
    },
    /// Forbidden by these policies, or by none when no permit matched.
    Forbid {
        by: Vec<String>,
    },
    /// A policy failed to evaluate: counted as a forbid.
    Error {
        policies: Vec<String>,
        message: String,
    },
}

/// Authorizes one request against the policies whose scope can match
/// its tenant. Errors of any policy count as a forbid: Cedar skips an
/// erroring policy, and a skipped forbid must not open a door.
pub fn authorize(p: &Policies, tenant: &str, task: &str, context: &RequestContext<'_>) -> Verdict {
    authorize_in(p, p.index.for_tenant(tenant), tenant, task, context)
}

/// [`authorize`] against every policy of the set: the reference the scope
/// index is proven against.
#[cfg(test)]
fn authorize_unindexed(p: &Policies, tenant: &str, task: &str, context: &RequestContext<'_>) -> Verdict {
    authorize_in(p, &p.set, tenant, task, context)
}

fn authorize_in(p: &Policies, set: &PolicySet, tenant: &str, task: &str, context: &RequestContext<'_>) -> Verdict {
    let result = (|| {
        let principal = EntityUid::from_type_name_and_id(p.tenant.clone(), EntityId::new(tenant));
        let resource = EntityUid::from_type_name_and_id(p.task.clone(), EntityId::new(task));
        // The context's shape was checked against the schema at load.
        let request = Request::new(principal, p.run.clone(), resource, context.to_cedar()?, None)?;
        Ok::<_, Box<dyn std::error::Error>>(p.authorizer.is_authorized(&request, set, &Entities::empty()))
    })();
    let response = match result {
        Ok(r) => r,
        Err(e) => {
            return Verdict::Error { policies: vec![], message: format!("the request could not be built: {e}") };
        }
    };
    let d = response.diagnostics();
    let errors: Vec<_> = d.errors().collect();
    // Sorted, so that an explanation does not depend on set order.
    let sorted = |mut v: Vec<String>| {
        v.sort_unstable();
        v
    };
    if !errors.is_empty() {
        return Verdict::Error {
            policies: sorted(
                errors
                    .iter()
                    .map(|e| match e {
                        cedar_policy::AuthorizationError::PolicyEvaluationError(pe) => pe.policy_id().to_string(),
                    })
                    .collect(),
            ),
            message: sorted(errors.iter().map(ToString::to_string).collect()).join("; "),
        };
    }
    let by = sorted(d.reason().map(ToString::to_string).collect());
    match response.decision() {
        CedarDecision::Allow => Verdict::Permit { by },
        CedarDecision::Deny => Verdict::Forbid { by },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small, seeded generator: the corpus is random but reproducible.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len() as u64) as usize]
        }
    }

    const TENANTS: [&str; 12] = ["t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9", "a\"b", "nobody"];
    const TIERS: [&str; 3] = ["process", "container", "pod"];
    const RUNTIMES: [&str; 5] = ["native", "runc", "runsc", "gvisor", "kata"];
    const ORIGINS: [&str; 3] = ["internal", "external", "untrusted"];

    fn random_condition(r: &mut Rng) -> String {
        match r.below(200) {
            0 => format!("context.memory_mib > {}", r.below(4096)),
            1 => format!("context.tier == \"{}\"", r.pick(&TIERS)),
            2 => format!("context.runtime != \"{}\"", r.pick(&RUNTIMES)),
            3 => format!("context.origin == \"{}\"", r.pick(&ORIGINS)),
            4 => format!("context.labels.contains(\"team=t{}\")", r.below(4)),
            5 => format!("context.load.cpu_pressure >= {}", r.below(10_000)),
            6 => "context.restartable".into(),
            // Overflows for large inputs: an evaluation error, fail closed.
            7 => format!("context.cpus_milli * {} > 0", i64::MAX / (1 + r.below(4000) as i64)),
            8..=100 => format!("context.pids < {} || context.budget_left > {}", r.below(2048), r.below(100)),
            _ => format!("context.memory_mib <= {}", r.below(8192)),
        }
    }

    fn random_policies(r: &mut Rng, n: usize) -> String {
        let mut text = String::new();
        for i in 0..n {
            let effect = if r.below(8) == 0 { "forbid" } else { "permit" };
            let t = r.pick(&TENANTS[..10]);
            let principal = match r.below(32) {
                0 => "principal".to_owned(),
                1 => "principal is Tenant".to_owned(),
                12..=20 => format!("principal == Tenant::\"{t}\""),
                2..=7 => format!("principal == Tenant::\"{t}\""),
                8..=11 => format!("principal in Tenant::\"{t}\""),
                _ => format!("principal is Tenant in Tenant::\"{t}\""),
            };
            let resource =
                if r.below(10) == 0 { format!("resource == Task::\"task{}\"", r.below(3)) } else { "resource".into() };
            let when = (0..r.below(3)).map(|_| format!(" when {{ {} }}", random_condition(r))).collect::<String>();
            text.push_str(&format!(
                "@id(\"p{i}\")\n{effect} ({principal}, action == Action::\"run\", {resource}){when};\n"
            ));
        }
        text
    }

    #[test]
    fn the_scope_index_gives_the_same_answers_as_evaluating_every_policy() {
        let schema = Source {
            name: "schema.cedarschema".into(),
            text: include_str!("../../../policies/schema.cedarschema").into(),
        };
        let mut r = Rng(0x5eed_1234_abcd_0001);
        let mut checked = 0;
        let mut kinds = [0usize; 3];
        for round in 0..4 {
            let text = random_policies(&mut r, 250);
            let file = Source { name: format!("random{round}.cedar"), text };
            let p = load(&schema, &[file], None).unwrap();
            assert!(p.index.by_tenant.len() >= 9, "the corpus must exercise the index");
            for _ in 0..1_500 {
                let labels: Vec<String> = (0..r.below(3)).map(|_| format!("team=t{}", r.below(4))).collect();
                let load = LoadSignals { cpu_pressure: r.below(10_000) as i64, ..Default::default() };
                let ctx = RequestContext {
                    tier: r.pick(&TIERS),
                    runtime: r.pick(&RUNTIMES),
                    cpus_milli: 1 + r.below(8_000) as i64,
                    memory_mib: 1 + r.below(8_192) as i64,
                    pids: 1 + r.below(4_096) as i64,
                    network: r.pick(&["none", "loopback"]),
                    rule: "r",
                    requested_tier: "auto",
                    origin: r.pick(&ORIGINS),
                    data_class: "internal",
                    tenant_class: "standard",
                    restartable: r.below(2) == 0,
                    labels: &labels,
                    load: &load,
                    budget_left: r.below(200) as i64,
                };
                let tenant = r.pick(&TENANTS);
                let task = format!("task{}", r.below(4));
                let indexed = authorize(&p, tenant, &task, &ctx);
                let full = authorize_unindexed(&p, tenant, &task, &ctx);
                assert_eq!(indexed, full, "tenant {tenant}, task {task}, context {ctx:?}");
                kinds[match full {
                    Verdict::Permit { .. } => 0,
                    Verdict::Forbid { .. } => 1,
                    Verdict::Error { .. } => 2,
                }] += 1;
                checked += 1;
            }
        }
        assert_eq!(checked, 6_000);
        // The corpus must reach every kind of answer, or it proves little.
        assert!(kinds.iter().all(|k| *k > 100), "permit/forbid/error counts {kinds:?}");
    }

    #[test]
    fn a_schema_whose_context_warden_cannot_fill_is_refused() {
        let shipped = include_str!("../../../policies/schema.cedarschema");
        let policy = Source { name: "p.cedar".into(), text: "permit (principal, action, resource);".into() };
        let cases = [
            (shipped.replace("budget_left: Long,", "budget_left: Long, region: String,"), "declares `region`"),
            (shipped.replace("rule: String,", ""), "lacks `rule`"),
            (shipped.replace("pids: Long,", "pids: String,"), "different type"),
        ];
        for (text, needle) in cases {
            let schema = Source { name: "schema.cedarschema".into(), text };
            let err = load(&schema, std::slice::from_ref(&policy), None).unwrap_err().to_string();
            assert!(err.contains("schema.cedarschema") && err.contains(needle), "{err}");
        }
    }
}
