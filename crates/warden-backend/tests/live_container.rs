//! Live control of a running container-tier task through the library API:
//! limits updated and read back from the container's host cgroup (through
//! the Engine API on runc; written to the cgroup directly on runsc, which
//! has no update), pause/thaw, engine stats, kill, and nothing left behind.
//! A real Docker engine with the test image (`tests/docker/build-image.sh`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use warden_backend::{
    Backend, BackendError, ContainerBackend, ContainerBackendConfig, LaunchRequest, ProcessBackendConfig, Workload,
    open_gate,
};
use warden_core::{Bytes, LimitUpdate, MilliCpu, TaskSpec};

const IMAGE: &str = "warden-test:latest";
const SOCKET: &str = "/var/run/docker.sock";

/// Root and an engine, or a skip (a failure under WARDEN_REQUIRE_ALL=1).
fn require_engine() -> bool {
    let ready = nix::unistd::geteuid().is_root() && Path::new(SOCKET).exists();
    if ready {
        return true;
    }
    if std::env::var("WARDEN_REQUIRE_ALL").is_ok_and(|v| v == "1") {
        panic!("this test needs root and a Docker engine, and WARDEN_REQUIRE_ALL=1 forbids skipping it");
    }
    eprintln!("SKIPPED: needs root and a Docker engine");
    false
}

fn request(name: &str, cmd: &[&str], image: &str) -> LaunchRequest {
    let spec = TaskSpec {
        id: Some(format!("live-{name}-{}", std::process::id()).try_into().unwrap()),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        image: Some(image.into()),
        ..Default::default()
    }
    .normalize()
    .unwrap();
    let mut limits = ProcessBackendConfig::default().defaults.resolve(&spec);
    limits.cpus = MilliCpu(1000);
    limits.pids = 64;
    LaunchRequest { id: spec.task_id(), spec, limits, stdin_null: true, attempt: 1 }
}

async fn backend(runtime: &str, state: &Path) -> ContainerBackend {
    ContainerBackend::new(ContainerBackendConfig {
        runtime: runtime.into(),
        state_dir: state.to_owned(),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// The containers labelled with task `id`.
fn containers_of(id: &str) -> String {
    let out = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=io.warden.task={id}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn cpu_used_over(w: &impl Workload, d: Duration) -> u64 {
    let before = w.stats().await.unwrap().cpu_usage_us;
    tokio::time::sleep(d).await;
    w.stats().await.unwrap().cpu_usage_us - before
}

async fn limits_change_live_and_read_back(runtime: &str) {
    let state = tempfile::tempdir().unwrap();
    let b = backend(runtime, state.path()).await;
    let req = request(&format!("update-{runtime}"), &["sh", "-c", "while :; do :; done"], IMAGE);
    let mut w = b.launch(&req, open_gate()).await.unwrap();
    assert_eq!(containers_of(req.id.as_str()).lines().count(), 1, "the container carries its task label");
    // Found again by its labels, as a restarted sidecar would.
    let found = warden_backend::container::managed(Path::new(SOCKET), Duration::from_secs(10)).await.unwrap();
    let mine = found.iter().find(|m| m.task == req.id.as_str()).expect("warden's container is listed");
    assert_eq!((mine.tenant.as_str(), mine.attempt, mine.state.as_str()), ("local", 1, "running"), "{mine:?}");

    let full = cpu_used_over(&w, Duration::from_millis(1500)).await;
    assert!(full > 500_000, "{runtime}: the spinner used {full} us in 1.5 s at 1 CPU");

    let after = w
        .update(&LimitUpdate { cpus: Some(MilliCpu(100)), memory: Some(Bytes::mib(200)), pids: Some(50) })
        .await
        .unwrap();
    assert_eq!((after.cpus, after.memory, after.pids), (MilliCpu(100), Bytes::mib(200), 50), "{runtime}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let throttled = cpu_used_over(&w, Duration::from_millis(2000)).await;
    assert!(throttled < 500_000, "{runtime}: at 0.1 CPU the spinner used {throttled} us in 2 s");

    // Frozen, it uses no CPU; thawed, it runs again.
    w.freeze().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let frozen = cpu_used_over(&w, Duration::from_millis(1000)).await;
    assert!(frozen < 20_000, "{runtime}: a paused container used {frozen} us");
    w.thaw().await.unwrap();
    let thawed = cpu_used_over(&w, Duration::from_millis(1500)).await;
    assert!(thawed > 20_000, "{runtime}: a thawed container should run again, used {thawed} us");

    w.kill().await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), w.wait()).await.unwrap().unwrap();
    let finished = w.finish().await.unwrap();
    assert_eq!(finished.exit, warden_backend::Exit::Signaled(libc::SIGKILL), "{runtime}");
    assert_eq!(containers_of(req.id.as_str()), "", "{runtime}: the container was left behind");
    assert!(!state.path().join("workspaces").join(req.id.as_str()).exists());
    assert!(!state.path().join("views").join(req.id.as_str()).exists());
}

#[tokio::test]
async fn runc_limits_change_live_and_read_back() {
    if require_engine() {
        limits_change_live_and_read_back("runc").await;
    }
}

#[tokio::test]
async fn runsc_limits_change_live_and_read_back() {
    if require_engine() {
        limits_change_live_and_read_back("runsc").await;
    }
}

#[tokio::test]
async fn an_update_the_kernel_refuses_is_reported() {
    if !require_engine() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let b = backend("runsc", state.path()).await;
    let req = request("refused", &["sleep", "30"], IMAGE);
    let mut w = b.launch(&req, open_gate()).await.unwrap();
    // Far below what gVisor's sandbox itself holds: the kernel cannot
    // honour it, and the error says so rather than pretending.
    let err = w.update(&LimitUpdate { memory: Some(Bytes(4096)), ..Default::default() }).await;
    assert!(err.is_err(), "a 4 KiB memory limit on a running sandbox cannot take: {err:?}");
    w.kill().await.unwrap();
    w.wait().await.unwrap();
    w.finish().await.unwrap();
    assert_eq!(containers_of(req.id.as_str()), "");
}

#[tokio::test]
async fn a_missing_image_is_named_and_never_pulled() {
    if !require_engine() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let b = backend("runc", state.path()).await;
    let req = request("noimage", &["true"], "warden-no-such-image:1");
    let err = b.launch(&req, open_gate()).await.unwrap_err();
    assert!(matches!(err, BackendError::ImageMissing { .. }), "{err}");
    assert!(err.to_string().contains("warden-no-such-image:1"), "{err}");
    assert_eq!(containers_of(req.id.as_str()), "");
    assert!(!state.path().join("workspaces").join(req.id.as_str()).exists());
}

#[tokio::test]
async fn failed_launches_leave_nothing_behind() {
    if !require_engine() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let gone = |id: &str, runtime: &str| {
        assert_eq!(containers_of(id), "", "{runtime}");
        assert!(!state.path().join("workspaces").join(id).exists(), "{runtime}");
        assert!(!state.path().join("views").join(id).exists(), "{runtime}");
    };
    for runtime in ["runc", "runsc"] {
        let b = backend(runtime, state.path()).await;
        // Refused by the engine at create: below its 6 MB minimum.
        let mut req = request(&format!("tiny-{runtime}"), &["true"], IMAGE);
        req.limits.memory = Bytes::mib(1);
        let err = b.launch(&req, open_gate()).await.unwrap_err();
        assert!(matches!(err, BackendError::Engine { .. }), "{runtime}: {err}");
        gone(req.id.as_str(), runtime);

        // A command the image does not have: the engine's init reports it
        // as 127, like a shell would.
        let req = request(&format!("nocmd-{runtime}"), &["/no/such/command"], IMAGE);
        let mut w = b.launch(&req, open_gate()).await.unwrap();
        w.wait().await.unwrap();
        assert_eq!(w.finish().await.unwrap().exit, warden_backend::Exit::Exited(127), "{runtime}");
        gone(req.id.as_str(), runtime);
    }
}

#[tokio::test]
async fn no_engine_is_a_clear_error() {
    let config = ContainerBackendConfig { socket: "/nonexistent/docker.sock".into(), ..Default::default() };
    let err = ContainerBackend::new(config).await.unwrap_err();
    assert!(matches!(err, BackendError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/docker.sock"), "{err}");
}
