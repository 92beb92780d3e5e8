//! The code that runs in the sandbox between `clone` and `execve`.
//!
//! Two processes run it: the sandbox's init (pid 1 of the new pid
//! namespace), which builds the filesystem view and then stays as the
//! task's parent (forwarding signals, reaping orphans, reporting the
//! task's status), and the task, which drops every privilege and execs.
//!
//! The parent is typically multi-threaded, so nothing here allocates or
//! takes a lock: every path and string was prepared in [`Plan`] before the
//! clone, and only raw syscalls are made.

use std::ffi::{CStr, CString};
use std::os::fd::RawFd;
use std::ptr;

use crate::seccomp::Filter;
use crate::sys;

/// Where a setup step failed; the index names the step in [`STAGES`].
#[derive(Clone, Copy)]
#[repr(u16)]
pub enum Stage {
    Sync = 0,
    Ids,
    CgroupNs,
    Private,
    RootTmpfs,
    BindHost,
    ReadOnly,
    Proc,
    Dev,
    Tmp,
    Workspace,
    PivotRoot,
    Hostname,
    Loopback,
    Fork,
    Stdin,
    Chdir,
    Rlimit,
    DropCaps,
    NoNewPrivs,
    Seccomp,
    Exec,
}

pub const STAGES: &[&str] = &[
    "wait for the supervisor",
    "switch to the sandbox's ids",
    "enter a cgroup namespace",
    "make mounts private",
    "mount the root tmpfs",
    "bind a host directory",
    "make a mount read-only",
    "mount /proc",
    "populate /dev",
    "mount /tmp",
    "mount /workspace",
    "pivot into the new root",
    "set the host name",
    "bring up lo",
    "fork the task",
    "redirect stdin",
    "enter /workspace",
    "set resource limits",
    "drop capabilities",
    "set no_new_privs",
    "install the seccomp filter",
    "execute the command",
];

/// A host path mounted read-only in the sandbox.
pub enum HostPath {
    Dir { src: CString, dst: CString },
    Symlink { target: CString, dst: CString },
}

/// Everything the child needs, prepared before the clone.
pub struct Plan {
    pub sync_read: RawFd,
    pub err_write: RawFd,
    pub status_write: RawFd,
    pub die_with_parent: bool,
    pub root: CString,
    pub host_paths: Vec<HostPath>,
    pub proc_dir: CString,
    pub proc_sys: CString,
    pub dev_dir: CString,
    pub dev_nodes: Vec<(CString, CString)>,
    pub dev_links: Vec<(CString, CString)>,
    pub dev_shm: CString,
    pub tmp_dir: CString,
    pub tmp_opts: CString,
    pub workspace_dir: CString,
    /// A detached mount of the workspace, attached at `/workspace`.
    pub workspace_tree: RawFd,
    pub hostname: CString,
    pub loopback: bool,
    pub stdin_null: bool,
    pub rlimits: Vec<(libc::__rlimit_resource_t, libc::rlim_t)>,
    pub last_cap: u32,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub seccomp: Filter,
    pub exec_candidates: Vec<CString>,
    /// NULL-terminated pointers into `argv` and `envp`, built before the
    /// clone so that the task does not allocate.
    pub argv_ptrs: Vec<*const libc::c_char>,
    pub env_ptrs: Vec<*const libc::c_char>,
    /// The strings `argv_ptrs` and `env_ptrs` point into.
    #[allow(dead_code)]
    pub argv: Vec<CString>,
    #[allow(dead_code)]
    pub envp: Vec<CString>,
}

/// What init reports about the task on the status pipe.
pub const STATUS_EXITED: u32 = 0;
pub const STATUS_SIGNALED: u32 = 1;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Reports a failed step to the supervisor and exits.
fn fail(plan: &Plan, stage: Stage, detail: u16, err: i32, code: i32) -> ! {
    let mut rec = [0u8; 8];
    rec[0..2].copy_from_slice(&(stage as u16).to_ne_bytes());
    rec[2..4].copy_from_slice(&detail.to_ne_bytes());
    rec[4..8].copy_from_slice(&err.to_ne_bytes());
    // SAFETY: writing a stack buffer to a pipe fd we own; then exiting
    // without running any Rust or libc teardown.
    unsafe {
        libc::write(plan.err_write, rec.as_ptr().cast(), rec.len());
        libc::_exit(code)
    }
}

macro_rules! try_sys {
    ($plan:expr, $stage:expr, $detail:expr, $call:expr) => {
        if $call < 0 {
            fail($plan, $stage, $detail, errno(), 125)
        }
    };
}

fn mount(src: &CStr, dst: &CStr, fstype: Option<&CStr>, flags: libc::c_ulong, data: Option<&CStr>) -> libc::c_int {
    // SAFETY: all pointers are NUL-terminated strings or null.
    unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            fstype.map_or(ptr::null(), CStr::as_ptr),
            flags,
            data.map_or(ptr::null(), |d| d.as_ptr().cast()),
        )
    }
}

fn mkdir(p: &CStr, mode: libc::mode_t) -> libc::c_int {
    // SAFETY: `p` is NUL-terminated.
    let rc = unsafe { libc::mkdir(p.as_ptr(), mode) };
    if rc < 0 && errno() == libc::EEXIST { 0 } else { rc }
}

fn setattr(p: &CStr, recursive: bool, set: u64) -> libc::c_int {
    let flags = if recursive { sys::AT_RECURSIVE } else { 0 };
    match sys::mount_setattr(libc::AT_FDCWD, p, flags, set, None) {
        Ok(()) => 0,
        Err(_) => -1,
    }
}

/// Closes every fd but those in `keep` (which it sorts). Async-signal-safe.
pub fn close_all_but(keep: &mut [RawFd]) {
    keep.sort_unstable();
    let mut next: u32 = 0;
    for &fd in keep.iter() {
        let fd = fd as u32;
        if fd > next {
            // SAFETY: closing fds nothing in this process will use again.
            unsafe { libc::syscall(libc::SYS_close_range, next, fd - 1, 0) };
        }
        next = next.max(fd + 1);
    }
    sys::close_from(next);
}

// The id changes below are raw syscalls on purpose. libc's wrappers
// broadcast the change to every thread libc believes the process has; after
// a raw clone of a multi-threaded supervisor that list is stale and the
// broadcast waits forever for threads that do not exist here.

fn raw_setgroups_empty() -> libc::c_int {
    // SAFETY: a zero-length group list with a null pointer.
    unsafe { libc::syscall(libc::SYS_setgroups, 0, ptr::null::<libc::gid_t>()) as libc::c_int }
}

fn raw_setresgid(gid: libc::gid_t) -> libc::c_int {
    // SAFETY: plain syscall with integer arguments.
    unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) as libc::c_int }
}

fn raw_setresuid(uid: libc::uid_t) -> libc::c_int {
    // SAFETY: plain syscall with integer arguments.
    unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) as libc::c_int }
}

/// Blocks until the supervisor writes a byte; exits if it went away.
fn wait_for_supervisor(plan: &Plan) {
    let mut byte = 0u8;
    // SAFETY: a raw read into a stack byte.
    if unsafe { libc::read(plan.sync_read, (&mut byte as *mut u8).cast(), 1) } != 1 {
        fail(plan, Stage::Sync, 0, errno(), 125);
    }
}

/// The sandbox's init. Never returns.
pub fn init_main(plan: &Plan) -> ! {
    // SAFETY (whole function): only raw syscalls on data prepared in
    // `plan`, which the clone copied into this process.
    unsafe {
        if plan.die_with_parent {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        }
        // The clone copied every fd of the supervisor (its sockets, other
        // tasks' pipes): keep only the sandbox's own.
        close_all_but(&mut [plan.sync_read, plan.err_write, plan.status_write, plan.workspace_tree, 0, 1, 2]);
        // First word from the supervisor: the id maps are written.
        wait_for_supervisor(plan);

        // Become root of the new user namespace only: the ids map to an
        // unprivileged host range, and host root's groups are dropped.
        try_sys!(plan, Stage::Ids, 0, raw_setgroups_empty());
        try_sys!(plan, Stage::Ids, 1, raw_setresgid(0));
        try_sys!(plan, Stage::Ids, 2, raw_setresuid(0));

        build_root(plan);

        try_sys!(plan, Stage::Hostname, 0, libc::sethostname(plan.hostname.as_ptr(), plan.hostname.as_bytes().len()));
        if plan.loopback {
            loopback_up(plan);
        }
        // A new session: no controlling terminal, so nothing in the
        // sandbox can inject input into the caller's terminal.
        libc::setsid();

        // Second word: init is in the task's cgroup, so the task will be.
        wait_for_supervisor(plan);
        libc::close(plan.sync_read);
        try_sys!(plan, Stage::CgroupNs, 0, libc::unshare(libc::CLONE_NEWCGROUP));

        let task = match sys::clone_fork(0) {
            Ok(0) => task_main(plan),
            Ok(pid) => pid,
            Err(e) => fail(plan, Stage::Fork, 0, e.raw_os_error().unwrap_or(0), 125),
        };
        reap_loop(plan, task)
    }
}

/// Mounts the sandbox's filesystem view and pivots into it.
fn build_root(plan: &Plan) {
    let none = c"none";
    // SAFETY: raw syscalls on prepared strings.
    unsafe {
        try_sys!(plan, Stage::Private, 0, mount(none, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None));
        try_sys!(
            plan,
            Stage::RootTmpfs,
            0,
            mount(c"tmpfs", &plan.root, Some(c"tmpfs"), libc::MS_NOSUID | libc::MS_NODEV, Some(c"mode=0755,size=1m"))
        );
        for (i, hp) in plan.host_paths.iter().enumerate() {
            let i = i as u16;
            match hp {
                HostPath::Dir { src, dst } => {
                    try_sys!(plan, Stage::BindHost, i, mkdir(dst, 0o755));
                    try_sys!(plan, Stage::BindHost, i, mount(src, dst, None, libc::MS_BIND | libc::MS_REC, None));
                    let ro = sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV;
                    try_sys!(plan, Stage::ReadOnly, i, setattr(dst, true, ro));
                }
                HostPath::Symlink { target, dst } => {
                    try_sys!(plan, Stage::BindHost, i, libc::symlink(target.as_ptr(), dst.as_ptr()));
                }
            }
        }

        try_sys!(plan, Stage::Proc, 0, mkdir(&plan.proc_dir, 0o555));
        let noexec = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        try_sys!(plan, Stage::Proc, 1, mount(c"proc", &plan.proc_dir, Some(c"proc"), noexec, None));
        try_sys!(plan, Stage::Proc, 2, mount(&plan.proc_sys, &plan.proc_sys, None, libc::MS_BIND | libc::MS_REC, None));
        try_sys!(plan, Stage::Proc, 3, setattr(&plan.proc_sys, true, sys::MOUNT_ATTR_RDONLY));

        try_sys!(plan, Stage::Dev, 0, mkdir(&plan.dev_dir, 0o755));
        try_sys!(
            plan,
            Stage::Dev,
            1,
            mount(
                c"tmpfs",
                &plan.dev_dir,
                Some(c"tmpfs"),
                libc::MS_NOSUID | libc::MS_NOEXEC,
                Some(c"mode=0755,size=64k")
            )
        );
        for (i, (src, dst)) in plan.dev_nodes.iter().enumerate() {
            let fd = libc::open(dst.as_ptr(), libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC, 0o666);
            try_sys!(plan, Stage::Dev, 10 + i as u16, fd);
            libc::close(fd);
            try_sys!(plan, Stage::Dev, 10 + i as u16, mount(src, dst, None, libc::MS_BIND, None));
        }
        for (i, (target, dst)) in plan.dev_links.iter().enumerate() {
            try_sys!(plan, Stage::Dev, 30 + i as u16, libc::symlink(target.as_ptr(), dst.as_ptr()));
        }
        try_sys!(plan, Stage::Dev, 2, mkdir(&plan.dev_shm, 0o1777));
        try_sys!(
            plan,
            Stage::Dev,
            3,
            mount(c"tmpfs", &plan.dev_shm, Some(c"tmpfs"), libc::MS_NOSUID | libc::MS_NODEV, Some(&plan.tmp_opts))
        );
        try_sys!(plan, Stage::Dev, 4, setattr(&plan.dev_dir, false, sys::MOUNT_ATTR_RDONLY));

        try_sys!(plan, Stage::Tmp, 0, mkdir(&plan.tmp_dir, 0o1777));
        try_sys!(
            plan,
            Stage::Tmp,
            1,
            mount(c"tmpfs", &plan.tmp_dir, Some(c"tmpfs"), libc::MS_NOSUID | libc::MS_NODEV, Some(&plan.tmp_opts))
        );

        try_sys!(plan, Stage::Workspace, 0, mkdir(&plan.workspace_dir, 0o755));
        if sys::move_mount_attach(plan.workspace_tree, &plan.workspace_dir).is_err() {
            fail(plan, Stage::Workspace, 1, errno(), 125);
        }
        libc::close(plan.workspace_tree);

        try_sys!(plan, Stage::PivotRoot, 0, libc::chdir(plan.root.as_ptr()));
        try_sys!(plan, Stage::PivotRoot, 1, libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as i32);
        try_sys!(plan, Stage::PivotRoot, 2, libc::umount2(c".".as_ptr(), libc::MNT_DETACH));
        try_sys!(plan, Stage::PivotRoot, 3, libc::chdir(c"/".as_ptr()));
        let ro = sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV;
        try_sys!(plan, Stage::ReadOnly, 999, setattr(c"/", false, ro));
    }
}

/// Sets `lo` up in the sandbox's network namespace.
fn loopback_up(plan: &Plan) {
    // SAFETY: ioctl on a socket we own with a zeroed, correctly sized ifreq.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        try_sys!(plan, Stage::Loopback, 0, sock);
        let mut req: libc::ifreq = std::mem::zeroed();
        req.ifr_name[0] = b'l' as libc::c_char;
        req.ifr_name[1] = b'o' as libc::c_char;
        try_sys!(plan, Stage::Loopback, 1, libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req));
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        try_sys!(plan, Stage::Loopback, 2, libc::ioctl(sock, libc::SIOCSIFFLAGS, &req));
        libc::close(sock);
    }
}

/// The task: drop everything, then exec. Never returns.
fn task_main(plan: &Plan) -> ! {
    // SAFETY (whole function): raw syscalls on prepared data; on failure
    // `fail` reports and exits.
    unsafe {
        if plan.stdin_null {
            let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
            try_sys!(plan, Stage::Stdin, 0, fd);
            try_sys!(plan, Stage::Stdin, 1, libc::dup2(fd, 0));
            libc::close(fd);
        }
        try_sys!(plan, Stage::Chdir, 0, libc::chdir(c"/workspace".as_ptr()));
        for (i, (res, value)) in plan.rlimits.iter().enumerate() {
            let lim = libc::rlimit { rlim_cur: *value, rlim_max: *value };
            try_sys!(plan, Stage::Rlimit, i as u16, libc::setrlimit(*res, &lim));
        }

        // Default signal handling, nothing blocked: the supervisor's
        // ignored SIGPIPE and init's blocked set must not leak in.
        for sig in 1..libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, ptr::null_mut());
        libc::setpgid(0, 0);

        for cap in 0..=plan.last_cap {
            try_sys!(plan, Stage::DropCaps, cap as u16, libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0));
        }
        try_sys!(
            plan,
            Stage::DropCaps,
            100,
            libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
        );
        try_sys!(plan, Stage::DropCaps, 101, raw_setresgid(plan.gid));
        try_sys!(plan, Stage::DropCaps, 102, raw_setresuid(plan.uid));
        // Leaving uid 0 cleared the permitted and effective sets; clear
        // the inheritable set too.
        let header = CapHeader {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let data = [CapData::default(); 2];
        try_sys!(
            plan,
            Stage::DropCaps,
            103,
            libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) as i32
        );
        try_sys!(plan, Stage::NoNewPrivs, 0, libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));
        if sys::cloexec_from(3).is_err() {
            fail(plan, Stage::Exec, 0, errno(), 125);
        }
        if plan.seccomp.install().is_err() {
            fail(plan, Stage::Seccomp, 0, errno(), 125);
        }

        let mut saw_eacces = false;
        let mut last = libc::ENOENT;
        for path in &plan.exec_candidates {
            libc::execve(path.as_ptr(), plan.argv_ptrs.as_ptr(), plan.env_ptrs.as_ptr());
            last = errno();
            match last {
                libc::EACCES => saw_eacces = true,
                libc::ENOENT | libc::ENOTDIR => {}
                _ => break,
            }
        }
        let err = if saw_eacces && (last == libc::ENOENT || last == libc::ENOTDIR) { libc::EACCES } else { last };
        let code = if err == libc::ENOENT || err == libc::ENOTDIR { 127 } else { 126 };
        fail(plan, Stage::Exec, 0, err, code)
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// init's life after the fork: forward signals to the task's process
/// group, reap everything, and report the task's status when it ends.
fn reap_loop(plan: &Plan, task: libc::pid_t) -> ! {
    // SAFETY (whole function): raw syscalls; all signals were blocked
    // before the clone, so sigwaitinfo sees every one sent to init.
    unsafe {
        libc::close(plan.err_write);
        // init holds nothing the task or the caller needs.
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::dup2(null, 2);
            libc::close(null);
        }
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        loop {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let sig = libc::sigwaitinfo(&all, &mut info);
            if sig < 0 {
                continue;
            }
            if sig == libc::SIGCHLD {
                loop {
                    let mut status = 0;
                    let pid = libc::waitpid(-1, &mut status, libc::WNOHANG);
                    if pid <= 0 {
                        break;
                    }
                    if pid == task {
                        let (kind, value) = if libc::WIFSIGNALED(status) {
                            (STATUS_SIGNALED, libc::WTERMSIG(status))
                        } else {
                            (STATUS_EXITED, libc::WEXITSTATUS(status))
                        };
                        let mut rec = [0u8; 8];
                        rec[0..4].copy_from_slice(&kind.to_ne_bytes());
                        rec[4..8].copy_from_slice(&value.to_ne_bytes());
                        libc::write(plan.status_write, rec.as_ptr().cast(), rec.len());
                        // Leaving ends the pid namespace: the kernel kills
                        // whatever the task left running.
                        libc::_exit(0);
                    }
                }
            } else if libc::kill(-task, sig) < 0 {
                libc::kill(task, sig);
            }
        }
    }
}
