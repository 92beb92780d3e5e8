//! Replaying a corpus of tasks against two policy sets: what a reviewer
//! needs to see before promoting a change (shadow mode).

use std::collections::BTreeMap;

use serde::Serialize;
use warden_core::TaskSpec;

use crate::decide::{Decision, Defaults, decide};
use crate::signals::Signals;
use crate::snapshot::PolicySnapshot;

/// Where a decision put a task, in one word.
pub fn outcome_label(d: &Decision) -> String {
    match d.placement() {
        Some(p) => format!("{} ({})", p.tier, p.runtime),
        None => "refused".to_owned(),
    }
}

/// Tasks that moved from one outcome to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Move {
    pub from: String,
    pub to: String,
    pub count: usize,
    /// Labels of the first few tasks that moved (corpus line, name).
    pub examples: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiffReport {
    pub from_version: String,
    pub to_version: String,
    pub tasks: usize,
    pub unchanged: usize,
    /// Largest moves first.
    pub moves: Vec<Move>,
}

/// A task of the corpus with its label for examples.
#[derive(Debug, Clone)]
pub struct CorpusTask {
    pub label: String,
    pub task: TaskSpec,
    pub signals: Signals,
}

/// Decides every task with both sets and groups what changed.
pub fn diff(from: &PolicySnapshot, to: &PolicySnapshot, corpus: &[CorpusTask], examples: usize) -> DiffReport {
    let mut moves: BTreeMap<(String, String), Move> = BTreeMap::new();
    let mut unchanged = 0;
    for t in corpus {
        let a = outcome_label(&decide(from, &t.task, &t.signals, Defaults::default()));
        let b = outcome_label(&decide(to, &t.task, &t.signals, Defaults::default()));
        if a == b {
            unchanged += 1;
            continue;
        }
        let m = moves.entry((a.clone(), b.clone())).or_insert_with(|| Move {
            from: a,
            to: b,
            count: 0,
            examples: Vec::new(),
        });
        m.count += 1;
        if m.examples.len() < examples {
            m.examples.push(t.label.clone());
        }
    }
    let mut moves: Vec<Move> = moves.into_values().collect();
    moves.sort_by(|x, y| y.count.cmp(&x.count).then_with(|| x.from.cmp(&y.from)));
    DiffReport {
        from_version: from.version.clone(),
        to_version: to.version.clone(),
        tasks: corpus.len(),
        unchanged,
        moves,
    }
}

impl DiffReport {
    /// The report as a reviewer reads it.
    pub fn render(&self) -> String {
        let mut out = format!("policy diff {} -> {} over {} tasks\n", self.from_version, self.to_version, self.tasks);
        for m in &self.moves {
            out.push_str(&format!(
                "  {} of {} tasks move {} -> {}\n      e.g. {}\n",
                m.count,
                self.tasks,
                m.from,
                m.to,
                m.examples.join(", ")
            ));
        }
        out.push_str(&format!("  {} of {} tasks unchanged\n", self.unchanged, self.tasks));
        out
    }
}
