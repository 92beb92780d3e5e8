//! The process sandbox: a task in new user, pid, mount, network, uts, ipc
//! and cgroup namespaces, under a cgroup, a seccomp filter, rlimits, no
//! capabilities and `no_new_privs`, as an unprivileged uid.
//!
//! ```text
//! supervisor ──clone(NEW*)──▶ init (pid 1, root of the user namespace only)
//!   writes uid/gid maps,        builds the root: tmpfs + read-only host dirs,
//!   attaches the cgroup,        /proc, /dev, /tmp, /workspace; pivot_root;
//!   says "go" on a pipe         hostname; lo; setsid; then forks ──▶ task
//!                               and stays as its parent:          drops ids,
//!   ◀── setup errors (pipe, CLOEXEC: EOF = exec'd)                caps, rlimits,
//!   ◀── task status (pipe) ── forwards signals, reaps             seccomp; exec
//! ```
//!
//! init is the small per-task parent (containerd's shim plays that part):
//! the task's status flows through it, signals reach the task through it,
//! and killing it ends the whole pid namespace, so no process can outlive
//! the sandbox. A supervisor that should let tasks outlive it spawns with
//! `die_with_supervisor: false` and keeps the pid, the pidfd and the cgroup
//! path to adopt the sandbox again.

mod child;

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use warden_core::{Bytes, Network};

use crate::seccomp::Filter;
use crate::sys;
use child::{HostPath, Plan, STAGES, Stage};

/// How the sandbox maps ids: the user namespace's ids `0..count` are the
/// host's `base..base+count`; the task runs as `task_id` inside.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    pub id_base: u32,
    pub id_count: u32,
    pub task_id: u32,
    /// Host paths the task sees read-only (those that exist).
    pub host_paths: Vec<PathBuf>,
    /// Open files per process.
    pub nofile: u64,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            id_base: 1_000_000_000,
            id_count: 65_536,
            task_id: 1000,
            host_paths: ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc"]
                .into_iter()
                .map(PathBuf::from)
                .collect(),
            nofile: 1024,
        }
    }
}

impl SandboxConfig {
    /// The host uid (and gid) the task runs as.
    pub fn host_task_id(&self) -> u32 {
        self.id_base + self.task_id
    }
}

/// One task to start.
#[derive(Debug)]
pub struct SandboxSpec<'a> {
    pub argv: &'a [String],
    /// The complete environment (nothing else leaks in).
    pub env: &'a [(String, String)],
    pub workspace: &'a Path,
    pub network: Network,
    pub hostname: &'a str,
    pub tmp_size: Bytes,
    /// Give the task `/dev/null` as stdin instead of the caller's.
    pub stdin_null: bool,
    /// Kill the sandbox if the spawning thread dies.
    pub die_with_supervisor: bool,
}

/// Why a sandbox did not start.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("command `{command}` not found in the sandbox")]
    NotFound { command: String },
    #[error("command `{command}` cannot be executed: {source}")]
    NotExecutable { command: String, source: io::Error },
    #[error("sandbox setup failed to {stage}{detail}: {source}")]
    Setup { stage: &'static str, detail: String, source: io::Error },
    #[error("workspace `{path}`: {message}")]
    Workspace { path: PathBuf, message: String },
    #[error("failed to {what}: {source}")]
    Os { what: &'static str, source: io::Error },
}

fn os(what: &'static str) -> impl FnOnce(io::Error) -> SpawnError {
    move |source| SpawnError::Os { what, source }
}

/// How the task ended, as init saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskExit {
    Exited(i32),
    Signaled(i32),
    /// init itself was killed (the supervisor's SIGKILL, or the OOM
    /// killer), so the task's own status is unknown.
    Killed,
}

/// A running sandbox.
#[derive(Debug)]
pub struct Sandbox {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    status: File,
    reaped: bool,
}

fn cstring(s: impl AsRef<OsStr>) -> Result<CString, SpawnError> {
    CString::new(s.as_ref().as_bytes()).map_err(|_| SpawnError::Os {
        what: "pass a string containing NUL",
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| SpawnError::Os { what: "create a pipe", source: e.into() })
}

/// The highest capability number the kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(40)
}

/// Opens the workspace without following symlinks and checks it.
pub fn open_workspace(path: &Path) -> Result<OwnedFd, SpawnError> {
    let err = |message: String| SpawnError::Workspace { path: path.to_owned(), message };
    let c = cstring(path)?;
    let fd = sys::open_dir_nofollow(&c).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::EXDEV) => err("a part of the path is a symlink; give the real directory".into()),
        Some(libc::ENOENT) => err("does not exist".into()),
        Some(libc::ENOTDIR) => err("is not a directory".into()),
        _ => err(e.to_string()),
    })?;
    let meta = std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(|e| err(e.to_string()))?;
    let root = std::fs::metadata("/").map_err(|e| err(e.to_string()))?;
    if meta.dev() == root.dev() && meta.ino() == root.ino() {
        return Err(err("would expose the whole host".into()));
    }
    Ok(fd)
}

impl Sandbox {
    /// Starts `spec` in a new sandbox and returns once the command was
    /// executed (or failed to be).
    ///
    /// `join` puts the sandbox's init (by host pid) into the task's cgroup.
    /// It runs while init builds the filesystem view, so that creating the
    /// cgroup costs no time on the launch path; init forks the task only
    /// after `join` returned, so the task starts inside the cgroup.
    pub fn spawn<E: From<SpawnError>>(
        cfg: &SandboxConfig,
        spec: &SandboxSpec<'_>,
        filter: &Filter,
        join: impl FnOnce(u32) -> Result<(), E>,
    ) -> Result<Sandbox, E> {
        // The workspace is cloned as a detached mount here (the sandbox's
        // new mount namespace could not bind a path of this one) and
        // attached by init.
        let tree = workspace_view(spec.workspace, cfg.host_task_id(), false)?;

        tracing::trace!("workspace mount prepared");
        let (sync_r, sync_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (status_r, status_w) = pipe()?;
        let plan = build_plan(cfg, spec, filter, &tree, &sync_r, &err_w, &status_w)?;

        tracing::trace!("plan built");
        // Block every signal across the clone: the child inherits the mask
        // (init waits for signals with sigwaitinfo) and no handler of the
        // supervisor can run in it.
        let mut all: libc::sigset_t = unsafe_zeroed_sigset();
        let mut old: libc::sigset_t = unsafe_zeroed_sigset();
        // SAFETY: valid sigset pointers.
        unsafe {
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        }
        let flags = libc::CLONE_NEWUSER
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWNET
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWIPC;
        // SAFETY: the child runs `child::init_main`, which only makes raw
        // syscalls on `plan` and never returns.
        let pid = unsafe { sys::clone_fork(flags as libc::c_ulong) };
        if let Ok(0) = pid {
            child::init_main(&plan);
        }
        // SAFETY: restoring the mask saved above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
        let pid = pid.map_err(os("clone the sandbox"))?;
        drop((sync_r, err_w, status_w, tree));
        drop(plan);

        tracing::trace!(pid, "cloned");
        let pidfd = sys::pidfd_open(pid).map_err(os("open a pidfd"));
        let mut sandbox = match pidfd {
            Ok(pidfd) => Sandbox { pid, pidfd, status: File::from(status_r), reaped: false },
            Err(e) => {
                kill_and_reap(pid);
                return Err(e.into());
            }
        };
        let mut sync = File::from(sync_w);
        let released = sandbox
            .map_ids(cfg, &mut sync)
            .map_err(E::from)
            .and_then(|()| join(pid as u32))
            .and_then(|()| sandbox.release(cfg, spec, sync, err_r).map_err(E::from));
        if let Err(e) = released {
            sandbox.kill();
            let _ = sandbox.reap();
            return Err(e);
        }
        Ok(sandbox)
    }

    /// Writes the id maps and lets init start building its root.
    fn map_ids(&self, cfg: &SandboxConfig, sync: &mut File) -> Result<(), SpawnError> {
        let map = format!("0 {} {}\n", cfg.id_base, cfg.id_count);
        std::fs::write(format!("/proc/{}/uid_map", self.pid), &map).map_err(os("write the uid map"))?;
        std::fs::write(format!("/proc/{}/gid_map", self.pid), &map).map_err(os("write the gid map"))?;
        io::Write::write_all(sync, b"m").map_err(os("release the sandbox"))
    }

    /// Lets init fork the task (it is in the cgroup now) and waits until
    /// the command is executed.
    fn release(
        &mut self,
        cfg: &SandboxConfig,
        spec: &SandboxSpec<'_>,
        mut sync: File,
        err_r: OwnedFd,
    ) -> Result<(), SpawnError> {
        tracing::trace!("joined the cgroup");
        io::Write::write_all(&mut sync, b"g").map_err(os("release the sandbox"))?;
        drop(sync);

        let mut rec = [0u8; 8];
        let mut got = 0;
        let mut err = File::from(err_r);
        while got < rec.len() {
            match err.read(&mut rec[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(os("read the sandbox's setup report")(e)),
            }
        }
        if got == 0 {
            return Ok(());
        }
        let stage = u16::from_ne_bytes([rec[0], rec[1]]);
        let detail = u16::from_ne_bytes([rec[2], rec[3]]);
        let errno = i32::from_ne_bytes([rec[4], rec[5], rec[6], rec[7]]);
        let source = io::Error::from_raw_os_error(errno);
        let command = spec.argv.first().cloned().unwrap_or_default();
        if stage == Stage::Exec as u16 && detail == 0 {
            // The task exits 126/127 itself; collect it so nothing lingers.
            return Err(if errno == libc::ENOENT || errno == libc::ENOTDIR {
                SpawnError::NotFound { command }
            } else {
                SpawnError::NotExecutable { command, source }
            });
        }
        let detail = if stage == Stage::BindHost as u16 || stage == Stage::ReadOnly as u16 {
            cfg.host_paths
                .iter()
                .filter(|p| p.exists())
                .nth(usize::from(detail))
                .map(|p| format!(" {}", p.display()))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Err(SpawnError::Setup { stage: STAGES.get(usize::from(stage)).copied().unwrap_or("set up"), detail, source })
    }

    /// init's pid in the supervisor's pid namespace.
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// A pidfd of init: readable once the sandbox has ended.
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Sends `sig` to init, which forwards it to the task's process group.
    pub fn signal(&self, sig: libc::c_int) -> io::Result<()> {
        sys::pidfd_send_signal(self.pidfd.as_raw_fd(), sig)
    }

    /// Kills init, and with it every process of the sandbox.
    pub fn kill(&self) {
        let _ = self.signal(libc::SIGKILL);
    }

    /// Waits for init to end (blocking) and says how the task ended.
    pub fn reap(&mut self) -> io::Result<TaskExit> {
        if !self.reaped {
            let mut status = 0;
            loop {
                // SAFETY: waiting on our own child.
                let rc = unsafe { libc::waitpid(self.pid, &mut status, libc::__WALL) };
                if rc >= 0 {
                    break;
                }
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            self.reaped = true;
        }
        let mut rec = [0u8; 8];
        match self.status.read_exact(&mut rec) {
            Ok(()) => {
                let kind = u32::from_ne_bytes([rec[0], rec[1], rec[2], rec[3]]);
                let value = i32::from_ne_bytes([rec[4], rec[5], rec[6], rec[7]]);
                Ok(if kind == child::STATUS_SIGNALED { TaskExit::Signaled(value) } else { TaskExit::Exited(value) })
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(TaskExit::Killed),
            Err(e) => Err(e),
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill();
            let _ = self.reap();
        }
    }
}

fn kill_and_reap(pid: libc::pid_t) {
    // SAFETY: `pid` is our unreaped child, so it cannot have been reused.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), libc::__WALL);
    }
}

fn unsafe_zeroed_sigset() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; all-zero is the empty set.
    unsafe { std::mem::zeroed() }
}

#[allow(clippy::too_many_arguments)]
fn build_plan(
    cfg: &SandboxConfig,
    spec: &SandboxSpec<'_>,
    filter: &Filter,
    workspace_tree: &OwnedFd,
    sync_r: &OwnedFd,
    err_w: &OwnedFd,
    status_w: &OwnedFd,
) -> Result<Plan, SpawnError> {
    let root = PathBuf::from("/tmp");
    let at = |p: &str| cstring(root.join(p.trim_start_matches('/')));
    let mut host_paths = Vec::new();
    for p in &cfg.host_paths {
        let Ok(meta) = std::fs::symlink_metadata(p) else {
            continue;
        };
        let dst = cstring(root.join(p.strip_prefix("/").unwrap_or(p)))?;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(p).map_err(os("read a host symlink"))?;
            host_paths.push(HostPath::Symlink { target: cstring(target)?, dst });
        } else {
            host_paths.push(HostPath::Dir { src: cstring(p)?, dst });
        }
    }
    let dev_nodes = ["null", "zero", "full", "random", "urandom", "tty"]
        .iter()
        .map(|n| Ok((cstring(format!("/dev/{n}"))?, at(&format!("dev/{n}"))?)))
        .collect::<Result<Vec<_>, SpawnError>>()?;
    let dev_links = [
        ("/proc/self/fd", "dev/fd"),
        ("/proc/self/fd/0", "dev/stdin"),
        ("/proc/self/fd/1", "dev/stdout"),
        ("/proc/self/fd/2", "dev/stderr"),
    ]
    .iter()
    .map(|(t, d)| Ok((cstring(t)?, at(d)?)))
    .collect::<Result<Vec<_>, SpawnError>>()?;

    let path_var = spec.env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str()).unwrap_or(DEFAULT_PATH);
    let cmd = spec.argv.first().map(String::as_str).unwrap_or_default();
    let exec_candidates = if cmd.contains('/') {
        vec![cstring(cmd)?]
    } else {
        path_var
            .split(':')
            .map(|d| if d.is_empty() { "." } else { d })
            .map(|d| cstring(format!("{d}/{cmd}")))
            .collect::<Result<Vec<_>, _>>()?
    };
    let argv = spec.argv.iter().map(cstring).collect::<Result<Vec<_>, _>>()?;
    let envp = spec.env.iter().map(|(k, v)| cstring(format!("{k}={v}"))).collect::<Result<Vec<_>, _>>()?;
    let ptrs = |v: &[CString]| v.iter().map(|s| s.as_ptr()).chain([std::ptr::null()]).collect();
    let nofile_hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard)
        .unwrap_or(cfg.nofile);

    Ok(Plan {
        sync_read: sync_r.as_raw_fd(),
        err_write: err_w.as_raw_fd(),
        status_write: status_w.as_raw_fd(),
        die_with_parent: spec.die_with_supervisor,
        root: cstring(&root)?,
        host_paths,
        proc_dir: at("proc")?,
        proc_sys: at("proc/sys")?,
        dev_dir: at("dev")?,
        dev_nodes,
        dev_links,
        dev_shm: at("dev/shm")?,
        tmp_dir: at("tmp")?,
        tmp_opts: cstring(format!("mode=1777,size={}", spec.tmp_size.get()))?,
        workspace_dir: at("workspace")?,
        workspace_tree: workspace_tree.as_raw_fd(),
        hostname: cstring(spec.hostname)?,
        loopback: spec.network == Network::Loopback,
        stdin_null: spec.stdin_null,
        rlimits: vec![(libc::RLIMIT_NOFILE, cfg.nofile.min(nofile_hard)), (libc::RLIMIT_CORE, 0)],
        last_cap: last_cap(),
        uid: cfg.task_id,
        gid: cfg.task_id,
        seccomp: filter.clone(),
        exec_candidates,
        argv_ptrs: ptrs(&argv),
        env_ptrs: ptrs(&envp),
        argv,
        envp,
    })
}

/// PATH for tasks that do not set one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The workspace as the task sees it, as a detached mount: nosuid, nodev,
/// and, when `host_id` does not own it, id-mapped so that its owner
/// appears as `host_id` (and what the task creates is stored as the
/// owner's).
fn workspace_view(path: &Path, host_id: u32, root_too: bool) -> Result<OwnedFd, SpawnError> {
    let ws_fd = open_workspace(path)?;
    let ws_meta =
        std::fs::metadata(format!("/proc/self/fd/{}", ws_fd.as_raw_fd())).map_err(os("stat the workspace"))?;
    let owned = ws_meta.uid() == host_id && ws_meta.gid() == host_id;
    let idmap = (!owned || root_too).then(|| IdMap { uid: ws_meta.uid(), gid: ws_meta.gid(), host_id, root_too });
    workspace_tree(&ws_fd, idmap).map_err(|e| SpawnError::Workspace {
        path: path.to_owned(),
        message: format!("cannot mount it for the task: {e}"),
    })
}

/// Mounts the workspace as a task with host id `host_id` must see it (see
/// [`workspace_view`]) at the empty directory `at`, for a runtime that
/// bind-mounts a host path (the container tier). With `root_too`, root
/// keeps access to the view as well (gVisor's gofer creates files as root
/// before handing them to the task's id). Undo with [`unmount_workspace`].
pub fn mount_workspace(path: &Path, at: &Path, host_id: u32, root_too: bool) -> Result<(), SpawnError> {
    let tree = workspace_view(path, host_id, root_too)?;
    let target = cstring(at)?;
    sys::move_mount_attach(tree.as_raw_fd(), &target).map_err(|e| SpawnError::Workspace {
        path: path.to_owned(),
        message: format!("cannot mount it at {}: {e}", at.display()),
    })
}

/// Detaches what [`mount_workspace`] mounted at `at`.
pub fn unmount_workspace(at: &Path) -> io::Result<()> {
    let target = CString::new(at.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    // SAFETY: a NUL-terminated path; MNT_DETACH has no other arguments.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How a workspace view maps ids: files owned by `uid`/`gid` appear as
/// owned by `host_id`, and what the task creates is stored as the owner's.
/// With `root_too`, root is mapped as well (to itself, or, when root owns
/// the workspace, to the otherwise unused `host_id`).
struct IdMap {
    uid: u32,
    gid: u32,
    host_id: u32,
    root_too: bool,
}

impl IdMap {
    fn lines(&self, owner: u32) -> String {
        let mut map = format!("{owner} {} 1\n", self.host_id);
        if self.root_too && owner != self.host_id {
            let root_on_disk = if owner == 0 { self.host_id } else { 0 };
            map.push_str(&format!("{root_on_disk} 0 1\n"));
        }
        map
    }
}

/// Clones the workspace's mount tree as a detached mount, nosuid and
/// nodev, id-mapped by `idmap` when given.
fn workspace_tree(ws: &OwnedFd, idmap: Option<IdMap>) -> io::Result<OwnedFd> {
    let tree = sys::open_tree_clone(ws.as_raw_fd())?;
    let flags = sys::AT_RECURSIVE | libc::AT_EMPTY_PATH as u32;
    let set = sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV;
    match idmap {
        None => sys::mount_setattr(tree.as_raw_fd(), c"", flags, set, None)?,
        Some(m) => {
            let userns = mapping_userns(&m.lines(m.uid), &m.lines(m.gid))?;
            sys::mount_setattr(tree.as_raw_fd(), c"", flags, set | sys::MOUNT_ATTR_IDMAP, Some(userns.as_raw_fd()))?;
        }
    }
    Ok(tree)
}

/// A user namespace with the given maps, held by fd (its process is gone).
fn mapping_userns(uid_map: &str, gid_map: &str) -> io::Result<OwnedFd> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: the child only blocks on a read and exits.
    let pid = unsafe { sys::clone_fork(libc::CLONE_NEWUSER as libc::c_ulong)? };
    if pid == 0 {
        let mut b = 0u8;
        // SAFETY: raw syscalls on inherited fds, then exit. Every other fd,
        // the pipe's write end included, is closed so that the read sees
        // EOF when the parent is done.
        unsafe {
            child::close_all_but(&mut [r.as_raw_fd()]);
            libc::read(r.as_raw_fd(), (&mut b as *mut u8).cast(), 1);
            libc::_exit(0);
        }
    }
    drop(r);
    let result = (|| {
        std::fs::write(format!("/proc/{pid}/uid_map"), uid_map)?;
        std::fs::write(format!("/proc/{pid}/gid_map"), gid_map)?;
        let f = File::open(format!("/proc/{pid}/ns/user"))?;
        Ok(OwnedFd::from(f))
    })();
    drop(w);
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    result
}
