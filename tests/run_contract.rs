//! The contract of `warden run` that schedulers script against: exit
//! statuses, signals, timeout, OOM, the result file, stdio, the workspace,
//! cleanup on every path, and clear errors for bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Sandbox, assert_no_leftovers, require_root, task_id, warden_bin};

#[test]
fn the_tasks_exit_code_passes_through() {
    if !require_root() {
        return;
    }
    let sb = Sandbox::new();
    let run = sb.run(&[], &["sh", "-c", "exit 3"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert_eq!(run.reason(), "exited");
    let r = run.result.as_ref().unwrap();
    assert_eq!(r["code"], 3);
    assert_eq!(sb.run(&[], &["true"]).code, 0);
}

#[test]
fn death_by_signal_is_128_plus_n() {
    if !require_root() {
        return;
    }
    let sb = Sandbox::new();
    let run = sb.run(&[], &["sh", "-c", "kill -TERM $$"]);
    assert_eq!(run.code, 143, "{run:?}");
    assert_eq!(run.reason(), "signaled");
    assert_eq!(run.result.as_ref().unwrap()["signal"], 15);
    let run = sb.run(&[], &["sh", "-c", "kill -KILL $$"]);
    assert_eq!(run.code, 137, "{run:?}");
    assert_eq!(run.reason(), "signaled", "a plain SIGKILL is not an OOM kill");
}

#[test]
fn missing_and_unexecutable_commands() {
    if !require_root() {
        return;
    }
    let sb = Sandbox::new();
    let run = sb.run(&[], &["no-such-command-anywhere"]);
    assert_eq!(run.code, 127, "{run:?}");
    assert_eq!(run.reason(), "not_found");
    assert!(run.stderr.contains("no-such-command-anywhere") && run.stderr.contains("not found"), "{run:?}");
    let run = sb.run(&[], &["/etc/passwd"]);
    assert_eq!(run.code, 126, "{run:?}");
    assert_eq!(run.reason(), "not_executable");
    let run = sb.run(&[], &["/workspace/probe.py"]);
    assert_eq!(run.code, 126, "not marked executable: {run:?}");
}

#[test]
fn timeout_is_124_and_kills_the_whole_tree() {
    if !require_root() {
        return;
    }
    let sb = Sandbox::new();
    let start = Instant::now();
    // The task ignores SIGTERM and leaves a background child: only the
    // SIGKILL after the grace period ends it, and with it the child.
    let marker = sb.ws.path().join("child-alive");
    let script = "trap '' TERM; (sleep 5; touch /workspace/child-alive) & sleep 100";
    let run = sb.run(&["--timeout", "1s"], &["sh", "-c", script]);
    let took = start.elapsed();
    assert_eq!(run.code, 124, "{run:?}");
    assert_eq!(run.reason(), "timeout");
    assert!(took < Duration::from_secs(8), "timeout took {took:?}");
    std::thread::sleep(Duration::from_secs(5));
    assert!(!marker.exists(), "a process of the task outlived the timeout");
}

#[test]
fn timeout_lets_a_task_that_honours_term_exit() {
    if !require_root() {
        return;
    }
    let sb = Sandbox::new();
    let run = sb.run(&["--timeout", "500ms"], &["sh", "-c", "trap 'exit 0' TERM; sleep 30 & wait"]);
    assert_eq!(run.code, 124, "a timed-out task is a timeout however it ends: {run:?}");
    assert!(run.usage("wall_ms") < 2500, "the task left on SIGTERM, no need to wait the grace: {run:?}");
}

#[test]
fn oom_is_137_with_reason() {
    if !require_root() {
        return;
    }
    let sb = Sandbox::new();
    let run = sb.run(&["--memory", "32Mi"], &["/usr/bin/python3", "-c", "b = bytearray(200 << 20)"]);
    assert_eq!(run.code, 137, "{run:?}");
    assert_eq!(run.reason(), "oom_killed");
}

#[test]
fn result_file_has_the_documented_fields() {
    if !require_root() {
        return;
    }
    let sb = Sandbox::new();
    let run = sb.run(&["--cpus", "0.5", "--memory", "128Mi", "--pids", "50"], &["sh", "-c", "echo hi"]);
    let r = run.result.expect("result file");
    for field in [
        "task_id",
        "tenant",
        "exit_code",
        "reason",
        "tier",
        "tier_history",
        "limits",
        "usage",
        "started_at",
        "finished_at",
    ] {
        assert!(!r[field].is_null(), "result lacks `{field}`: {r}");
    }
    assert_eq!(r["tier"], "process");
    assert_eq!(r["tier_history"][0]["tier"], "process");
    assert_eq!(r["limits"]["cpus"], "500m");
    assert_eq!(r["limits"]["memory"], "128Mi");
    assert_eq!(r["limits"]["pids"], 50);
    for field in ["cpu_user_ms", "cpu_sys_ms", "peak_memory_bytes", "wall_ms"] {
        assert!(r["usage"][field].is_u64(), "usage lacks `{field}`: {r}");
    }
    assert!(r["usage"]["peak_memory_bytes"].as_u64().unwrap() > 0);
    assert!(r["started_at"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn stdout_stderr_and_piped_stdin_pass_through() {
    if !require_root() {
        return;
    }
    let sb = Sandbox::new();
    let run = sb.run(&[], &["sh", "-c", "echo to-out; echo to-err >&2"]);
    assert_eq!(run.stdout, "to-out\n");
    assert!(run.stderr.contains("to-err"), "{run:?}");

    let mut child = sb
        .warden()
        .args(["run", "--workspace"])
        .arg(sb.ws.path())
        .args(["--", "tr", "a-z", "A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"piped data\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "PIPED DATA\n");
}

#[test]
fn signals_to_warden_reach_the_task() {
    if !require_root() {
        return;
    }
    let sb = Sandbox::new();
    for (sig, expect) in [(libc::SIGTERM, 7), (libc::SIGINT, 130)] {
        let id = task_id("sig");
        // On TERM the task exits 7; SIGINT keeps its default (death).
        let script = "trap 'exit 7' TERM; echo ready; while :; do sleep 0.05; done";
        let mut child = sb
            .warden()
            .args(["run", "--id", &id, "--workspace"])
            .arg(sb.ws.path())
            .args(["--", "sh", "-c", script])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = [0u8; 6];
        std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut line).unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::try_from(sig).unwrap(),
        )
        .unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(expect), "signal {sig}");
        assert_no_leftovers(&id, sb.state.path());
    }
}

#[test]
fn the_sandbox_is_the_documented_environment() {
    if !require_root() {
        return;
    }
    let sb = Sandbox::new();
    let script = "pwd; id -u; echo HOME=$HOME; echo PATH=$PATH; echo FOO=$FOO; hostname; \
                  ls /proc | grep -c '^[0-9]'; touch /tmp/ok && echo tmp-ok; df -k /tmp | tail -1";
    let run = sb.run(&["-e", "FOO=bar", "--tmp-size", "8Mi"], &["sh", "-c", script]);
    assert_eq!(run.code, 0, "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], "/workspace");
    assert_ne!(lines[1], "0", "the task must not run as root");
    assert_eq!(lines[2], "HOME=/tmp");
    assert!(lines[3].starts_with("PATH=/usr/local/sbin:"), "{lines:?}");
    assert_eq!(lines[4], "FOO=bar");
    assert!(lines[5].starts_with("warden-"), "{lines:?}");
    assert!(lines[6].parse::<u32>().unwrap() <= 5, "the task sees only its own processes: {lines:?}");
    assert_eq!(lines[7], "tmp-ok");
    let tmp_kb: u64 = lines[8].split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(tmp_kb, 8192, "/tmp is capped at --tmp-size: {lines:?}");
}

#[test]
fn the_workspace_keeps_the_tasks_files_owned_by_its_owner() {
    if !require_root() {
        return;
    }
    let sb = Sandbox::new();
    let run = sb.run(&[], &["sh", "-c", "echo result > out.txt && ls -ln /workspace/probe.py"]);
    assert_eq!(run.code, 0, "{run:?}");
    let out = sb.ws.path().join("out.txt");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "result\n");
    let ws_owner = std::fs::metadata(sb.ws.path()).unwrap().uid();
    assert_eq!(std::fs::metadata(&out).unwrap().uid(), ws_owner, "files belong to the workspace's owner");
}

#[test]
fn a_temporary_workspace_is_removed() {
    if !require_root() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let id = task_id("tempws");
    let out = Command::new(warden_bin())
        .arg("--state-dir")
        .arg(state.path())
        .args(["run", "--id", &id, "--", "sh", "-c", "pwd; echo x > f; ls -A"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "/workspace\nf\n");
    assert_no_leftovers(&id, state.path());
}

#[test]
fn a_spec_file_is_read_and_flags_override_it() {
    if !require_root() {
        return;
    }
    let sb = Sandbox::new();
    let spec = sb.state.path().join("task.yaml");
    std::fs::write(
        &spec,
        "command: [sh, -c, 'echo $GREETING; exit 4']\nenv: { GREETING: hello }\nresources: { memory: 64Mi }\n",
    )
    .unwrap();
    let id = task_id("spec");
    let out = sb
        .warden()
        .args(["run", "--id", &id, "--spec"])
        .arg(&spec)
        .arg("--workspace")
        .arg(sb.ws.path())
        .args(["--memory", "96Mi", "--result"])
        .arg(sb.state.path().join("r.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(sb.state.path().join("r.json")).unwrap()).unwrap();
    assert_eq!(r["limits"]["memory"], "96Mi", "the flag overrides the spec");
}

/// Runs `warden` with `args` and returns (status, stderr).
fn warden_err(args: &[&str]) -> (i32, String) {
    let out = Command::new(warden_bin()).args(args).stdin(Stdio::null()).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_input_is_125_with_an_error_that_names_the_field() {
    // None of these may start anything, so they need no root.
    let dir = tempfile::tempdir().unwrap();
    let bad_spec = dir.path().join("bad.yaml");
    std::fs::write(&bad_spec, "command: [true]\nresources:\n  memroy: 1Gi\n").unwrap();
    let bad_unit = dir.path().join("unit.yaml");
    std::fs::write(&bad_unit, "command: [true]\nresources: { memory: 12 parsecs }\n").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["run", "--memory", "64X", "--", "true"], "64X"),
        (vec!["run", "--cpus", "lots", "--", "true"], "lots"),
        (vec!["run", "--timeout", "30", "--", "true"], "missing unit"),
        (vec!["run", "--network", "host", "--", "true"], "host"),
        (vec!["run", "--tier", "vm", "--", "true"], "vm"),
        (vec!["run"], "command"),
        (vec!["run", "--env", "NOVALUE", "--", "true"], "KEY=VALUE"),
        (vec!["run", "--workspace", "/srv/../etc", "--", "true"], ".."),
        (vec!["run", "--spec", bad_spec.to_str().unwrap()], "memroy"),
        (vec!["run", "--spec", bad_unit.to_str().unwrap()], "resources.memory"),
        (vec!["run", "--spec", "/nonexistent/task.yaml"], "/nonexistent/task.yaml"),
        (vec!["run", "--tier", "container", "--", "true"], "container"),
        (vec!["run", "--id", "../x", "--", "true"], "id"),
    ];
    for (args, needle) in cases {
        let (code, err) = warden_err(&args);
        assert_eq!(code, 125, "{args:?} should exit 125: {err}");
        assert!(err.contains(needle), "{args:?}: the error should mention `{needle}`: {err}");
    }
}

#[test]
fn workspace_symlinks_and_system_dirs_are_refused() {
    if !require_root() {
        return;
    }
    let sb = Sandbox::new();
    let links = tempfile::tempdir().unwrap();
    let link = links.path().join("link");
    std::os::unix::fs::symlink("/etc", &link).unwrap();
    let inner = sb.ws.path().join("inner");
    std::fs::create_dir(&inner).unwrap();
    let via_link = links.path().join("wslink");
    std::os::unix::fs::symlink(sb.ws.path(), &via_link).unwrap();
    let state_dir = sb.state.path().to_str().unwrap().to_owned();
    let cases: Vec<(String, &str)> = vec![
        (link.to_str().unwrap().to_owned(), "symlink"),
        (format!("{}/inner", via_link.display()), "symlink"),
        ("/nonexistent-warden-ws".into(), "does not exist"),
        ("/etc".into(), "system directory"),
        ("/".into(), "whole host"),
        (format!("{state_dir}/workspaces"), "state directory"),
        (sb.ws.path().join("probe.py").to_str().unwrap().to_owned(), "not a directory"),
    ];
    for (ws, needle) in cases {
        let id = task_id("badws");
        let (code, err) = {
            let out = sb.warden().args(["run", "--id", &id, "--workspace", &ws, "--", "true"]).output().unwrap();
            (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
        };
        assert_eq!(code, 125, "workspace {ws} should be refused: {err}");
        assert!(err.contains(needle), "workspace {ws}: expected `{needle}` in: {err}");
        assert_no_leftovers(&id, sb.state.path());
    }
}

#[test]
fn a_duplicate_task_id_is_refused_without_harming_the_first() {
    if !require_root() {
        return;
    }
    let sb = Sandbox::new();
    let id = task_id("dup");
    let mut first = sb
        .warden()
        .args(["run", "--id", &id, "--workspace"])
        .arg(sb.ws.path())
        .args(["--", "sh", "-c", "echo up; sleep 2; echo done"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut up = [0u8; 3];
    std::io::Read::read_exact(first.stdout.as_mut().unwrap(), &mut up).unwrap();
    let out =
        sb.warden().args(["run", "--id", &id, "--workspace"]).arg(sb.ws.path()).args(["--", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already running"));
    let first = first.wait_with_output().unwrap();
    assert_eq!(first.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&first.stdout), "done\n");
    assert_no_leftovers(&id, sb.state.path());
}

#[test]
fn exit_code_99_is_never_used_by_warden() {
    // 99 is a common "unknown" code of other tools; warden's own are 124-127.
    let (code, _) = warden_err(&["run", "--bogus-flag"]);
    assert_eq!(code, 125);
    let (code, _) = warden_err(&["no-such-subcommand"]);
    assert_eq!(code, 125);
}

#[test]
fn help_documents_the_exit_codes() {
    let out = Command::new(warden_bin()).args(["run", "--help"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in ["124", "125", "126", "127", "137", "--timeout", "--workspace", "--result"] {
        assert!(help.contains(needle), "`warden run --help` should mention {needle}");
    }
}
