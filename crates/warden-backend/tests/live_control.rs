//! Live control of a running process-tier task through the library API the
//! reactor and the server use: update limits (read back from the kernel),
//! freeze and thaw, stats, kill. Real cgroups; needs root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use warden_backend::{Backend, Exit, LaunchRequest, ProcessBackend, ProcessBackendConfig, Workload, open_gate};
use warden_core::{Bytes, LimitUpdate, MilliCpu, TaskSpec};

fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("WARDEN_REQUIRE_ALL").is_ok_and(|v| v == "1") {
        panic!("this test needs root and WARDEN_REQUIRE_ALL=1 forbids skipping it");
    }
    eprintln!("SKIPPED: needs root");
    false
}

fn request(name: &str, cmd: &[&str]) -> (LaunchRequest, tempfile::TempDir) {
    let state = tempfile::tempdir().unwrap();
    let spec = TaskSpec {
        id: Some(format!("live-{name}-{}", std::process::id()).try_into().unwrap()),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
    .normalize()
    .unwrap();
    let backend_cfg = ProcessBackendConfig::default();
    let mut limits = backend_cfg.defaults.resolve(&spec);
    limits.cpus = MilliCpu(1000);
    (LaunchRequest { id: spec.task_id(), spec, limits, stdin_null: true, attempt: 1 }, state)
}

fn backend(state: &tempfile::TempDir) -> ProcessBackend {
    ProcessBackend::new(ProcessBackendConfig { state_dir: state.path().to_owned(), ..Default::default() }).unwrap()
}

async fn cpu_used_over(w: &impl Workload, d: Duration) -> u64 {
    let before = w.stats().await.unwrap().cpu_usage_us;
    tokio::time::sleep(d).await;
    w.stats().await.unwrap().cpu_usage_us - before
}

#[tokio::test]
async fn limits_change_live_and_read_back() {
    if !require_root() {
        return;
    }
    let (req, state) = request("update", &["sh", "-c", "while :; do :; done"]);
    let b = backend(&state);
    let mut w = b.launch(&req, open_gate()).await.unwrap();

    // At 1 CPU the spinner uses about one CPU.
    let full = cpu_used_over(&w, Duration::from_millis(500)).await;
    // At least 40 % of a CPU even when other tests spin on the other core.
    assert!(full > 200_000, "spinner used {full} us in 500 ms at 1 CPU");

    let after = w
        .update(&LimitUpdate { cpus: Some(MilliCpu(100)), memory: Some(Bytes::mib(200)), pids: Some(17) })
        .await
        .unwrap();
    assert_eq!(after.cpus, MilliCpu(100));
    assert_eq!(after.memory, Bytes::mib(200));
    assert_eq!(after.pids, 17);
    // The kernel enforces it within a CFS period or two.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let throttled = cpu_used_over(&w, Duration::from_millis(1000)).await;
    assert!(throttled < 250_000, "at 0.1 CPU the spinner used {throttled} us in 1 s");
    let stats = w.stats().await.unwrap();
    assert!(stats.cpu_nr_throttled > 0, "throttling should be counted: {stats:?}");

    // A memory limit below what the task uses cannot be honoured: the
    // update is reported, not silently dropped.
    let too_low = w.update(&LimitUpdate { memory: Some(Bytes(4096)), ..Default::default() }).await;
    match &too_low {
        Ok(l) => assert_eq!(l.memory, Bytes(4096), "an update that returned Ok must have taken"),
        Err(e) => assert!(e.to_string().contains("memory"), "the error names the limit file: {e}"),
    }

    w.kill().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), w.wait()).await.unwrap().unwrap();
    let finished = w.finish().await.unwrap();
    assert!(matches!(finished.exit, Exit::Signaled(9) | Exit::Killed | Exit::OomKilled), "{finished:?}");
    assert!(finished.usage.cpu_user_ms + finished.usage.cpu_sys_ms > 300);
    let id = req.id.to_string();
    assert!(!std::path::Path::new("/sys/fs/cgroup/cpu/warden").join(&id).exists());
}

#[tokio::test]
async fn freeze_stops_the_task_and_thaw_resumes_it() {
    if !require_root() {
        return;
    }
    let (req, state) = request("freeze", &["sh", "-c", "while :; do :; done"]);
    let b = backend(&state);
    let mut w = b.launch(&req, open_gate()).await.unwrap();
    assert!(cpu_used_over(&w, Duration::from_millis(300)).await > 60_000);

    w.freeze().await.unwrap();
    let frozen = cpu_used_over(&w, Duration::from_millis(500)).await;
    assert!(frozen < 10_000, "a frozen task used {frozen} us of CPU");

    w.thaw().await.unwrap();
    let thawed = cpu_used_over(&w, Duration::from_millis(300)).await;
    assert!(thawed > 60_000, "a thawed task used only {thawed} us");

    // A frozen task can still be killed.
    w.freeze().await.unwrap();
    w.kill().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), w.wait()).await.unwrap().unwrap();
    w.finish().await.unwrap();
}

#[tokio::test]
async fn stats_report_memory_pids_and_pressure() {
    if !require_root() {
        return;
    }
    let script = "python3 -c 'import time; b = bytearray(40 << 20); time.sleep(30)' & sleep 30 & wait";
    let (req, state) = request("stats", &["sh", "-c", script]);
    let b = backend(&state);
    let mut w = b.launch(&req, open_gate()).await.unwrap();
    let mut s = w.stats().await.unwrap();
    for _ in 0..50 {
        if s.memory_bytes > 40 << 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        s = w.stats().await.unwrap();
    }
    assert!(s.memory_bytes > 40 << 20, "{s:?}");
    assert!(s.memory_peak_bytes.unwrap() >= s.memory_bytes);
    assert!(s.pids >= 4, "init, sh, python and sleep: {s:?}");
    if std::path::Path::new("/proc/pressure/cpu").exists() {
        assert!(s.cpu_pressure.is_some() && s.memory_pressure.is_some(), "PSI per task: {s:?}");
    }
    w.kill().await.unwrap();
    w.wait().await.unwrap();
    w.finish().await.unwrap();
}

#[tokio::test]
async fn dropping_a_workload_leaves_nothing_behind() {
    if !require_root() {
        return;
    }
    let (req, state) = request("drop", &["sleep", "30"]);
    let b = backend(&state);
    let w = b.launch(&req, open_gate()).await.unwrap();
    let pid = w.pid().unwrap();
    drop(w);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "init survived the drop");
    for c in ["cpu", "memory", "pids", "freezer", "unified"] {
        assert!(!std::path::Path::new("/sys/fs/cgroup").join(c).join("warden").join(req.id.as_str()).exists());
    }
    assert!(!state.path().join("workspaces").join(req.id.as_str()).exists());
}
