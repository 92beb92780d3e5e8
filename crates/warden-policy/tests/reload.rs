//! Hot reload with real files and real inotify watches: changes, broken
//! changes, ConfigMap-style symlink swaps, rollback, and a reload storm
//! while decisions run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use warden_core::{TaskSpec, Tier};
use warden_policy::{Defaults, PolicyEvent, PolicyStore, Signals, decide, watch};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The shipped set copied into `root/policies` and `root/rules`.
fn copy_set(root: &Path) -> (PathBuf, PathBuf) {
    let (pol, rules) = (root.join("policies"), root.join("rules"));
    std::fs::create_dir_all(pol.join("tests")).unwrap();
    std::fs::create_dir_all(&rules).unwrap();
    for name in ["schema.cedarschema", "baseline.cedar", "ceilings.cedar"] {
        std::fs::copy(repo().join("policies").join(name), pol.join(name)).unwrap();
    }
    std::fs::copy(repo().join("policies/tests/defaults.yaml"), pol.join("tests/defaults.yaml")).unwrap();
    std::fs::copy(repo().join("rules/placement.rhai"), rules.join("placement.rhai")).unwrap();
    (pol, rules)
}

fn internal_task() -> TaskSpec {
    TaskSpec { id: Some("t".to_owned().try_into().unwrap()), command: vec!["x".into()], ..Default::default() }
        .normalize()
        .unwrap()
}

fn tier(store: &PolicyStore) -> Option<Tier> {
    let d = decide(&store.current(), &internal_task(), &Signals::default(), Defaults::default());
    d.placement().map(|p| p.tier)
}

/// Forbids the process tier: internal tasks move to containers. The set's
/// tests are replaced by one that says so.
fn no_process_tier(pol: &Path) {
    std::fs::write(
        pol.join("no-process.cedar"),
        "@id(\"no-process-tier\")\nforbid (principal, action, resource) when { context.tier == \"process\" };\n",
    )
    .unwrap();
    std::fs::write(pol.join("tests/defaults.yaml"), B_TESTS).unwrap();
}

const B_TESTS: &str =
    "- name: internal code goes to a container\n  task: { command: [x] }\n  expect: { tier: container }\n";

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_change_on_disk_is_activated_and_a_broken_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (pol, rules) = copy_set(dir.path());
    let store = Arc::new(PolicyStore::open(&pol, &rules).unwrap());
    let first = store.current().version.clone();
    assert_eq!(tier(&store), Some(Tier::Process));
    let _w = watch(store.clone(), Duration::from_millis(50), |_| {}).unwrap();

    no_process_tier(&pol);
    wait_for("the new version", || store.current().version != first);
    assert_eq!(tier(&store), Some(Tier::Container));
    let second = store.current().version.clone();

    // A half-written policy: refused, and the running version keeps serving.
    std::fs::write(pol.join("half.cedar"), "@id(\"half\")\nforbid (principal, action, resource) when { context.")
        .unwrap();
    wait_for("the refusal", || store.events().iter().any(|(_, e)| matches!(e, PolicyEvent::Refused { .. })));
    assert_eq!(store.current().version, second);
    assert_eq!(tier(&store), Some(Tier::Container));
    let refused = store.events().into_iter().find_map(|(_, e)| match e {
        PolicyEvent::Refused { error, .. } => Some(error),
        _ => None,
    });
    assert!(refused.unwrap().contains("half.cedar"), "the refusal names the file");

    // Finishing the file makes it valid again.
    std::fs::remove_file(pol.join("half.cedar")).unwrap();
    // Editors' swap files do not make a version.
    std::fs::write(pol.join(".baseline.cedar.swp"), b"\xff\xfe").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(store.current().version, second);

    // Roll back to the first version.
    store.rollback(&first).unwrap();
    assert_eq!(store.current().version, first);
    assert_eq!(tier(&store), Some(Tier::Process));
    let versions: Vec<String> = store.versions().into_iter().map(|(v, _)| v).collect();
    assert_eq!(versions, vec![first.clone(), second, first]);
    assert!(store.rollback("nope").is_err());
}

#[test]
fn a_configmap_symlink_swap_is_seen() {
    // Kubernetes mounts a ConfigMap as `file -> ..data/file`, `..data ->
    // ..<timestamp>/`, and updates it by swapping the `..data` link.
    let dir = tempfile::tempdir().unwrap();
    let (src_pol, rules) = copy_set(&dir.path().join("src"));
    let pol = dir.path().join("configmap");
    let v1 = pol.join("..2026_12_04_v1");
    std::fs::create_dir_all(&v1).unwrap();
    for name in ["schema.cedarschema", "baseline.cedar", "ceilings.cedar"] {
        std::fs::copy(src_pol.join(name), v1.join(name)).unwrap();
        std::os::unix::fs::symlink(Path::new("..data").join(name), pol.join(name)).unwrap();
    }
    std::os::unix::fs::symlink("..2026_12_04_v1", pol.join("..data")).unwrap();
    let store = Arc::new(PolicyStore::open(&pol, &rules).unwrap());
    let first = store.current().version.clone();
    let _w = watch(store.clone(), Duration::from_millis(50), |_| {}).unwrap();

    let v2 = pol.join("..2026_12_04_v2");
    std::fs::create_dir_all(&v2).unwrap();
    for name in ["schema.cedarschema", "baseline.cedar", "ceilings.cedar"] {
        std::fs::copy(v1.join(name), v2.join(name)).unwrap();
    }
    std::fs::write(
        v2.join("ceilings.cedar"),
        std::fs::read_to_string(v1.join("ceilings.cedar")).unwrap() + "\n// a comment changes the version\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("..2026_12_04_v2", pol.join("..data_tmp")).unwrap();
    std::fs::rename(pol.join("..data_tmp"), pol.join("..data")).unwrap();
    wait_for("the swapped version", || store.current().version != first);
}

#[test]
fn every_decision_sees_exactly_one_version_during_a_reload_storm() {
    let dir = tempfile::tempdir().unwrap();
    let (pol, rules) = copy_set(dir.path());
    let store = Arc::new(PolicyStore::open(&pol, &rules).unwrap());
    let version_a = store.current().version.clone();
    // Learn version B's hash, then go back to A.
    let a_files = (
        std::fs::read_to_string(pol.join("tests/defaults.yaml")).unwrap(),
        std::fs::read_to_string(pol.join("baseline.cedar")).unwrap(),
    );
    no_process_tier(&pol);
    let event = store.reload();
    let PolicyEvent::Activated { version: version_b, .. } = event else { panic!("B must load: {event:?}") };
    let b_tests = std::fs::read_to_string(pol.join("tests/defaults.yaml")).unwrap();

    let _w = watch(store.clone(), Duration::from_millis(5), |_| {}).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let decider = {
        let (store, stop) = (store.clone(), stop.clone());
        let (a, b) = (version_a.clone(), version_b.clone());
        std::thread::spawn(move || {
            let mut seen = 0;
            while !stop.load(Ordering::Relaxed) {
                let d = decide(&store.current(), &internal_task(), &Signals::default(), Defaults::default());
                let tier = d.placement().map(|p| p.tier);
                // Whatever the storm, a decision is that of one whole version.
                match d.policy_version.as_str() {
                    v if v == a => assert_eq!(tier, Some(Tier::Process), "version A decides process"),
                    v if v == b => assert_eq!(tier, Some(Tier::Container), "version B decides container"),
                    other => panic!("decision from unknown version {other}"),
                }
                seen += 1;
            }
            seen
        })
    };
    // Flip between A and B as fast as the disk allows, in pieces: the
    // watcher sees half-changed sets (A's policies with B's tests, …)
    // which must be refused, never served.
    for i in 0..200 {
        if i % 2 == 0 {
            std::fs::remove_file(pol.join("no-process.cedar")).ok();
            std::fs::write(pol.join("tests/defaults.yaml"), &a_files.0).unwrap();
        } else {
            std::fs::write(pol.join("tests/defaults.yaml"), &b_tests).unwrap();
            std::fs::write(
                pol.join("no-process.cedar"),
                "@id(\"no-process-tier\")\nforbid (principal, action, resource) when { context.tier == \"process\" };\n",
            )
            .unwrap();
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let decisions = decider.join().unwrap();
    assert!(decisions > 100, "decisions kept running: {decisions}");
    assert_eq!(a_files.1, std::fs::read_to_string(pol.join("baseline.cedar")).unwrap());
    let activations = store.events().iter().filter(|(_, e)| matches!(e, PolicyEvent::Activated { .. })).count();
    assert!(activations >= 2, "the storm activated versions: {activations}");
}
