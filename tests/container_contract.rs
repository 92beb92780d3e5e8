//! The `warden run` contract at the container tier, on runc and on runsc:
//! the same exit statuses, timeout, OOM, result file, stdio and cleanup as
//! the process tier, clear errors for a missing image or engine, and a
//! clear error (not a hang) when the engine dies under a running task.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{At, Sandbox, TEST_IMAGE, task_containers};

fn at_both() -> Option<[At; 2]> {
    Some([At::container("runc")?, At::container("runsc")?])
}

#[test]
fn exit_codes_pass_through() {
    let Some(tiers) = at_both() else { return };
    let sb = Sandbox::new();
    for t in &tiers {
        let run = sb.run(&t.flags(), &["sh", "-c", "exit 3"]);
        assert_eq!((run.code, run.reason()), (3, "exited"), "{}: {run:?}", t.runtime);
        let r = run.result.as_ref().unwrap();
        assert_eq!(r["tier"], "container");
        assert_eq!(r["tier_history"][0]["runtime"], t.runtime);
        let run = sb.run(&t.flags(), &["sh", "-c", "kill -TERM $$"]);
        assert_eq!((run.code, run.reason()), (143, "signaled"), "{}: {run:?}", t.runtime);
        let run = sb.run(&t.flags(), &["sh", "-c", "kill -KILL $$"]);
        assert_eq!((run.code, run.reason()), (137, "signaled"), "{}: {run:?}", t.runtime);
        let run = sb.run(&t.flags(), &["/no/such/command"]);
        assert_eq!(run.code, 127, "{}: {run:?}", t.runtime);
        let run = sb.run(&t.flags(), &["/etc/passwd"]);
        assert_eq!(run.code, 126, "{}: {run:?}", t.runtime);
    }
}

#[test]
fn timeout_is_124_and_nothing_is_left() {
    let Some(tiers) = at_both() else { return };
    let sb = Sandbox::new();
    for t in &tiers {
        let start = Instant::now();
        let run = sb.run(&t.with(&["--timeout", "1s"]), &["sh", "-c", "trap '' TERM; sleep 60 & sleep 60"]);
        assert_eq!((run.code, run.reason()), (124, "timeout"), "{}: {run:?}", t.runtime);
        assert!(start.elapsed() < Duration::from_secs(20), "{}: the timeout took {:?}", t.runtime, start.elapsed());
    }
}

#[test]
fn oom_is_137_with_reason() {
    let Some(tiers) = at_both() else { return };
    let sb = Sandbox::new();
    for t in &tiers {
        let run = sb.probe(&t.with(&["--memory", "64Mi"]), &["membomb", "512"]);
        assert_eq!((run.code, run.reason()), (137, "oom_killed"), "{}: {run:?}", t.runtime);
        assert!(run.usage("oom_kills") >= 1, "{}: {run:?}", t.runtime);
    }
}

#[test]
fn stdout_stderr_and_stdin_pass_through() {
    let Some(tiers) = at_both() else { return };
    let sb = Sandbox::new();
    for t in &tiers {
        let id = common::task_id("stdio");
        let mut c = sb.warden();
        c.arg("run").arg("--id").arg(&id).arg("--workspace").arg(sb.ws.path()).args(t.flags());
        c.args(["--", "sh", "-c", "read line; echo \"out:$line\"; echo err >&2; seq 1 2000 | tail -1"]);
        let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{}: {out:?}", t.runtime);
        assert_eq!(stdout, "out:hello\n2000\n", "{}", t.runtime);
        assert!(String::from_utf8_lossy(&out.stderr).contains("err"), "{}: {out:?}", t.runtime);
        assert!(task_containers(&id).is_empty());
    }
}

#[test]
fn signals_to_warden_reach_the_task() {
    let Some(tiers) = at_both() else { return };
    let sb = Sandbox::new();
    for t in &tiers {
        for (sig, expect) in [(libc::SIGTERM, 7), (libc::SIGINT, 130)] {
            let id = common::task_id("sig");
            // On TERM the task exits 7; SIGINT keeps its default (death).
            let script = "trap 'exit 7' TERM; echo ready; while :; do sleep 0.05; done";
            let mut child = sb
                .warden()
                .args(["run", "--id", &id, "--workspace"])
                .arg(sb.ws.path())
                .args(t.flags())
                .args(["--", "sh", "-c", script])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut line = [0u8; 6];
            std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut line).unwrap();
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::try_from(sig).unwrap()).unwrap();
            let status = child.wait().unwrap();
            assert_eq!(status.code(), Some(expect), "{}: signal {sig}", t.runtime);
            common::assert_no_leftovers(&id, sb.state.path());
        }
    }
}

#[test]
fn a_stdin_held_open_does_not_keep_warden_waiting() {
    let Some(t) = At::container("runc") else { return };
    let sb = Sandbox::new();
    let mut c = sb.warden();
    c.arg("run").arg("--workspace").arg(sb.ws.path()).args(t.flags()).args(["--", "true"]);
    // The caller keeps its end of the pipe open and never writes.
    let mut child = c.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let _held = child.stdin.take();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("warden waited for a stdin that never closed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn the_workspace_is_writable_and_files_stay_the_owners() {
    let Some(tiers) = at_both() else { return };
    use std::os::unix::fs::MetadataExt;
    let sb = Sandbox::new();
    for t in &tiers {
        let name = format!("made-by-{}", t.runtime);
        let run = sb.run(&t.flags(), &["sh", "-c", &format!("echo hi > /workspace/{name}; id -u")]);
        assert_eq!(run.code, 0, "{}: {run:?}", t.runtime);
        assert_ne!(run.stdout.trim(), "0", "{}: tasks must not run as root", t.runtime);
        let meta = std::fs::metadata(sb.ws.path().join(&name)).unwrap();
        let owner = std::fs::metadata(sb.ws.path()).unwrap().uid();
        assert_eq!(meta.uid(), owner, "{}: the task's file should belong to the workspace's owner", t.runtime);
    }
}

#[test]
fn a_missing_image_is_125_naming_it() {
    if At::container("runc").is_none() {
        return;
    }
    let sb = Sandbox::new();
    let run = sb.run(&["--tier=container", "--runtime=runc", "--image", "warden-missing:0"], &["true"]);
    assert_eq!(run.code, 125, "{run:?}");
    assert!(run.stderr.contains("warden-missing:0") && run.stderr.contains("never pulls"), "{run:?}");
}

#[test]
fn no_engine_is_125_and_tiers_says_why() {
    let Some(t) = At::container("runc") else { return };
    let sb = Sandbox::new();
    let mut c = sb.warden();
    c.args(["--docker-socket", "/nonexistent/docker.sock", "run"]).args(t.flags()).args(["--", "true"]);
    let out = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("/nonexistent/docker.sock"), "{stderr}");

    let tiers = sb.warden().args(["--docker-socket", "/nonexistent/docker.sock", "tiers", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&tiers.stdout).unwrap();
    let runc = v.as_array().unwrap().iter().find(|o| o["runtime"] == "runc").unwrap();
    assert_eq!(runc["available"], false);
    let tiers = sb.warden().args(["tiers", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&tiers.stdout).unwrap();
    for rt in ["native", "runc", "runsc"] {
        let o = v.as_array().unwrap().iter().find(|o| o["runtime"] == rt).unwrap();
        assert_eq!(o["available"], true, "{rt}: {o}");
    }
}

#[test]
fn policy_raises_untrusted_code_to_gvisor() {
    let Some(t) = At::container("runc") else { return };
    let sb = Sandbox::new();
    // Asked for runc, but the shipped policy forbids untrusted code
    // outside a sandboxed runtime: raised, never lowered.
    let run = sb.run(&t.with(&["--origin", "untrusted", "--explain"]), &["true"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.result.as_ref().unwrap()["tier_history"][0]["runtime"], "runsc", "{run:?}");
    assert!(run.stderr.contains("untrusted-needs-sandboxed-runtime"), "{run:?}");
    // Asked for runsc, internal code is not lowered to runc.
    let flags = [vec!["--tier=container", "--runtime=runsc", "--image", TEST_IMAGE]].concat();
    let run = sb.run(&flags, &["true"]);
    assert_eq!(run.result.as_ref().unwrap()["tier_history"][0]["runtime"], "runsc", "{run:?}");
}

/// A private Docker engine, to be killed under a task: its own sockets,
/// data and exec roots, the project's daemon config.
struct PrivateEngine {
    dir: tempfile::TempDir,
    daemon: Option<Child>,
}

impl PrivateEngine {
    fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        c.arg("-H").arg(format!("unix://{}", self.socket().display()));
        c
    }

    fn start(dir: tempfile::TempDir) -> PrivateEngine {
        let mut engine = PrivateEngine { dir, daemon: None };
        engine.restart();
        engine
    }

    /// Starts the daemon (again) on this engine's directories.
    fn restart(&mut self) {
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/docker/daemon.json");
        let p = self.dir.path();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(p.join("dockerd.log")).unwrap();
        let daemon = Command::new("dockerd")
            .arg("--config-file")
            .arg(config)
            .arg("--data-root")
            .arg(p.join("data"))
            .arg("--exec-root")
            .arg(p.join("exec"))
            .arg("--pidfile")
            .arg(p.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", self.socket().display()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        self.daemon = Some(daemon);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.docker().arg("info").stdout(Stdio::null()).stderr(Stdio::null()).status().unwrap().success() {
            assert!(Instant::now() < deadline, "the private dockerd did not come up");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGKILLs the daemon, as a crash would. Its containerd lives on.
    fn kill(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
    }

    /// SIGKILLs the containerd the daemon started (left running by a
    /// killed daemon, it would keep a new one from starting).
    fn kill_containerd(&self) {
        let pidfile = self.dir.path().join("exec/containerd/containerd.pid");
        if let Some(pid) = std::fs::read_to_string(&pidfile).ok().and_then(|p| p.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
        // Its parent is gone; until something reaps it, the pid stays and
        // a new daemon would wait for it. The daemon starts a fresh one
        // when there is no pid file.
        let _ = std::fs::remove_file(pidfile);
    }

    /// Stops the daemon gracefully (it stops its containerd too).
    fn stop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.id() as i32), nix::sys::signal::SIGTERM);
            let _ = d.wait();
        }
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        self.stop();
        // The daemon bind-mounts its data root over itself and leaves it.
        let _ = Command::new("umount").arg("-l").arg(self.dir.path().join("data")).status();
    }
}

#[test]
fn a_killed_engine_is_a_clear_error_not_a_hang() {
    let Some(_) = At::container("runc") else { return };
    let dir = tempfile::Builder::new().prefix("warden-engine-").tempdir_in("/var/tmp").unwrap();
    let mut engine = PrivateEngine::start(dir);
    // The test image, copied into the private engine.
    let mut save = Command::new("docker").args(["save", TEST_IMAGE]).stdout(Stdio::piped()).spawn().unwrap();
    let loaded = engine.docker().arg("load").stdin(save.stdout.take().unwrap()).stdout(Stdio::null()).status().unwrap();
    assert!(save.wait().unwrap().success() && loaded.success(), "docker save | load into the private engine");

    let sb = Sandbox::new();
    let id = common::task_id("enginedeath");
    let mut c = sb.warden();
    c.arg("--docker-socket").arg(engine.socket());
    c.args(["run", "--id", &id, "--tier=container", "--runtime=runc", "--image", TEST_IMAGE, "--", "sleep", "60"]);
    let mut child = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // Wait until the container runs, then kill the engine under it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = engine.docker().args(["ps", "-q", "--filter", &format!("label=io.warden.task={id}")]).output();
        if out.is_ok_and(|o| !o.stdout.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "the task's container never ran");
        std::thread::sleep(Duration::from_millis(100));
    }
    let killed_at = Instant::now();
    engine.kill();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if killed_at.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("warden hung after its engine died");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("engine") || stderr.contains("lost track"), "the error should say what happened: {stderr}");

    // Clean up: the engine, started again, removes the orphaned container
    // and stops its containerd on the way out.
    engine.kill_containerd();
    engine.restart();
    let removed = engine.docker().args(["rm", "-f", &format!("warden-{id}")]).output().unwrap();
    assert!(removed.status.success(), "{removed:?}");
    engine.stop();
}
