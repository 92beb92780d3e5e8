//! The Cedar side: the schema, the policies (each with an id and its source
//! line), strict validation, and one authorization per candidate that
//! fails closed.

use std::collections::BTreeMap;
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, EntityTypeName, EntityUid, PolicyId, PolicySet, Request,
    Schema, ValidationMode, Validator,
};
use miette::Diagnostic;

use crate::error::{Error, Location};

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
    /// The request's names, taken from the schema once (parsing them per
    /// request would start Cedar's name parser in every fresh process).
    tenant: EntityTypeName,
    task: EntityTypeName,
    run: EntityUid,
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
    let Some((tenant, task, run)) = names() else {
        return Err(Error::Cedar {
            at: Location { file: schema.name.clone(), line: None },
            message: "the schema must declare entity types `Tenant` and `Task` and the action `run`".into(),
        });
    };
    Ok(Policies { set, schema: schema_parsed, origins, tenant, task, run })
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

/// Authorizes one request. Errors of any policy count as a forbid: Cedar
/// skips an erroring policy, and a skipped forbid must not open a door.
pub fn authorize(p: &Policies, tenant: &str, task: &str, context: serde_json::Value) -> Verdict {
    let result = (|| {
        let principal = EntityUid::from_type_name_and_id(p.tenant.clone(), cedar_policy::EntityId::new(tenant));
        let resource = EntityUid::from_type_name_and_id(p.task.clone(), cedar_policy::EntityId::new(task));
        let action = p.run.clone();
        let context = Context::from_json_value(context, Some((&p.schema, &action)))?;
        let request = Request::new(principal, action, resource, context, Some(&p.schema))?;
        Ok::<_, Box<dyn std::error::Error>>(Authorizer::new().is_authorized(&request, &p.set, &Entities::empty()))
    })();
    let response = match result {
        Ok(r) => r,
        Err(e) => {
            return Verdict::Error { policies: vec![], message: format!("the request does not fit the schema: {e}") };
        }
    };
    let d = response.diagnostics();
    let errors: Vec<_> = d.errors().collect();
    if !errors.is_empty() {
        return Verdict::Error {
            policies: errors
                .iter()
                .map(|e| match e {
                    cedar_policy::AuthorizationError::PolicyEvaluationError(pe) => pe.policy_id().to_string(),
                })
                .collect(),
            message: errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
        };
    }
    let by = d.reason().map(ToString::to_string).collect();
    match response.decision() {
        CedarDecision::Allow => Verdict::Permit { by },
        CedarDecision::Deny => Verdict::Forbid { by },
    }
}
