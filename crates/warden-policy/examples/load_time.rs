//! How long the first load of the embedded policy set takes in a fresh
//! process, step by step: `cargo run --release --example load_time [json]`.

#![allow(clippy::expect_used)]
use std::time::Instant;

fn main() {
    let s = warden_policy::Sources::embedded();
    let json = std::env::args().nth(1).as_deref() == Some("json");
    let schema_json = if json {
        let (frag, _) = cedar_policy::SchemaFragment::from_cedarschema_str(&s.schema.text).expect("schema");
        Some(frag.to_json_string().expect("json"))
    } else {
        None
    };
    let t = Instant::now();
    let schema = match &schema_json {
        Some(j) => cedar_policy::Schema::from_json_str(j).expect("schema"),
        None => cedar_policy::Schema::from_cedarschema_str(&s.schema.text).expect("schema").0,
    };
    let t1 = t.elapsed();
    let mut text = String::new();
    for p in &s.policies {
        text.push_str(&p.text);
    }
    let set: cedar_policy::PolicySet = text.parse().expect("policies");
    let t2 = t.elapsed();
    let v = cedar_policy::Validator::new(schema).validate(&set, cedar_policy::ValidationMode::Strict);
    let t3 = t.elapsed();
    let e = warden_policy::rules::engine();
    let t4 = t.elapsed();
    println!(
        "schema {t1:?} ({}), policies {:?}, validate {:?} ({}), rhai engine {:?}",
        if json { "json" } else { "cedar" },
        t2 - t1,
        t3 - t2,
        v.validation_passed(),
        t4 - t3
    );
    drop(e);
}
