//! The hostile-workload suite, run at every tier and runtime this node
//! offers: the process sandbox, and containers on runc and on gVisor's
//! runsc (modules `process`, `runc`, `runsc`).
//!
//! Every test runs a probe (`tests/probes/probe.py`) twice: unconfined on
//! the host, where it must do its harm (the positive control: a probe that
//! cannot do harm proves nothing), and in `warden run` at the tier, where
//! it must be stopped. Where the harm shows on the host (a killed
//! process, a written file, an accepted connection), the host is checked
//! too, not only the exit code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{At, Sandbox, Victim, probe_host};

/// One test per attack, at each tier and runtime.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod process {
            $( #[test] fn $name() { if let Some(t) = crate::common::At::process() { super::$name(&t) } } )*
        }
        mod runc {
            $( #[test] fn $name() { if let Some(t) = crate::common::At::container("runc") { super::$name(&t) } } )*
        }
        mod runsc {
            $( #[test] fn $name() { if let Some(t) = crate::common::At::container("runsc") { super::$name(&t) } } )*
        }
    };
}

suite!(
    cannot_exceed_its_cpu_quota,
    cannot_exceed_its_memory_limit,
    fork_bomb_hits_the_pids_limit,
    cannot_see_or_signal_host_processes,
    cannot_ptrace_host_processes,
    cannot_reach_host_network_listeners,
    loopback_gives_the_task_only_its_own_lo,
    cannot_read_host_secrets,
    cannot_write_outside_workspace_and_tmp,
    cannot_mount,
    cannot_load_kernel_modules,
    cannot_use_keyrings,
    cannot_change_the_clock,
    cannot_change_the_host_name,
    cannot_open_raw_sockets,
    cannot_create_namespaces_or_io_urings,
    cannot_gain_privileges_through_setuid_binaries,
    cannot_inject_into_the_callers_terminal,
    only_stdio_fds_are_inherited,
    caller_environment_does_not_leak,
);

fn cannot_exceed_its_cpu_quota(t: &At) {
    let control = probe_host(&["spin", "1.5"]);
    let cpu: f64 = control.stdout.split_whitespace().nth(1).unwrap().trim_end_matches('s').parse().unwrap();
    // Unconfined, it gets at least half a CPU even on a busy 2-core machine:
    // well above what the sandboxed run below may use.
    assert!(cpu > 0.75, "unconfined, the spin loop should use most of a CPU: {control:?}");

    let sb = Sandbox::new();
    let run = sb.probe(&t.with(&["--cpus", "0.2"]), &["spin", "1.5"]);
    assert_eq!(run.code, 0, "{run:?}");
    let used = run.usage("cpu_user_ms") + run.usage("cpu_sys_ms");
    let wall = run.usage("wall_ms");
    // At 0.2 CPU the task may use a fifth of its wall time (gVisor's
    // start-up counts too, and stretches the wall time), plus a little
    // for the CFS period in progress.
    assert!(used <= wall / 5 + 150, "a 0.2-CPU task used {used} ms of CPU in {wall} ms: {run:?}");
    assert!(used > 100, "the task should have run at its quota, used {used} ms: {run:?}");
}

fn cannot_exceed_its_memory_limit(t: &At) {
    probe_host(&["membomb", "256"]).assert_escaped();
    let sb = Sandbox::new();
    let run = sb.probe(&t.with(&["--memory", "64Mi"]), &["membomb", "256"]);
    assert_eq!(run.code, 137, "{run:?}");
    assert_eq!(run.reason(), "oom_killed", "{run:?}");
    assert!(run.usage("peak_memory_bytes") <= 64 << 20, "{run:?}");
    assert!(run.usage("oom_kills") >= 1, "{run:?}");
}

fn fork_bomb_hits_the_pids_limit(t: &At) {
    probe_host(&["forkbomb", "200"]).assert_escaped();
    let sb = Sandbox::new();
    sb.probe(&t.with(&["--pids", "32"]), &["forkbomb", "200"]).assert_prevented();
}

fn cannot_see_or_signal_host_processes(t: &At) {
    let sb = Sandbox::new();
    let mut victim = Victim::spawn();
    sb.probe(&t.flags(), &["see-pid", &victim.pid()]).assert_prevented();
    sb.probe(&t.flags(), &["signal", &victim.pid()]).assert_prevented();
    // The kill(2) of pid 1 inside must not reach anything outside either.
    // In a container pid 1 is the engine's init, running as the task's own
    // id: the task may signal its own init, which is no harm to the host.
    if !t.container {
        sb.probe(&t.flags(), &["signal", "1"]).assert_prevented();
    }
    assert!(victim.alive(), "the host process was killed from the sandbox");

    probe_host(&["see-pid", &victim.pid()]).assert_escaped();
    probe_host(&["signal", &victim.pid()]).assert_escaped();
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(!victim.alive(), "positive control: the unconfined probe should kill the victim");
}

fn cannot_ptrace_host_processes(t: &At) {
    let sb = Sandbox::new();
    let victim = Victim::spawn();
    sb.probe(&t.flags(), &["ptrace", &victim.pid()]).assert_prevented();
    probe_host(&["ptrace", &victim.pid()]).assert_escaped();
}

/// A listener on the host's loopback that counts connections.
fn host_listener() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            h.fetch_add(1, Ordering::SeqCst);
            let _ = s.read(&mut [0u8; 64]);
        }
    });
    (port, hits)
}

fn cannot_reach_host_network_listeners(t: &At) {
    let (port, hits) = host_listener();
    let port = port.to_string();
    let sb = Sandbox::new();
    sb.probe(&t.flags(), &["connect", "127.0.0.1", &port]).assert_prevented();
    sb.probe(&t.with(&["--network", "loopback"]), &["connect", "127.0.0.1", &port]).assert_prevented();
    assert_eq!(hits.load(Ordering::SeqCst), 0, "a sandboxed task reached the host's listener");

    probe_host(&["connect", "127.0.0.1", &port]).assert_escaped();
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(hits.load(Ordering::SeqCst), 1, "positive control: the host listener should see one connection");
}

fn loopback_gives_the_task_only_its_own_lo(t: &At) {
    let sb = Sandbox::new();
    sb.probe(&t.with(&["--network", "loopback"]), &["own-loopback"]).assert_escaped();
    if t.container {
        // The engine's `none` network is a private namespace with only
        // loopback: the same as `loopback` at this tier (README).
        sb.probe(&t.with(&["--network", "none"]), &["own-loopback"]).assert_escaped();
    } else {
        sb.probe(&t.with(&["--network", "none"]), &["own-loopback"]).assert_prevented();
    }
}

fn cannot_read_host_secrets(t: &At) {
    let sb = Sandbox::new();
    // Another task's workspace, warden's state, root's home.
    let other = Sandbox::new();
    std::fs::write(other.ws.path().join("secret"), "other tenant").unwrap();
    let other_secret = other.ws.path().join("secret");
    let root_secret = Path::new("/root").join(format!("warden-probe-{}", std::process::id()));
    std::fs::write(&root_secret, "root's").unwrap();
    let state_file = sb.state.path().join("secret");
    std::fs::write(&state_file, "state").unwrap();
    // A daemon's socket, as /run/docker.sock would be.
    let sock_path = Path::new("/run").join(format!("warden-probe-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&sock_path);
    let sock = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();

    let secrets = [
        vec!["read", "/etc/shadow"],
        vec!["read", root_secret.to_str().unwrap()],
        vec!["read", other_secret.to_str().unwrap()],
        vec!["read", state_file.to_str().unwrap()],
        vec!["list", "/root"],
        vec!["connect-unix", sock_path.to_str().unwrap()],
    ];
    for probe in &secrets {
        sb.probe(&t.flags(), probe).assert_prevented();
    }
    for probe in &secrets {
        probe_host(probe).assert_escaped();
    }
    drop(sock);
    let _ = std::fs::remove_file(&sock_path);
    let _ = std::fs::remove_file(&root_secret);
}

fn cannot_write_outside_workspace_and_tmp(t: &At) {
    let sb = Sandbox::new();
    let tag = std::process::id();
    let targets =
        [format!("/etc/warden-probe-{tag}"), format!("/usr/warden-probe-{tag}"), format!("/warden-probe-{tag}")];
    for target in &targets {
        sb.probe(&t.flags(), &["write", target]).assert_prevented();
        assert!(!Path::new(target).exists(), "{target} appeared on the host");
    }
    // Where writing is allowed, it works, and the workspace keeps it.
    sb.probe(&t.flags(), &["write", "/workspace/out"]).assert_escaped();
    assert!(sb.ws.path().join("out").exists());
    sb.probe(&t.flags(), &["write", "/tmp/scratch"]).assert_escaped();

    for t in &targets[..2] {
        probe_host(&["write", t]).assert_escaped();
        std::fs::remove_file(t).unwrap();
    }
}

fn cannot_mount(t: &At) {
    Sandbox::new().probe(&t.flags(), &["mount"]).assert_prevented();
    probe_host(&["mount"]).assert_escaped();
}

fn cannot_load_kernel_modules(t: &At) {
    Sandbox::new().probe(&t.flags(), &["module"]).assert_prevented();
    probe_host(&["module"]).assert_escaped();
}

fn cannot_use_keyrings(t: &At) {
    Sandbox::new().probe(&t.flags(), &["keyring"]).assert_prevented();
    probe_host(&["keyring"]).assert_escaped();
}

fn cannot_change_the_clock(t: &At) {
    Sandbox::new().probe(&t.flags(), &["settime"]).assert_prevented();
    probe_host(&["settime"]).assert_escaped();
}

fn cannot_change_the_host_name(t: &At) {
    let sb = Sandbox::new();
    sb.probe(&t.flags(), &["sethostname"]).assert_prevented();
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    sb.probe(&t.flags(), &["hostname-differs", &host]).assert_prevented();
    probe_host(&["sethostname"]).assert_escaped();
    probe_host(&["hostname-differs", &host]).assert_escaped();
}

fn cannot_open_raw_sockets(t: &At) {
    let sb = Sandbox::new();
    for kind in ["icmp", "packet"] {
        sb.probe(&t.with(&["--network", "loopback"]), &["raw-socket", kind]).assert_prevented();
        probe_host(&["raw-socket", kind]).assert_escaped();
    }
}

fn cannot_create_namespaces_or_io_urings(t: &At) {
    let sb = Sandbox::new();
    sb.probe(&t.flags(), &["userns"]).assert_prevented();
    sb.probe(&t.flags(), &["io-uring"]).assert_prevented();
    probe_host(&["userns"]).assert_escaped();
    probe_host(&["io-uring"]).assert_escaped();
}

fn cannot_gain_privileges_through_setuid_binaries(t: &At) {
    let sb = Sandbox::new();
    let id = sb.ws.path().join("id");
    std::fs::copy("/usr/bin/id", &id).unwrap();
    std::fs::set_permissions(&id, std::fs::Permissions::from_mode(0o4755)).unwrap();
    sb.probe(&t.flags(), &["setuid", "/workspace/id"]).assert_prevented();
    probe_host(&["setuid", id.to_str().unwrap()]).assert_escaped();
}

fn cannot_inject_into_the_callers_terminal(t: &At) {
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = || std::process::Stdio::from(pty.slave.try_clone().unwrap());
    let sb = Sandbox::new();
    let id = common::task_id("tty");
    let cmd = ["/usr/bin/python3", "/workspace/probe.py", "tiocsti", "1"];
    let run = sb.run_with(&id, &t.flags(), &cmd, |c| {
        c.stdout(slave()).stdin(slave());
    });
    assert_eq!(run.code, 1, "TIOCSTI on the caller's terminal must fail: {run:?}");
    let id = common::task_id("tty");
    let cmd = ["/usr/bin/python3", "/workspace/probe.py", "stdin-tty"];
    let run = sb.run_with(&id, &t.flags(), &cmd, |c| {
        c.stdout(slave()).stdin(slave());
    });
    assert_eq!(run.code, 1, "the task must not get the caller's terminal as stdin: {run:?}");

    let control = std::process::Command::new("/usr/bin/python3")
        .arg(common::probe_source())
        .args(["tiocsti", "1"])
        .stdout(slave())
        .status()
        .unwrap();
    assert_eq!(control.code(), Some(0), "positive control: root can inject into a terminal");
}

fn only_stdio_fds_are_inherited(t: &At) {
    // A pipe without close-on-exec leaks into every child unless closed.
    let (r, _w) = nix::unistd::pipe().unwrap();
    let flags = nix::fcntl::fcntl(&r, nix::fcntl::FcntlArg::F_GETFD).unwrap();
    assert_eq!(flags & libc::FD_CLOEXEC, 0);
    let sb = Sandbox::new();
    sb.probe(&t.flags(), &["fds"]).assert_prevented();
    probe_host(&["fds"]).assert_escaped();
}

fn caller_environment_does_not_leak(t: &At) {
    let sb = Sandbox::new();
    let id = common::task_id("env");
    let cmd = ["/usr/bin/python3", "/workspace/probe.py", "env", "WARDEN_PROBE_SECRET"];
    let run = sb.run_with(&id, &t.flags(), &cmd, |c| {
        c.env("WARDEN_PROBE_SECRET", "hunter2");
    });
    run.assert_prevented();
    let control = std::process::Command::new("/usr/bin/python3")
        .arg(common::probe_source())
        .args(["env", "WARDEN_PROBE_SECRET"])
        .env("WARDEN_PROBE_SECRET", "hunter2")
        .status()
        .unwrap();
    assert_eq!(control.code(), Some(0), "positive control: the variable is visible unconfined");
}
