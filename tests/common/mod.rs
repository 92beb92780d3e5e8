//! Helpers shared by the end-to-end tests: run `warden` and the hostile
//! probes, require root, and check that nothing is left behind.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Whether root-only tests can run. Without root they skip with a printed
/// reason, except under `WARDEN_REQUIRE_ALL=1` (set by the README's test
/// command and CI), where a missing prerequisite fails the test.
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("WARDEN_REQUIRE_ALL").is_ok_and(|v| v == "1") {
        panic!("this test needs root and WARDEN_REQUIRE_ALL=1 forbids skipping it");
    }
    eprintln!("SKIPPED: needs root (run as root, or set WARDEN_REQUIRE_ALL=1 to make this fail)");
    false
}

/// The image the container-tier tests run (`tests/docker/build-image.sh`).
pub const TEST_IMAGE: &str = "warden-test:latest";

/// Whether container tests can run: root, a Docker engine and the test
/// image. Skips or fails as [`require_root`] does.
pub fn require_engine() -> bool {
    if !require_root() {
        return false;
    }
    static READY: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let ready = READY.get_or_init(|| {
        let out = Command::new("docker").args(["image", "inspect", "--format", "{{.Id}}", TEST_IMAGE]).output();
        match out {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(format!("no test image: {}", String::from_utf8_lossy(&o.stderr).trim())),
            Err(e) => Err(format!("no docker CLI: {e}")),
        }
    });
    match ready {
        Ok(()) => true,
        Err(why) if std::env::var("WARDEN_REQUIRE_ALL").is_ok_and(|v| v == "1") => {
            panic!(
                "this test needs a Docker engine with {TEST_IMAGE} ({why}) and WARDEN_REQUIRE_ALL=1 forbids skipping it"
            )
        }
        Err(why) => {
            eprintln!("SKIPPED: needs a Docker engine with {TEST_IMAGE}: {why}");
            false
        }
    }
}

/// A tier (and runtime) to run a test at, as `warden run` flags.
#[derive(Debug)]
pub struct At {
    flags: Vec<String>,
    pub container: bool,
    pub runtime: &'static str,
}

impl At {
    pub fn process() -> Option<At> {
        require_root().then(|| At { flags: vec!["--tier=process".into()], container: false, runtime: "native" })
    }

    pub fn container(runtime: &'static str) -> Option<At> {
        require_engine().then(|| At {
            flags: vec!["--tier=container".into(), format!("--runtime={runtime}"), format!("--image={TEST_IMAGE}")],
            container: true,
            runtime,
        })
    }

    pub fn flags(&self) -> Vec<&str> {
        self.flags.iter().map(String::as_str).collect()
    }

    pub fn with<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut v = self.flags();
        v.extend_from_slice(extra);
        v
    }
}

pub fn warden_bin() -> &'static str {
    env!("CARGO_BIN_EXE_warden")
}

pub fn probe_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/probes/probe.py")
}

/// A unique task id for this test process.
pub fn task_id(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("t-{name}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A state directory and a workspace holding the probe, both removed on drop.
pub struct Sandbox {
    pub state: tempfile::TempDir,
    pub ws: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        let state = tempfile::Builder::new().prefix("warden-state-").tempdir().expect("state dir");
        let ws = tempfile::Builder::new().prefix("warden-ws-").tempdir().expect("workspace");
        std::fs::copy(probe_source(), ws.path().join("probe.py")).expect("copy probe");
        Sandbox { state, ws }
    }

    pub fn warden(&self) -> Command {
        let mut c = Command::new(warden_bin());
        c.arg("--state-dir").arg(self.state.path());
        c.stdin(Stdio::null());
        c
    }

    /// `warden run` with `flags`, in this workspace, running `cmd`.
    pub fn run(&self, flags: &[&str], cmd: &[&str]) -> Run {
        let id = task_id("run");
        self.run_with(&id, flags, cmd, |_| {})
    }

    pub fn run_with(&self, id: &str, flags: &[&str], cmd: &[&str], tweak: impl FnOnce(&mut Command)) -> Run {
        let result = self.state.path().join(format!("{id}.json"));
        let mut c = self.warden();
        c.arg("run").arg("--id").arg(id).arg("--result").arg(&result);
        c.arg("--workspace").arg(self.ws.path());
        c.args(flags).arg("--").args(cmd);
        tweak(&mut c);
        let out = c.output().expect("run warden");
        let run = Run::from_output(out, std::fs::read_to_string(&result).ok());
        assert_no_leftovers(id, self.state.path());
        run
    }

    /// Runs the probe in the sandbox.
    pub fn probe(&self, flags: &[&str], args: &[&str]) -> Run {
        let mut cmd = vec!["/usr/bin/python3", "/workspace/probe.py"];
        cmd.extend_from_slice(args);
        self.run(flags, &cmd)
    }
}

/// Runs the probe unconfined on the host: the positive control.
pub fn probe_host(args: &[&str]) -> Run {
    let out = Command::new("/usr/bin/python3")
        .arg(probe_source())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run probe");
    Run::from_output(out, None)
}

#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub result: Option<serde_json::Value>,
}

impl Run {
    fn from_output(out: Output, result: Option<String>) -> Self {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            result: result.map(|r| serde_json::from_str(&r).expect("result is JSON")),
        }
    }

    pub fn reason(&self) -> &str {
        self.result.as_ref().and_then(|r| r["reason"].as_str()).unwrap_or("")
    }

    pub fn usage(&self, field: &str) -> u64 {
        self.result.as_ref().and_then(|r| r["usage"][field].as_u64()).unwrap_or(0)
    }

    /// The probe did its harm.
    #[track_caller]
    pub fn assert_escaped(&self) {
        assert_eq!(self.code, 0, "the probe should have done its harm (positive control): {self:?}");
        assert!(self.stdout.contains("escaped"), "{self:?}");
    }

    /// The probe was stopped.
    #[track_caller]
    pub fn assert_prevented(&self) {
        assert_eq!(self.code, 1, "the sandbox should have prevented this: {self:?}");
        assert!(self.stdout.contains("prevented"), "{self:?}");
    }
}

/// The cgroup directories a task may have had.
pub fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    ["cpu", "cpuacct", "memory", "pids", "freezer", "unified", ""]
        .iter()
        .map(|c| Path::new("/sys/fs/cgroup").join(c).join("warden").join(id))
        .collect()
}

/// No cgroup and no temporary workspace of task `id` remain.
#[track_caller]
pub fn assert_no_leftovers(id: &str, state: &Path) {
    for d in cgroup_dirs(id) {
        assert!(!d.exists(), "cgroup {} was left behind", d.display());
    }
    let ws = state.join("workspaces").join(id);
    assert!(!ws.exists(), "workspace {} was left behind", ws.display());
    let containers = task_containers(id);
    assert!(containers.is_empty(), "containers {containers:?} of task {id} were left behind");
}

/// The ids of containers labelled with task `id` (none without an engine).
pub fn task_containers(id: &str) -> Vec<String> {
    if !Path::new("/var/run/docker.sock").exists() {
        return vec![];
    }
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=io.warden.task={id}")])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

/// A host process to attack, killed on drop.
pub struct Victim(pub std::process::Child);

impl Victim {
    pub fn spawn() -> Self {
        Victim(Command::new("sleep").arg("60").spawn().expect("spawn sleep"))
    }
    pub fn pid(&self) -> String {
        self.0.id().to_string()
    }
    pub fn alive(&mut self) -> bool {
        self.0.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
