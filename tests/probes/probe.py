#!/usr/bin/python3
"""Hostile-workload probes for warden's sandbox tests.

Each probe tries to do one harmful thing. Exit status:
  0  the harm was done (the probe "escaped")
  1  the harm was prevented (the reason is printed)
  2  the probe itself is broken (bad arguments, unexpected state)

The same probe runs twice in a test: unconfined on the host, where it must
exit 0 (the positive control, proving the probe works), and inside the
sandbox, where it must exit 1.
"""

import ctypes
import errno
import os
import socket
import sys
import time

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def prevented(why):
    print(f"prevented: {why}")
    sys.exit(1)


def escaped(what):
    print(f"escaped: {what}")
    sys.exit(0)


def oserr(e):
    return errno.errorcode.get(e.errno, str(e.errno))


def syscall(nr, *args):
    r = libc.syscall(nr, *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    return r, ctypes.get_errno()


# x86_64 syscall numbers
NR = {
    "init_module": 175,
    "finit_module": 313,
    "add_key": 248,
    "io_uring_setup": 425,
    "unshare": 272,
    "clock_settime": 227,
    "ptrace": 101,
}


def p_read(path):
    try:
        with open(path, "rb") as f:
            data = f.read(64)
        escaped(f"read {len(data)} bytes of {path}")
    except OSError as e:
        prevented(f"{path}: {oserr(e)}")


def p_list(path):
    try:
        names = os.listdir(path)
        escaped(f"listed {len(names)} entries of {path}")
    except OSError as e:
        prevented(f"{path}: {oserr(e)}")


def p_write(path):
    try:
        with open(path, "w") as f:
            f.write("warden-probe\n")
        escaped(f"wrote {path}")
    except OSError as e:
        prevented(f"{path}: {oserr(e)}")


def p_connect(host, port):
    try:
        s = socket.create_connection((host, int(port)), timeout=2)
        s.sendall(b"warden-probe\n")
        s.close()
        escaped(f"connected to {host}:{port}")
    except OSError as e:
        prevented(f"{host}:{port}: {e}")


def p_connect_unix(path):
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2)
        s.connect(path)
        escaped(f"connected to {path}")
    except OSError as e:
        prevented(f"{path}: {e}")


def p_own_loopback():
    """Not hostile: a task asking for loopback must reach its own listener."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        srv.bind(("127.0.0.1", 0))
    except OSError as e:
        prevented(f"bind: {e}")
    srv.listen(1)
    port = srv.getsockname()[1]
    try:
        c = socket.create_connection(("127.0.0.1", port), timeout=2)
        c.close()
        escaped(f"reached own listener on {port}")
    except OSError as e:
        prevented(f"own listener: {e}")


def p_signal(pid):
    pid = int(pid)
    try:
        os.kill(pid, 15)
        escaped(f"sent SIGTERM to {pid}")
    except OSError as e:
        prevented(f"kill {pid}: {oserr(e)}")


def p_see_pid(pid):
    if os.path.exists(f"/proc/{pid}"):
        escaped(f"/proc/{pid} is visible")
    prevented(f"/proc/{pid} not visible; visible pids: {[p for p in os.listdir('/proc') if p.isdigit()]}")


def p_ptrace(pid):
    PTRACE_ATTACH, PTRACE_DETACH = 16, 17
    r, e = syscall(NR["ptrace"], PTRACE_ATTACH, int(pid), 0, 0)
    if r == 0:
        time.sleep(0.05)
        syscall(NR["ptrace"], PTRACE_DETACH, int(pid), 0, 0)
        escaped(f"attached to {pid}")
    prevented(f"ptrace {pid}: {errno.errorcode.get(e, e)}")


def p_mount():
    target = "/tmp/warden-probe-mnt"
    os.makedirs(target, exist_ok=True)
    r = libc.mount(b"none", target.encode(), b"tmpfs", 0, None)
    if r == 0:
        libc.umount2(target.encode(), 2)
        escaped("mounted a tmpfs")
    prevented(f"mount: {errno.errorcode.get(ctypes.get_errno())}")


def p_module():
    # finit_module on /dev/null: with the privilege, the kernel reads the
    # "module" and rejects it (ENOEXEC/EINVAL/EBADF); without it, EPERM.
    fd = os.open("/dev/null", os.O_RDONLY)
    r, e = syscall(NR["finit_module"], fd, b"", 0)
    if r == 0 or e != errno.EPERM:
        escaped(f"the kernel considered loading a module ({errno.errorcode.get(e, e)})")
    prevented("finit_module: EPERM")


def p_keyring():
    KEY_SPEC_PROCESS_KEYRING = -2
    r, e = syscall(NR["add_key"], b"user", b"warden-probe", b"x", 1, KEY_SPEC_PROCESS_KEYRING)
    if r >= 0:
        escaped(f"added key {r}")
    prevented(f"add_key: {errno.errorcode.get(e, e)}")


def p_settime():
    # Set the clock to what it already is: harmless when it works.
    class Timespec(ctypes.Structure):
        _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

    ts = Timespec()
    libc.clock_gettime(0, ctypes.byref(ts))
    r, e = syscall(NR["clock_settime"], 0, ctypes.byref(ts))
    if r == 0:
        escaped("set the realtime clock")
    prevented(f"clock_settime: {errno.errorcode.get(e, e)}")


def p_sethostname():
    # Set the host name to what it already is: harmless when it works.
    name = socket.gethostname().encode()
    r = libc.sethostname(name, len(name))
    if r == 0:
        escaped(f"set the host name ({name.decode()})")
    prevented(f"sethostname: {errno.errorcode.get(ctypes.get_errno())}")


def p_hostname_differs(host_name):
    mine = socket.gethostname()
    if mine == host_name:
        escaped(f"shares the host's name {mine}")
    prevented(f"own host name {mine}")


def p_raw_socket(kind):
    fam, typ, proto = {
        "icmp": (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
        "packet": (17, socket.SOCK_RAW, 0),
    }[kind]
    try:
        s = socket.socket(fam, typ, proto)
        s.close()
        escaped(f"opened a {kind} raw socket")
    except OSError as e:
        prevented(f"{kind}: {oserr(e)}")


def p_userns():
    CLONE_NEWUSER = 0x10000000
    pid = os.fork()
    if pid == 0:
        r, e = syscall(NR["unshare"], CLONE_NEWUSER)
        os._exit(0 if r == 0 else 1)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) == 0:
        escaped("created a user namespace")
    prevented("unshare(CLONE_NEWUSER) refused")


def p_io_uring():
    params = ctypes.create_string_buffer(120)
    r, e = syscall(NR["io_uring_setup"], 1, params)
    if r >= 0:
        os.close(r)
        escaped("set up an io_uring")
    prevented(f"io_uring_setup: {errno.errorcode.get(e, e)}")


def p_tiocsti(fd):
    import fcntl
    import termios

    try:
        fcntl.ioctl(int(fd), termios.TIOCSTI, b"#")
        escaped(f"injected a character into the terminal on fd {fd}")
    except OSError as e:
        prevented(f"TIOCSTI on fd {fd}: {oserr(e)}")


def p_stdin_tty():
    if os.isatty(0):
        escaped("stdin is a terminal")
    prevented("stdin is not a terminal")


def p_fds():
    fds = sorted(int(f) for f in os.listdir("/proc/self/fd"))
    # listdir itself holds one fd open while it runs.
    extra = [f for f in fds if f > 3]
    if extra:
        escaped(f"inherited fds {fds}")
    prevented(f"fds {fds}")


def p_env(name):
    if name in os.environ:
        escaped(f"{name} leaked in")
    prevented(f"{name} absent; env keys {sorted(os.environ)}")


def p_setuid(path):
    pid = os.fork()
    if pid == 0:
        if os.getuid() == 0:
            # Control run as root: drop to nobody so that only the setuid
            # bit could bring uid 0 back.
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
        r, w = os.pipe()
        if os.fork() == 0:
            os.dup2(w, 1)
            os.execv(path, [path, "-u"])
        os.close(w)
        out = os.read(r, 64).decode().strip()
        os.wait()
        os._exit(0 if out == "0" else 1)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) == 0:
        escaped(f"{path} ran with euid 0")
    prevented(f"{path} did not run with euid 0")


def p_membomb(mib):
    chunks = []
    for _ in range(int(mib)):
        b = bytearray(1 << 20)
        for i in range(0, len(b), 4096):
            b[i] = 1
        chunks.append(b)
    escaped(f"allocated {mib} MiB")


def p_forkbomb(n):
    n = int(n)
    kids = []
    for i in range(n):
        try:
            pid = os.fork()
        except OSError as e:
            for k in kids:
                os.kill(k, 9)
                os.waitpid(k, 0)
            prevented(f"fork {i} of {n}: {oserr(e)}")
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        kids.append(pid)
    for k in kids:
        os.kill(k, 9)
        os.waitpid(k, 0)
    escaped(f"forked {n} processes")


def p_spin(seconds):
    """Burns CPU for `seconds` of wall time; the test judges by usage."""
    end = time.monotonic() + float(seconds)
    while time.monotonic() < end:
        pass
    t = os.times()
    print(f"cpu {t.user + t.system:.3f}s over {seconds}s")
    sys.exit(0)


PROBES = {
    "read": p_read,
    "list": p_list,
    "write": p_write,
    "connect": p_connect,
    "connect-unix": p_connect_unix,
    "own-loopback": p_own_loopback,
    "signal": p_signal,
    "see-pid": p_see_pid,
    "ptrace": p_ptrace,
    "mount": p_mount,
    "module": p_module,
    "keyring": p_keyring,
    "settime": p_settime,
    "sethostname": p_sethostname,
    "hostname-differs": p_hostname_differs,
    "raw-socket": p_raw_socket,
    "userns": p_userns,
    "io-uring": p_io_uring,
    "tiocsti": p_tiocsti,
    "stdin-tty": p_stdin_tty,
    "fds": p_fds,
    "env": p_env,
    "setuid": p_setuid,
    "membomb": p_membomb,
    "forkbomb": p_forkbomb,
    "spin": p_spin,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in PROBES:
        print(f"usage: probe.py {{{','.join(PROBES)}}} [args]", file=sys.stderr)
        sys.exit(2)
    try:
        PROBES[sys.argv[1]](*sys.argv[2:])
    except TypeError as e:
        print(f"bad arguments: {e}", file=sys.stderr)
        sys.exit(2)
