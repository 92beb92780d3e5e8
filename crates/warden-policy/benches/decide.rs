//! A full decision (signals given, Rhai rules + Cedar) at 10, 100 and 1,000
//! policies: `cargo bench -p warden-policy --bench decide`.
//!
//! Criterion runs the measurement (warm-up, sampling, its usual report and
//! regression check against the last run); each decision is also timed on
//! its own so that the tail can be reported: after each size the bench
//! prints p50 and p99 over every timed decision, the figures README quotes.
//!
//! The extra policies are tenant-scoped ceilings, as a platform with many
//! tenants would write them: `forbid (principal == Tenant::"tenant-N", …)`.
//! The task belongs to one of those tenants, so its own policies are
//! evaluated along with the shipped ones.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_debug_implementations)]

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
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

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)].as_secs_f64() * 1e6
}

fn bench(c: &mut Criterion) {
    let task = TaskSpec {
        id: Some("bench".to_owned().try_into().unwrap()),
        tenant: "tenant-7".into(),
        command: vec!["job".into()],
        ..Default::default()
    }
    .normalize()
    .unwrap();
    let signals = Signals::default();
    let mut group = c.benchmark_group("decide");
    let mut table = Vec::new();
    for n in [10, 100, 1000] {
        let snap = set_with(n);
        let count = snap.policies.set.policies().count();
        let placed = decide(&snap, &task, &signals, Defaults::default());
        assert!(placed.placement().is_some(), "the bench must measure a placement: {}", placed.explain());
        let mut samples: Vec<Duration> = Vec::new();
        group.bench_function(BenchmarkId::from_parameter(count), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    std::hint::black_box(decide(&snap, &task, &signals, Defaults::default()));
                    let d = t.elapsed();
                    samples.push(d);
                    total += d;
                }
                total
            });
        });
        samples.sort_unstable();
        table.push((count, percentile(&samples, 0.5), percentile(&samples, 0.99), samples.len()));
    }
    group.finish();
    println!("\n{:>9} {:>10} {:>10} {:>10}", "policies", "p50 µs", "p99 µs", "decisions");
    for (count, p50, p99, runs) in table {
        println!("{count:>9} {p50:>10.1} {p99:>10.1} {runs:>10}");
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
