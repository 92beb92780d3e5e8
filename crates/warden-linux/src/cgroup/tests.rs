//! The v1 and v2 logic against temporary directories laid out like
//! cgroupfs. The real hierarchy is exercised by the root-only tests in
//! `tests/`.

use std::fs;
use std::path::Path;

use warden_core::{Bytes, LimitUpdate, MilliCpu};

use super::*;

fn limits() -> CgroupLimits {
    CgroupLimits { cpus: MilliCpu(500), memory: Bytes::mib(64), pids: 32 }
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap().trim().to_owned()
}

#[test]
fn detects_hybrid_v1_from_mountinfo() {
    let info = "\
25 1 0:23 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
26 25 0:24 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
27 25 0:25 / /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct
28 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
29 25 0:27 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
30 25 0:28 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer
31 25 0:29 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";
    let Hierarchy::V1(m) = Hierarchy::from_mountinfo(info).unwrap() else {
        panic!("expected v1");
    };
    assert_eq!(m.memory.as_deref(), Some(Path::new("/sys/fs/cgroup/memory")));
    assert_eq!(m.unified.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
}

#[test]
fn detects_comounted_cpu_cpuacct_and_pure_v2() {
    let info = "\
26 25 0:24 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
28 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
29 25 0:27 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
30 25 0:28 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer
";
    let Hierarchy::V1(m) = Hierarchy::from_mountinfo(info).unwrap() else {
        panic!("expected v1");
    };
    assert_eq!(m.cpu, m.cpuacct);
    let cg = v1::Cgroup::paths(&m, std::path::Path::new("warden/t"));
    assert_eq!(cg.dirs().len(), 4, "co-mounted controllers share a directory");

    let v2 = "24 1 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
    assert_eq!(Hierarchy::from_mountinfo(v2).unwrap(), Hierarchy::v2_at("/sys/fs/cgroup"));

    let err = Hierarchy::from_mountinfo("1 0 0:1 / / rw - ext4 /dev/vda rw\n").unwrap_err();
    assert!(err.to_string().contains("no usable cgroup hierarchy"), "{err}");
}

#[test]
fn v2_create_limits_update_and_remove() {
    let root = tempfile::tempdir().unwrap();
    let h = Hierarchy::v2_at(root.path());
    let cg = h.create("task-1", &limits()).unwrap();
    let dir = root.path().join("warden/task-1");
    assert_eq!(read(&root.path().join("cgroup.subtree_control")), "+cpu +memory +pids");
    assert_eq!(read(&dir.join("cpu.max")), "50000 100000");
    assert_eq!(read(&dir.join("memory.max")), (64u64 << 20).to_string());
    assert_eq!(read(&dir.join("pids.max")), "32");

    let after = cg.update(&LimitUpdate { cpus: Some(MilliCpu(2000)), memory: None, pids: Some(7) }).unwrap();
    assert_eq!(after.cpus, MilliCpu(2000));
    assert_eq!(after.pids, 7);
    assert_eq!(after.memory, Bytes::mib(64));

    // The same name twice would let two tasks share limits.
    assert!(h.create("task-1", &limits()).is_err());

    cg.attach(4242).unwrap();
    assert_eq!(read(&dir.join("cgroup.procs")), "4242");
    cg.remove().unwrap();
    assert!(!dir.exists());
}

#[test]
fn v2_stats_parse_kernel_files() {
    let root = tempfile::tempdir().unwrap();
    let cg = Hierarchy::v2_at(root.path()).create("s", &limits()).unwrap();
    let dir = root.path().join("warden/s");
    fs::write(
        dir.join("cpu.stat"),
        "usage_usec 900\nuser_usec 600\nsystem_usec 300\nnr_periods 10\nnr_throttled 4\nthrottled_usec 1234\n",
    )
    .unwrap();
    fs::write(dir.join("memory.current"), "1048576\n").unwrap();
    fs::write(dir.join("memory.peak"), "2097152\n").unwrap();
    fs::write(dir.join("memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n").unwrap();
    fs::write(dir.join("pids.current"), "5\n").unwrap();
    fs::write(dir.join("pids.events"), "max 2\n").unwrap();
    fs::write(
        dir.join("memory.pressure"),
        "some avg10=1.50 avg60=0.00 avg300=0.00 total=777\nfull avg10=0.25 avg60=0.00 avg300=0.00 total=99\n",
    )
    .unwrap();
    let s = cg.stats().unwrap();
    assert_eq!((s.cpu_usage_us, s.cpu_user_us, s.cpu_system_us), (900, 600, 300));
    assert_eq!((s.cpu_nr_throttled, s.cpu_throttled_us), (4, 1234));
    assert_eq!(s.memory_peak_bytes, Some(2 << 20));
    assert_eq!((s.oom_kills, s.memory_limit_hits, s.pids, s.pids_limit_hits), (1, 3, 5, 2));
    let p = s.memory_pressure.unwrap();
    assert_eq!((p.some_avg10, p.some_total_us, p.full_avg10, p.full_total_us), (1.5, 777, 0.25, 99));
    assert!(s.cpu_pressure.is_none());
}

#[test]
fn v2_freeze_writes_and_waits_for_the_event() {
    let root = tempfile::tempdir().unwrap();
    let cg = Hierarchy::v2_at(root.path()).create("f", &limits()).unwrap();
    let dir = root.path().join("warden/f");
    fs::write(dir.join("cgroup.events"), "populated 1\nfrozen 1\n").unwrap();
    cg.freeze().unwrap();
    assert_eq!(read(&dir.join("cgroup.freeze")), "1");
    // The kernel never reported thawed: the wait must time out, not pass.
    let err = cg.thaw().unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
}

#[test]
fn v2_update_that_does_not_take_is_reported() {
    let root = tempfile::tempdir().unwrap();
    let cg = Hierarchy::v2_at(root.path()).create("u", &limits()).unwrap();
    // A read-only pids.max stands in for a kernel that refuses the value.
    let pids = root.path().join("warden/u/pids.max");
    let err = files::write(&pids, "1").and_then(|()| {
        let mut perms = fs::metadata(&pids).unwrap().permissions();
        perms.set_readonly(true);
        fs::set_permissions(&pids, perms).unwrap();
        cg.update(&LimitUpdate { pids: Some(99), ..Default::default() }).map(|_| ())
    });
    // Root ignores file modes; then the write lands and reads back fine.
    if nix::unistd::geteuid().is_root() {
        assert!(err.is_ok());
    } else {
        assert!(err.unwrap_err().to_string().contains("pids.max"));
    }
}

#[test]
fn v1_create_spreads_over_controllers_and_cleans_up() {
    let root = tempfile::tempdir().unwrap();
    for c in ["cpu", "cpuacct", "memory", "pids", "freezer"] {
        fs::create_dir(root.path().join(c)).unwrap();
    }
    let h = Hierarchy::v1_at(root.path());
    let cg = h.create("t", &limits()).unwrap();
    let at = |c: &str, f: &str| read(&root.path().join(c).join("warden/t").join(f));
    assert_eq!(at("cpu", "cpu.cfs_quota_us"), "50000");
    assert_eq!(at("cpu", "cpu.cfs_period_us"), "100000");
    assert_eq!(at("memory", "memory.limit_in_bytes"), (64u64 << 20).to_string());
    assert_eq!(at("pids", "pids.max"), "32");
    cg.attach(77).unwrap();
    for c in ["cpu", "cpuacct", "memory", "pids", "freezer"] {
        assert_eq!(at(c, "cgroup.procs"), "77", "{c}");
    }
    cg.freeze().unwrap();
    assert_eq!(at("freezer", "freezer.state"), "FROZEN");
    cg.thaw().unwrap();
    cg.remove().unwrap();
    for c in ["cpu", "cpuacct", "memory", "pids", "freezer"] {
        assert!(!root.path().join(c).join("warden/t").exists());
    }
}

#[test]
fn v1_hybrid_uses_cgroup2_for_what_needs_no_controller() {
    let root = tempfile::tempdir().unwrap();
    for c in ["cpu", "cpuacct", "memory", "pids", "freezer", "unified"] {
        fs::create_dir(root.path().join(c)).unwrap();
    }
    let cg = Hierarchy::v1_at(root.path()).create("h", &limits()).unwrap();
    let dir = |c: &str| root.path().join(c).join("warden/h");
    // No cpuacct or freezer cgroup: the cgroup2 side counts CPU and freezes.
    assert!(!dir("cpuacct").exists() && !dir("freezer").exists());
    cg.attach(78).unwrap();
    for c in ["cpu", "memory", "pids", "unified"] {
        assert_eq!(read(&dir(c).join("cgroup.procs")), "78", "{c}");
    }
    fs::write(dir("unified").join("cgroup.events"), "populated 1\nfrozen 1\n").unwrap();
    cg.freeze().unwrap();
    assert_eq!(read(&dir("unified").join("cgroup.freeze")), "1");
    fs::write(dir("cpu").join("cpu.stat"), "nr_periods 5\nnr_throttled 2\nthrottled_time 3000000\n").unwrap();
    fs::write(dir("unified").join("cpu.stat"), "usage_usec 70\nuser_usec 50\nsystem_usec 20\n").unwrap();
    for (f, v) in [
        ("memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
        ("memory.usage_in_bytes", "4096"),
        ("memory.max_usage_in_bytes", "8192"),
        ("memory.failcnt", "9"),
    ] {
        fs::write(dir("memory").join(f), v).unwrap();
    }
    fs::write(dir("pids").join("pids.current"), "3").unwrap();
    let s = cg.stats().unwrap();
    assert_eq!((s.cpu_usage_us, s.cpu_user_us, s.cpu_system_us), (70, 50, 20));
    assert_eq!((s.cpu_nr_throttled, s.cpu_throttled_us), (2, 3000));
    assert_eq!((s.oom_kills, s.memory_peak_bytes, s.memory_limit_hits, s.pids), (2, Some(8192), 9, 3));
    cg.remove().unwrap();
    assert!(!dir("unified").exists() && !dir("cpu").exists());
}

#[test]
fn v1_failed_create_leaves_nothing() {
    let root = tempfile::tempdir().unwrap();
    // No `freezer` mount directory: creation fails part-way.
    for c in ["cpu", "cpuacct", "memory", "pids"] {
        fs::create_dir(root.path().join(c)).unwrap();
    }
    let err = Hierarchy::v1_at(root.path()).create("t", &limits()).unwrap_err();
    assert!(err.to_string().contains("freezer"), "{err}");
    for c in ["cpu", "cpuacct", "memory", "pids"] {
        assert!(!root.path().join(c).join("warden/t").exists(), "{c} left behind");
    }
}

#[test]
fn mountinfo_escapes_are_decoded() {
    assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
    assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
}
