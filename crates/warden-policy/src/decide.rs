//! The decision: rules propose, Cedar gates, the first permitted candidate
//! wins, and everything is explained. A pure function of the task, the
//! signals and a policy snapshot: no I/O.

use serde::{Deserialize, Serialize};
use warden_core::{Bytes, MilliCpu, Network, TaskSpec, Tier};

use crate::cedar::{self, RequestContext, Verdict};
use crate::rules::{self, Candidate, TaskView, ViewDefaults};
use crate::signals::Signals;
use crate::snapshot::PolicySnapshot;

/// What happened to one candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum Judgement {
    Permitted {
        by: Vec<String>,
    },
    /// Forbidden by these policies (empty: no permit matched).
    Forbidden {
        by: Vec<String>,
    },
    /// A policy failed to evaluate; counted as a forbid.
    Errored {
        policies: Vec<String>,
        message: String,
    },
    /// Weaker than the tier the task asked for.
    BelowRequestedTier,
    /// This node does not offer that tier and runtime.
    Unavailable,
    /// Not evaluated: an earlier candidate won.
    NotTried,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Considered {
    pub candidate: Candidate,
    #[serde(flatten)]
    pub judgement: Judgement,
}

/// The placement chosen, with its effective limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    pub tier: Tier,
    pub runtime: String,
    pub cpus: MilliCpu,
    pub memory: Bytes,
    pub pids: u32,
    pub network: Network,
    pub rule: String,
    pub reactions: Vec<String>,
    pub permitted_by: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Outcome {
    Placed(Placement),
    Refused { reasons: Vec<String> },
}

/// A decision and its explanation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub policy_version: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub rules_fired: Vec<String>,
    pub candidates: Vec<Considered>,
    pub signals: Signals,
}

impl Decision {
    pub fn placement(&self) -> Option<&Placement> {
        match &self.outcome {
            Outcome::Placed(p) => Some(p),
            Outcome::Refused { .. } => None,
        }
    }

    /// A human-readable explanation, one fact a line.
    pub fn explain(&self) -> String {
        let mut out = String::new();
        let push = |out: &mut String, s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        match &self.outcome {
            Outcome::Placed(p) => push(
                &mut out,
                format!(
                    "placed on {} ({}) by rule `{}`, permitted by {}",
                    p.tier,
                    p.runtime,
                    p.rule,
                    p.permitted_by.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
                ),
            ),
            Outcome::Refused { reasons } => push(&mut out, format!("refused: {}", reasons.join("; "))),
        }
        if let Some(p) = self.placement() {
            push(
                &mut out,
                format!(
                    "limits: cpus={} memory={} pids={} network={}",
                    p.cpus,
                    p.memory,
                    p.pids,
                    if p.network == Network::None { "none" } else { "loopback" }
                ),
            );
        }
        for c in &self.candidates {
            let what = format!(
                "{} ({}) from `{}`, cost {}",
                c.candidate.tier, c.candidate.runtime, c.candidate.rule, c.candidate.cost
            );
            let verdict = match &c.judgement {
                Judgement::Permitted { by } => format!("permitted by {}", by.join(", ")),
                Judgement::Forbidden { by } if by.is_empty() => "forbidden: no policy permits it".into(),
                Judgement::Forbidden { by } => format!("forbidden by {}", by.join(", ")),
                Judgement::Errored { policies, message } => {
                    format!("refused because {} failed to evaluate: {message}", policies.join(", "))
                }
                Judgement::BelowRequestedTier => "skipped: weaker than the requested tier".into(),
                Judgement::Unavailable => "skipped: not available on this node".into(),
                Judgement::NotTried => "not tried".into(),
            };
            push(&mut out, format!("  candidate {what}: {verdict}"));
        }
        let s = &self.signals;
        push(
            &mut out,
            format!(
                "signals: risk {} (tenant class {}), cpu pressure {:.2}%, memory pressure {:.2}%, load {:.2}, budget {}",
                s.risk.score,
                s.risk.tenant_class,
                s.load.cpu_pressure as f64 / 100.0,
                s.load.memory_pressure as f64 / 100.0,
                s.load.loadavg_milli as f64 / 1000.0,
                s.cost.budget_left
            ),
        );
        push(&mut out, format!("policy version {}", self.policy_version));
        out
    }
}

/// Limits a spec leaves unset, as the decision sees them.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    pub cpus: MilliCpu,
    pub memory: Bytes,
    pub pids: u32,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults { cpus: MilliCpu(1000), memory: Bytes::mib(1024), pids: 1024 }
    }
}

/// Whether a candidate at the requested tier has a weaker runtime than the
/// one the task asked for (runc when runsc was asked).
fn below_requested_runtime(task: &TaskSpec, c: &Candidate) -> bool {
    let Some(asked) = &task.runtime else { return false };
    match (warden_core::RUNTIMES.iter().find(|(_, r)| r == asked), warden_core::strength(c.tier, &c.runtime)) {
        (Some((tier, _)), Some(got)) => {
            *tier == c.tier && warden_core::strength(*tier, asked).is_some_and(|want| got < want)
        }
        _ => false,
    }
}

/// Decides where `task` runs. Never fails: a rule that errors refuses the
/// task with the error as its reason (fail closed).
pub fn decide(snapshot: &PolicySnapshot, task: &TaskSpec, signals: &Signals, defaults: Defaults) -> Decision {
    let view = TaskView::new(
        task,
        ViewDefaults {
            cpus_milli: i64::from(defaults.cpus.get()),
            memory_bytes: defaults.memory.get() as i64,
            pids: i64::from(defaults.pids),
        },
    );
    let refused = |reasons: Vec<String>, candidates: Vec<Considered>, fired: Vec<String>| Decision {
        policy_version: snapshot.version.clone(),
        outcome: Outcome::Refused { reasons },
        rules_fired: fired,
        candidates,
        signals: signals.clone(),
    };

    let mut proposed = Vec::new();
    for file in &snapshot.rules {
        match rules::propose(&snapshot.engine, file, &view, signals) {
            Ok(c) => proposed.extend(c),
            Err(e) => return refused(vec![format!("rule failed: {e}")], vec![], vec![]),
        }
    }
    // Cheapest first; equal costs keep the rules' order.
    proposed.sort_by_key(|c| c.cost);
    let mut fired: Vec<String> = Vec::new();
    for c in &proposed {
        if !fired.contains(&c.rule) {
            fired.push(c.rule.clone());
        }
    }
    if proposed.is_empty() {
        return refused(vec!["no rule proposed a placement".into()], vec![], fired);
    }

    let requested = task.tier.tier();
    let mut considered: Vec<Considered> = Vec::with_capacity(proposed.len());
    let mut winner: Option<Placement> = None;
    let labels: Vec<String> = task.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    for c in proposed {
        if winner.is_some() {
            considered.push(Considered { candidate: c, judgement: Judgement::NotTried });
            continue;
        }
        if requested.is_some_and(|r| c.tier < r) || below_requested_runtime(task, &c) {
            considered.push(Considered { candidate: c, judgement: Judgement::BelowRequestedTier });
            continue;
        }
        if !signals.available.offers(c.tier, &c.runtime) {
            considered.push(Considered { candidate: c, judgement: Judgement::Unavailable });
            continue;
        }
        let cpus = c.cpus_milli.unwrap_or(view.cpus_milli).min(view.cpus_milli);
        let memory = c.memory_bytes.unwrap_or(view.memory_bytes).min(view.memory_bytes);
        let pids = c.pids.unwrap_or(view.pids).min(view.pids);
        let network = c.network.unwrap_or(task.network);
        let context = RequestContext {
            tier: c.tier.as_str(),
            runtime: &c.runtime,
            cpus_milli: cpus,
            memory_mib: memory / (1 << 20),
            pids,
            network: if network == Network::None { "none" } else { "loopback" },
            rule: &c.rule,
            requested_tier: &view.requested_tier,
            origin: &view.origin,
            data_class: &view.data_class,
            tenant_class: &signals.risk.tenant_class,
            restartable: task.restartable,
            labels: &labels,
            load: &signals.load,
            budget_left: signals.cost.budget_left,
        };
        let judgement = match cedar::authorize(&snapshot.policies, &task.tenant, &view.id, &context) {
            Verdict::Permit { by } => {
                winner = Some(Placement {
                    tier: c.tier,
                    runtime: c.runtime.clone(),
                    cpus: MilliCpu(cpus.clamp(1, i64::from(MilliCpu::MAX.get())) as u32),
                    memory: Bytes(memory.max(1) as u64),
                    pids: pids.clamp(1, i64::from(u32::MAX)) as u32,
                    network,
                    rule: c.rule.clone(),
                    reactions: c.reactions.clone(),
                    permitted_by: by.clone(),
                });
                Judgement::Permitted { by }
            }
            Verdict::Forbid { by } => Judgement::Forbidden { by },
            Verdict::Error { policies, message } => Judgement::Errored { policies, message },
        };
        considered.push(Considered { candidate: c, judgement });
    }
    match winner {
        Some(p) => Decision {
            policy_version: snapshot.version.clone(),
            outcome: Outcome::Placed(p),
            rules_fired: fired,
            candidates: considered,
            signals: signals.clone(),
        },
        None => {
            let reasons = considered
                .iter()
                .map(|c| {
                    let what = format!("{} ({})", c.candidate.tier, c.candidate.runtime);
                    match &c.judgement {
                        Judgement::Forbidden { by } if by.is_empty() => format!("{what}: no policy permits it"),
                        Judgement::Forbidden { by } => format!("{what}: forbidden by {}", by.join(", ")),
                        Judgement::Errored { policies, .. } => {
                            format!("{what}: {} failed to evaluate", policies.join(", "))
                        }
                        Judgement::BelowRequestedTier => format!("{what}: weaker than the requested tier"),
                        Judgement::Unavailable => format!("{what}: not available on this node"),
                        _ => format!("{what}: not permitted"),
                    }
                })
                .collect();
            refused(reasons, considered, fired)
        }
    }
}
