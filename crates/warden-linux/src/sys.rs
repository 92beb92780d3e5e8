//! Thin wrappers over the syscalls that neither `std` nor `nix` offer:
//! `openat2`, `open_tree`, `mount_setattr`, `move_mount`, `pidfd_open`,
//! `pidfd_send_signal`, `close_range` and a fork-like `clone`.
//!
//! Everything here is async-signal-safe unless it says otherwise, so that
//! the sandbox can call it between `clone` and `execve`.

use std::ffi::CStr;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

pub const AT_RECURSIVE: u32 = 0x8000;
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const OPEN_TREE_CLONE: u32 = 1;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

fn check(rc: libc::c_long) -> io::Result<libc::c_long> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

/// Opens a directory as an `O_PATH` fd without following any symlink on
/// the way, so that a path cannot be swapped for a link to somewhere else.
pub fn open_dir_nofollow(path: &CStr) -> io::Result<OwnedFd> {
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: `path` is NUL-terminated and `how` is a valid open_how of the
    // size passed.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    })?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Clones the mount tree at `dirfd` into a detached mount (`OPEN_TREE_CLONE`).
pub fn open_tree_clone(dirfd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: an empty path with AT_EMPTY_PATH names `dirfd` itself.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            dirfd,
            c"".as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as u32 | AT_RECURSIVE | libc::AT_EMPTY_PATH as u32,
        )
    })?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sets mount attributes on `path` (relative to `dirfd`), recursively if
/// asked, with an id-mapping user namespace when `userns` is given.
pub fn mount_setattr(dirfd: RawFd, path: &CStr, flags: u32, set: u64, userns: Option<RawFd>) -> io::Result<()> {
    let attr = MountAttr { attr_set: set, attr_clr: 0, propagation: 0, userns_fd: userns.map_or(0, |fd| fd as u64) };
    // SAFETY: `path` is NUL-terminated, `attr` is a valid mount_attr of the
    // size passed.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(drop)
}

/// Attaches the detached mount `from` at `to`.
pub fn move_mount_attach(from: RawFd, to: &CStr) -> io::Result<()> {
    // SAFETY: both paths are NUL-terminated; the empty one names `from`.
    check(unsafe {
        libc::syscall(libc::SYS_move_mount, from, c"".as_ptr(), libc::AT_FDCWD, to.as_ptr(), MOVE_MOUNT_F_EMPTY_PATH)
    })
    .map(drop)
}

pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

pub fn pidfd_send_signal(pidfd: RawFd, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: plain syscall; a null siginfo means "as kill(2) would".
    check(unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd, sig, std::ptr::null::<u8>(), 0) }).map(drop)
}

/// Marks every fd from `first` up close-on-exec.
pub fn cloexec_from(first: u32) -> io::Result<()> {
    // SAFETY: plain syscall with integer arguments.
    check(unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) }).map(drop)
}

/// Closes every fd from `first` up.
pub fn close_from(first: u32) {
    // SAFETY: plain syscall; no fd above `first` is owned by live Rust
    // objects in the callers (the forked sandbox processes).
    unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0) };
}

/// A fork-like `clone` with extra flags: both processes return, the child
/// with 0. No atfork handlers run and libc's caches are not touched, so the
/// child must stick to raw syscalls until it execs or exits.
///
/// # Safety
/// The caller must make the child only use async-signal-safe operations
/// and never return into code that assumes it is the parent.
pub unsafe fn clone_fork(flags: libc::c_ulong) -> io::Result<libc::pid_t> {
    // SAFETY: a null stack makes the child run on a copy of the parent's
    // stack, as fork(2) does; the caller upholds the rest.
    let rc = unsafe {
        libc::syscall(libc::SYS_clone, flags | libc::SIGCHLD as libc::c_ulong, 0usize, 0usize, 0usize, 0usize)
    };
    check(rc).map(|pid| pid as libc::pid_t)
}
