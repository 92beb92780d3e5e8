//! `warden policy …` and policy decisions inside `warden run`, end to end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{Sandbox, require_root, warden_bin};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn warden(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(warden_bin()).args(args).stdin(Stdio::null()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A copy of the shipped policy set in a temporary directory.
fn policy_copy() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (pol, rules) = (dir.path().join("policies"), dir.path().join("rules"));
    std::fs::create_dir_all(pol.join("tests")).unwrap();
    std::fs::create_dir_all(&rules).unwrap();
    for entry in std::fs::read_dir(repo().join("policies")).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, pol.join(p.file_name().unwrap())).unwrap();
        }
    }
    std::fs::copy(repo().join("policies/tests/defaults.yaml"), pol.join("tests/defaults.yaml")).unwrap();
    std::fs::copy(repo().join("rules/placement.rhai"), rules.join("placement.rhai")).unwrap();
    (dir, pol, rules)
}

#[test]
fn check_and_test_the_shipped_set() {
    let (code, embedded, err) = warden(&["policy", "check"]);
    assert_eq!(code, 0, "{err}");
    assert!(embedded.starts_with("ok: policy set "), "{embedded}");
    let (code, out, _) = warden(&["policy", "test"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("10 passed, 0 failed"), "{out}");
    let (_d, pol, rules) = policy_copy();
    let (code, on_disk, _) =
        warden(&["policy", "check", "--policies", pol.to_str().unwrap(), "--rules", rules.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert_eq!(embedded, on_disk, "the same files give the same version");
}

#[test]
fn check_names_file_and_line_of_a_broken_policy() {
    let (_d, pol, rules) = policy_copy();
    std::fs::write(
        pol.join("broken.cedar"),
        "@id(\"x\")\npermit (principal, action, resource)\nwhen { context.nope };\n",
    )
    .unwrap();
    let (code, _, err) =
        warden(&["policy", "check", "--policies", pol.to_str().unwrap(), "--rules", rules.to_str().unwrap()]);
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("broken.cedar") && err.contains("nope"), "{err}");
}

#[test]
fn a_failing_policy_test_fails_the_command() {
    let (_d, pol, rules) = policy_copy();
    std::fs::write(
        pol.join("tests/mine.yaml"),
        "- name: wishful\n  task: { command: [x], risk: { origin: untrusted } }\n  expect: { tier: process }\n",
    )
    .unwrap();
    let (code, out, _) =
        warden(&["policy", "test", "--policies", pol.to_str().unwrap(), "--rules", rules.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL  wishful") && out.contains("10 passed, 1 failed"), "{out}");
}

#[test]
fn eval_explains_and_speaks_json() {
    let dir = tempfile::tempdir().unwrap();
    let signals = dir.path().join("signals.yaml");
    std::fs::write(&signals, "risk: { score: 90 }\n").unwrap();
    let spec = repo().join("examples/untrusted-snippet.json");
    let (code, out, err) =
        warden(&["policy", "eval", "--spec", spec.to_str().unwrap(), "--signals", signals.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("placed on container (runsc)"), "{out}");
    assert!(out.contains("outside-code-not-in-process-tier"), "{out}");
    // The node's live load would move the decision (a pressured node sends
    // work to the cluster): decide on the given signals.
    let (code, out, _) =
        warden(&["policy", "eval", "--spec", spec.to_str().unwrap(), "--signals", signals.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["outcome"], "placed");
    assert_eq!(v["tier"], "container");
    assert_eq!(v["runtime"], "runsc");
    assert!(v["policy_version"].as_str().unwrap().len() == 12);
}

#[test]
fn run_refuses_what_policy_forbids_or_cannot_place_here() {
    if !require_root() {
        return;
    }
    let sb = Sandbox::new();
    let run = sb.run(&["--origin", "untrusted", "--network", "loopback"], &["true"]);
    assert_eq!(run.code, 125, "{run:?}");
    assert!(run.stderr.contains("refused by policy") && run.stderr.contains("untrusted-gets-no-network"), "{run:?}");
    // External code may not run at the process tier: asked for it, the task
    // is raised to a container, never run where policy forbids. Without
    // an image it cannot run there: a clear error.
    let run = sb.run(&["--origin", "external", "--tier", "process", "--explain"], &["true"]);
    assert_eq!(run.code, 125, "{run:?}");
    assert!(run.stderr.contains("outside-code-not-in-process-tier"), "{run:?}");
    if common::require_engine() {
        assert!(run.stderr.contains("needs an image"), "{run:?}");
        let flags = ["--origin", "external", "--tier", "process", "--image", common::TEST_IMAGE];
        let run = sb.run(&flags, &["true"]);
        assert_eq!(run.code, 0, "{run:?}");
        assert_eq!(run.result.as_ref().unwrap()["tier_history"][0]["tier"], "container", "{run:?}");
    }
}

#[test]
fn run_applies_the_limits_policy_decides() {
    if !require_root() {
        return;
    }
    let (_d, pol, rules) = policy_copy();
    // A rule that tightens pids and takes the network away.
    std::fs::write(
        rules.join("placement.rhai"),
        r#"fn propose(task, signals) {
            [#{ tier: "process", runtime: "native", cost: 1, rule: "tight", pids: 7, network: "none" }]
        }"#,
    )
    .unwrap();
    std::fs::remove_file(pol.join("tests/defaults.yaml")).unwrap();
    let sb = Sandbox::new();
    let flags = ["--policies", pol.to_str().unwrap(), "--rules", rules.to_str().unwrap(), "--network", "loopback"];
    let run = sb.probe(&flags, &["own-loopback"]);
    run.assert_prevented();
    let limits = &run.result.as_ref().unwrap()["limits"];
    assert_eq!(limits["pids"], 7, "{run:?}");
    assert_eq!(limits["network"], "none", "{run:?}");
    let run = sb.run(&flags, &["sh", "-c", "cat /sys/fs/cgroup/pids.max 2>/dev/null; echo ok"]);
    assert_eq!(run.code, 0, "{run:?}");
}

#[test]
fn diff_shows_what_a_change_moves() {
    let (_d, pol, _rules) = policy_copy();
    let root = pol.parent().unwrap();
    let mut text = std::fs::read_to_string(pol.join("baseline.cedar")).unwrap();
    text.push_str(
        "\n@id(\"external-code-needs-gvisor\")\nforbid (principal, action == Action::\"run\", resource)\n\
         when { context.origin == \"external\" && context.runtime == \"runc\" };\n",
    );
    std::fs::write(pol.join("baseline.cedar"), text).unwrap();
    let corpus = repo().join("examples/corpus/tasks.jsonl");
    let (code, out, err) =
        warden(&["policy", "diff", "--corpus", corpus.to_str().unwrap(), "--to", root.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["tasks"], 1000);
    let moves = report["moves"].as_array().unwrap();
    assert_eq!(moves.len(), 1, "{report}");
    assert_eq!(moves[0]["from"], "container (runc)");
    assert_eq!(moves[0]["to"], "container (runsc)");
    let moved = moves[0]["count"].as_u64().unwrap();
    // Exactly the external tasks that were on runc: count them independently.
    let external =
        std::fs::read_to_string(&corpus).unwrap().lines().filter(|l| l.contains("\"origin\": \"external\"")).count()
            as u64;
    assert!(moved > 0 && moved <= external, "{moved} moved, {external} external");
    assert_eq!(report["unchanged"].as_u64().unwrap() + moved, 1000);

    // A corpus line that is not a task is named by its line.
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), "{\"command\": [\"x\"]}\n{\"command\": []}\n").unwrap();
    let (code, _, err) = warden(&["policy", "diff", "--corpus", bad.path().to_str().unwrap(), "--to", "embedded"]);
    assert_eq!(code, 125);
    assert!(err.contains(":2"), "{err}");
}
