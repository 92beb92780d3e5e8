//! How long the first load of the embedded policy set takes in a fresh
//! process, step by step: `cargo run --release --example load_time [json]`.

#![allow(clippy::expect_used)]
use std::time::Instant;

fn main() {
    let s = warden_policy::Sources::embedded();
    let json = std::env::args().nth(1).as_deref() == Some("json");
    let mut text = String::new();
    for p in &s.policies {
        text.push_str(&p.text);
    }
    let est = if json {
        let set: cedar_policy::PolicySet = text.parse().expect("policies");
        Some(set.to_json().expect("est"))
    } else {
        None
    };
    let t = Instant::now();
    let set: cedar_policy::PolicySet = match est {
        Some(v) => cedar_policy::PolicySet::from_json_value(v).expect("est"),
        None => text.parse().expect("policies"),
    };
    let t1 = t.elapsed();
    let e = warden_policy::rules::engine();
    let t2 = t.elapsed();
    let _r = warden_policy::rules::compile(&e, "p", &s.rules[0].text).expect("compiles");
    let t3 = t.elapsed();
    println!(
        "policies {t1:?} ({}, {} policies), rhai engine {:?}, rhai compile {:?}",
        if json { "json" } else { "text" },
        set.policies().count(),
        t2 - t1,
        t3 - t2
    );
}
