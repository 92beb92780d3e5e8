//! A full decision (signals given, Rhai rules + Cedar) at 10, 100 and 1,000
//! policies, reported as p50/p99 over many runs on one core:
//! `cargo bench -p warden-policy --bench decide`.
//!
//! The extra policies are tenant-scoped ceilings, as a platform with many
//! tenants would write them: `forbid (principal == Tenant::"tenant-N", …)`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use warden_core::TaskSpec;
use warden_policy::{Defaults, PolicySnapshot, Signals, Source, Sources, decide};

fn set_with(n: usize) -> PolicySnapshot {
    let mut sources = Sources::embedded();
    let shipped: usize = sources.policies.iter().map(|p| p.text.matches("@id(").count()).sum();
    let mut text = String::new();
    for i in 0..n.saturating_sub(shipped) {
        text.push_str(&format!(
            "@id(\"ceiling-{i}\")\nforbid (principal == Tenant::\"tenant-{}\", action == Action::\"run\", resource)\n\
             when {{ context.memory_mib > {} }};\n",
            i % 200,
            4096 + i
        ));
    }
    if !text.is_empty() {
        sources.policies.push(Source { name: "tenants.cedar".into(), text });
    }
    PolicySnapshot::load(sources).unwrap()
}

fn main() {
    let task = TaskSpec {
        id: Some("bench".to_owned().try_into().unwrap()),
        tenant: "tenant-7".into(),
        command: vec!["job".into()],
        ..Default::default()
    }
    .normalize()
    .unwrap();
    let signals = Signals::default();
    println!("{:>9} {:>10} {:>10} {:>10}", "policies", "p50 µs", "p99 µs", "runs");
    for n in [10, 100, 1000] {
        let snap = set_with(n);
        let count = snap.policies.set.policies().count();
        for _ in 0..200 {
            std::hint::black_box(decide(&snap, &task, &signals, Defaults::default()));
        }
        let runs = if n >= 1000 { 2_000 } else { 10_000 };
        let mut times: Vec<f64> = (0..runs)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(decide(&snap, &task, &signals, Defaults::default()));
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let p = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
        println!("{count:>9} {:>10.1} {:>10.1} {runs:>10}", p(0.5), p(0.99));
    }
}
