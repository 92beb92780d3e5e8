//! The policy engine against the shipped policy set and against bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use warden_core::{TaskSpec, Tier};
use warden_policy::{Decision, Defaults, Judgement, PolicySnapshot, Signals, Source, Sources, decide};

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn shipped() -> Sources {
    Sources::from_dirs(&repo().join("policies"), &repo().join("rules")).unwrap()
}

fn task(yaml: &str) -> TaskSpec {
    let mut t = TaskSpec::from_yaml(yaml, "test").unwrap();
    t.id = Some("t1".to_owned().try_into().unwrap());
    t.normalize().unwrap()
}

fn decide_with(sources: Sources, t: &TaskSpec) -> Decision {
    let snap = PolicySnapshot::load(sources).unwrap();
    decide(&snap, t, &Signals::default(), Defaults::default())
}

#[test]
fn the_shipped_set_loads_and_passes_its_own_tests() {
    let snap = PolicySnapshot::build(shipped()).unwrap();
    let outcomes = snap.run_tests();
    assert!(outcomes.len() >= 9, "{outcomes:?}");
    for o in &outcomes {
        assert!(o.failure.is_none(), "{}: {:?}", o.name, o.failure);
    }
}

#[test]
fn the_embedded_set_is_the_shipped_files() {
    assert_eq!(Sources::embedded(), shipped(), "crates/warden-policy embeds every file of policies/ and rules/");
    assert_eq!(Sources::embedded().version(), shipped().version());
}

#[test]
fn decisions_are_explained() {
    let d = decide_with(shipped(), &task("command: [x]\nrisk: { origin: external }"));
    let p = d.placement().unwrap();
    assert_eq!((p.tier, p.runtime.as_str()), (Tier::Container, "runc"));
    assert_eq!(p.permitted_by, vec!["tenants-may-run"]);
    let refused = &d.candidates[0];
    assert_eq!(refused.candidate.tier, Tier::Process);
    assert_eq!(refused.judgement, Judgement::Forbidden { by: vec!["outside-code-not-in-process-tier".into()] });
    assert!(!d.rules_fired.is_empty());
    let text = d.explain();
    for needle in ["placed on container (runc)", "outside-code-not-in-process-tier", "policy version", "signals: risk"]
    {
        assert!(text.contains(needle), "{text}");
    }
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["outcome"], "placed");
    assert_eq!(json["candidates"][0]["verdict"], "forbidden");
}

fn with_policy(extra: &str) -> Sources {
    let mut s = shipped();
    s.policies.push(Source { name: "extra.cedar".into(), text: extra.into() });
    s
}

#[test]
fn a_policy_that_errors_at_run_time_counts_as_a_forbid() {
    // Overflows for every request: Cedar would skip it and let the permit
    // through; warden refuses instead.
    let src = "@id(\"overflowing-forbid\")\nforbid (principal, action, resource)\nwhen { context.cpus_milli * 9223372036854775807 > 0 };\n";
    let d = decide_with(with_policy(src), &task("command: [x]"));
    assert!(d.placement().is_none(), "{}", d.explain());
    assert!(
        matches!(&d.candidates[0].judgement, Judgement::Errored { policies, .. } if policies == &["overflowing-forbid"])
    );
    assert!(d.explain().contains("failed to evaluate"));
}

#[test]
fn malformed_cedar_is_refused_with_file_and_line() {
    let cases: Vec<(&str, &str)> = vec![
        ("permit (principal, action, resource)\n;\nforbid (principal, action resource);", "extra.cedar:3"),
        ("@id(\"half\")\nforbid (principal, action, resource) when { context.tier ==", "extra.cedar"),
        ("@id(\"typo\")\nforbid (principal, action, resource) when { context.tierr == \"process\" };", "typo"),
        ("@id(\"wrong-type\")\nforbid (principal, action, resource) when { context.pids == \"many\" };", "wrong-type"),
        ("@id(\"tenants-may-run\")\npermit (principal, action, resource);", "used twice"),
    ];
    for (src, needle) in cases {
        let err = PolicySnapshot::load(with_policy(src)).unwrap_err().to_string();
        assert!(err.contains(needle), "{src:?}: {err}");
        assert!(err.contains("extra.cedar"), "errors name the file: {err}");
    }
    // Shapes that would overflow a recursive parser are refused up front.
    let deep = format!(
        "@id(\"deep\")\nforbid (principal, action, resource) when {{ {}true{} }};",
        "(".repeat(5000),
        ")".repeat(5000)
    );
    let err = PolicySnapshot::load(with_policy(&deep)).unwrap_err().to_string();
    assert!(err.contains("extra.cedar:2") && err.contains("nested"), "{err}");
    let chain = format!("@id(\"long\")\nforbid (principal, action, resource) when {{ {}true }};", "!".repeat(50_000));
    let err = PolicySnapshot::load(with_policy(&chain)).unwrap_err().to_string();
    assert!(err.contains("operators"), "{err}");
    // A realistic chain loads and evaluates (a much longer one may hit
    // Cedar's own stack guard, which then fails closed like any error).
    let terms = vec!["context.pids > 0"; 20].join(" && ");
    let long = format!(
        "@id(\"long-ok\")\nforbid (principal, action, resource) when {{ {terms} && context.tier == \"pod\" }};"
    );
    let d = decide_with(with_policy(&long), &task("command: [x]"));
    assert_eq!(d.placement().map(|p| p.tier), Some(Tier::Process), "{}", d.explain());
}

#[test]
fn bad_files_on_disk_are_refused_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let (pol, rules) = (dir.path().join("policies"), dir.path().join("rules"));
    std::fs::create_dir_all(&pol).unwrap();
    std::fs::create_dir_all(&rules).unwrap();
    for s in std::iter::once(&shipped().schema).chain(&shipped().policies) {
        std::fs::write(pol.join(&s.name), &s.text).unwrap();
    }
    std::fs::write(rules.join("placement.rhai"), &shipped().rules[0].text).unwrap();
    assert!(PolicySnapshot::load(Sources::from_dirs(&pol, &rules).unwrap()).is_ok());
    // Editors' swap files and backups are not policies.
    std::fs::write(pol.join(".baseline.cedar.swp"), [0xff, 0xfe]).unwrap();
    std::fs::write(pol.join("baseline.cedar~"), "garbage").unwrap();
    assert!(PolicySnapshot::load(Sources::from_dirs(&pol, &rules).unwrap()).is_ok());

    std::fs::write(pol.join("bad.cedar"), b"permit (principal, action, resource);\n\xff\xfe").unwrap();
    let err = Sources::from_dirs(&pol, &rules).unwrap_err().to_string();
    assert!(err.contains("bad.cedar:2") && err.contains("UTF-8"), "{err}");
    std::fs::write(pol.join("bad.cedar"), vec![b' '; 2 << 20]).unwrap();
    let err = Sources::from_dirs(&pol, &rules).unwrap_err().to_string();
    assert!(err.contains("bad.cedar") && err.contains("limit"), "{err}");
    std::fs::remove_file(pol.join("bad.cedar")).unwrap();

    std::fs::write(rules.join("broken.rhai"), "fn propose(task, signals) {\n  [\n").unwrap();
    let err = PolicySnapshot::load(Sources::from_dirs(&pol, &rules).unwrap()).unwrap_err().to_string();
    assert!(err.contains("broken.rhai"), "{err}");
}

#[test]
fn a_failing_rule_refuses_the_task() {
    let mut s = shipped();
    s.rules.push(Source { name: "angry.rhai".into(), text: "fn propose(task, signals) { throw \"no\" }".into() });
    let d = decide_with(s, &task("command: [x]"));
    match &d.outcome {
        warden_policy::Outcome::Refused { reasons } => assert!(reasons[0].contains("angry.rhai"), "{reasons:?}"),
        other => panic!("a failing rule must refuse, got {other:?}"),
    }
}

#[test]
fn a_failing_policy_test_blocks_the_set() {
    let mut s = shipped();
    s.tests.push(Source {
        name: "wrong.yaml".into(),
        text: "- name: expects the impossible\n  task: { command: [x], risk: { origin: untrusted } }\n  expect: { tier: process }\n".into(),
    });
    let err = PolicySnapshot::build(s).unwrap_err().to_string();
    assert!(err.contains("wrong.yaml") && err.contains("expects the impossible"), "{err}");
}
