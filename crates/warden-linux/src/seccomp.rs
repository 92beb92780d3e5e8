//! The seccomp-bpf filter of the process tier, assembled here without a
//! C library.
//!
//! It is at least as strict as Docker's default profile: every syscall that
//! profile refuses to an unprivileged container is refused here with
//! `EPERM` (kernel modules, keyrings, clocks, mounts and namespaces,
//! `bpf`, `perf_event_open`, `userfaultfd`, handles, reboot, swap, quotas,
//! NUMA policy…), and so are `io_uring` (which Docker 20.10 still allows),
//! `AF_VSOCK`/raw/packet sockets, terminal injection (`TIOCSTI`,
//! `TIOCLINUX`), namespace flags to `clone`, and odd `personality` values.
//! Syscall numbers above the highest one this build knows get `ENOSYS`, so
//! a syscall added to a future kernel is refused until it is reviewed, as
//! an allow-list would. A foreign architecture (x32, i386 on x86_64) is
//! refused before anything else.

use std::io;

/// A compiled filter, ready to install.
#[derive(Debug, Clone)]
pub struct Filter {
    prog: Vec<libc::sock_filter>,
}

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGT_K: u16 = 0x25;
const BPF_JGE_K: u16 = 0x35;
const BPF_JSET_K: u16 = 0x45;
const BPF_AND_K: u16 = 0x54;
const BPF_RET_K: u16 = 0x06;

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;

/// The obsolete packet socket type (libc deprecates the name).
const SOCK_PACKET: u32 = 10;

const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn off_arg_lo(i: u32) -> u32 {
    16 + 8 * i
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

/// The highest syscall number this build knows (`mseal`, Linux 6.10, and a
/// margin for calls reviewed since: `setxattrat`…`file_setattr`).
const MAX_KNOWN_NR: u32 = 469;

/// Namespace flags a sandboxed `clone` may not pass.
const CLONE_NS_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP
    | 0x80) as u32; // CLONE_NEWTIME

/// The `personality` values Docker allows (the last one queries).
const PERSONALITIES: [u32; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// Names a syscall constant of libc by its syscall name.
macro_rules! named {
    ($($sys:ident),* $(,)?) => {
        [$((stringify!($sys).trim_start_matches("SYS_"), libc::$sys)),*]
    };
}

/// Refused outright with EPERM: (name, number).
fn denied() -> Vec<(&'static str, i64)> {
    let mut v = named![
        SYS_acct,
        SYS_add_key,
        SYS_bpf,
        SYS_chroot,
        SYS_clock_adjtime,
        SYS_clock_settime,
        SYS_delete_module,
        SYS_fanotify_init,
        SYS_finit_module,
        SYS_fsconfig,
        SYS_fsmount,
        SYS_fsopen,
        SYS_fspick,
        SYS_get_mempolicy,
        SYS_init_module,
        SYS_io_uring_enter,
        SYS_io_uring_register,
        SYS_io_uring_setup,
        SYS_kcmp,
        SYS_kexec_file_load,
        SYS_kexec_load,
        SYS_keyctl,
        SYS_lookup_dcookie,
        SYS_mbind,
        SYS_mount,
        SYS_mount_setattr,
        SYS_move_mount,
        SYS_move_pages,
        SYS_name_to_handle_at,
        SYS_nfsservctl,
        SYS_open_by_handle_at,
        SYS_open_tree,
        SYS_perf_event_open,
        SYS_pivot_root,
        SYS_quotactl,
        SYS_quotactl_fd,
        SYS_reboot,
        SYS_request_key,
        SYS_set_mempolicy,
        SYS_setdomainname,
        SYS_sethostname,
        SYS_setns,
        SYS_settimeofday,
        SYS_swapoff,
        SYS_swapon,
        SYS_syslog,
        SYS_umount2,
        SYS_unshare,
        SYS_userfaultfd,
        SYS_vhangup,
    ]
    .to_vec();
    #[cfg(target_arch = "x86_64")]
    v.extend(named![
        SYS_adjtimex,
        SYS_ioperm,
        SYS_iopl,
        SYS_sysfs,
        SYS__sysctl,
        SYS_uselib,
        SYS_ustat,
        SYS_afs_syscall,
        SYS_tuxcall,
        SYS_security,
        SYS_vserver,
    ]);
    // Gone from libc's tables.
    #[cfg(target_arch = "x86_64")]
    v.extend([("create_module", 174), ("get_kernel_syms", 177), ("query_module", 178)]);
    v
}

/// A jump target inside the program being assembled.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Label {
    Next,
    /// Jump over this many instructions.
    Skip(u8),
    Allow,
    Eperm,
    Enosys,
}

enum Insn {
    Stmt(u16, u32),
    /// Conditional jump: (code, k, true-target, false-target).
    Jump(u16, u32, Label, Label),
}

struct Asm {
    code: Vec<Insn>,
}

impl Asm {
    fn load(&mut self, off: u32) {
        self.code.push(Insn::Stmt(BPF_LD_W_ABS, off));
    }
    fn ret(&mut self, k: u32) {
        self.code.push(Insn::Stmt(BPF_RET_K, k));
    }
    fn jump(&mut self, code: u16, k: u32, t: Label, f: Label) {
        self.code.push(Insn::Jump(code, k, t, f));
    }

    /// Resolves labels; the tail holds ALLOW, EPERM and ENOSYS returns.
    fn finish(mut self) -> io::Result<Vec<libc::sock_filter>> {
        self.ret(RET_ALLOW);
        let allow = self.code.len() - 1;
        self.ret(RET_ERRNO | libc::EPERM as u32);
        let eperm = self.code.len() - 1;
        self.ret(RET_ERRNO | libc::ENOSYS as u32);
        let enosys = self.code.len() - 1;
        let target = |l: Label, at: usize| -> io::Result<u8> {
            let to = match l {
                Label::Next => at + 1,
                Label::Skip(n) => at + 1 + usize::from(n),
                Label::Allow => allow,
                Label::Eperm => eperm,
                Label::Enosys => enosys,
            };
            u8::try_from(to - at - 1).map_err(|_| io::Error::other("seccomp filter jump longer than 255 instructions"))
        };
        let mut out = Vec::with_capacity(self.code.len());
        for (at, insn) in self.code.iter().enumerate() {
            out.push(match *insn {
                Insn::Stmt(code, k) => libc::sock_filter { code, jt: 0, jf: 0, k },
                Insn::Jump(code, k, t, f) => libc::sock_filter { code, jt: target(t, at)?, jf: target(f, at)?, k },
            });
        }
        Ok(out)
    }
}

impl Filter {
    /// The process tier's filter.
    pub fn sandbox_default() -> io::Result<Self> {
        use Label::*;
        let mut a = Asm { code: Vec::new() };
        a.load(OFF_ARCH);
        a.jump(BPF_JEQ_K, AUDIT_ARCH, Next, Eperm);
        a.load(OFF_NR);
        #[cfg(target_arch = "x86_64")]
        a.jump(BPF_JGE_K, 0x4000_0000, Eperm, Next); // the x32 ABI
        a.jump(BPF_JGT_K, MAX_KNOWN_NR, Enosys, Next);
        for (_, nr) in denied() {
            a.jump(BPF_JEQ_K, nr as u32, Eperm, Next);
        }
        // clone3 passes its flags in memory a filter cannot read: answer
        // ENOSYS so that libc falls back to clone, whose flags it can.
        a.jump(BPF_JEQ_K, libc::SYS_clone3 as u32, Enosys, Next);

        // Each argument check below starts with a test of the syscall
        // number whose false branch skips the check's body. The body ends
        // in ALLOW or EPERM, never falls through, and leaves A alone
        // otherwise (each body reloads what it needs, then the next test
        // reloads the number).

        // clone(flags, …): no namespace flags.
        a.jump(BPF_JEQ_K, libc::SYS_clone as u32, Next, Skip(2));
        a.load(off_arg_lo(0));
        a.jump(BPF_JSET_K, CLONE_NS_FLAGS, Eperm, Allow);

        // socket(domain, type, …): no vsock or packet sockets, no raw IP
        // sockets (netlink's SOCK_RAW is fine: `ip` needs it).
        a.jump(BPF_JEQ_K, libc::SYS_socket as u32, Next, Skip(9));
        a.load(off_arg_lo(0));
        a.jump(BPF_JEQ_K, libc::AF_VSOCK as u32, Eperm, Next);
        a.jump(BPF_JEQ_K, libc::AF_PACKET as u32, Eperm, Next);
        a.jump(BPF_JEQ_K, libc::AF_INET as u32, Skip(1), Next);
        a.jump(BPF_JEQ_K, libc::AF_INET6 as u32, Next, Allow);
        a.load(off_arg_lo(1));
        a.code.push(Insn::Stmt(BPF_AND_K, 0xf));
        a.jump(BPF_JEQ_K, libc::SOCK_RAW as u32, Eperm, Next);
        a.jump(BPF_JEQ_K, SOCK_PACKET, Eperm, Allow);

        // ioctl(fd, request, …): no faking terminal input.
        a.jump(BPF_JEQ_K, libc::SYS_ioctl as u32, Next, Skip(3));
        a.load(off_arg_lo(1));
        a.jump(BPF_JEQ_K, libc::TIOCSTI as u32, Eperm, Next);
        a.jump(BPF_JEQ_K, libc::TIOCLINUX as u32, Eperm, Allow);

        // personality(persona): only the values Docker allows.
        a.jump(BPF_JEQ_K, libc::SYS_personality as u32, Next, Skip(6));
        a.load(off_arg_lo(0));
        let (last, rest) = PERSONALITIES.split_last().unwrap_or((&0, &[]));
        for ok in rest {
            a.jump(BPF_JEQ_K, *ok, Allow, Next);
        }
        a.jump(BPF_JEQ_K, *last, Allow, Eperm);

        Ok(Filter { prog: a.finish()? })
    }

    /// The instructions, for inspection.
    pub fn len(&self) -> usize {
        self.prog.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prog.is_empty()
    }

    /// Installs the filter on the calling thread. Must follow
    /// `PR_SET_NO_NEW_PRIVS`. Async-signal-safe: it only makes a syscall,
    /// so the sandbox can call it between fork and exec.
    pub fn install(&self) -> io::Result<()> {
        let prog =
            libc::sock_fprog { len: self.prog.len() as u16, filter: self.prog.as_ptr() as *mut libc::sock_filter };
        // SAFETY: `prog` points at `self.prog`, which outlives the call; the
        // kernel copies the program before returning.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                1u32, // SECCOMP_SET_MODE_FILTER
                0u32,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
    }
}

/// The same rules as [`Filter::sandbox_default`], as an OCI seccomp
/// profile in Docker's JSON form, for the container tier (engines' own
/// default profiles differ by version, and some allow `io_uring` or vsock).
///
/// Docker's format cannot say "every number above N", so syscalls newer
/// than this build are not refused here as they are in the process tier;
/// nor can it say "arch is not x86_64" other than by listing the
/// architectures allowed, which it does.
pub fn oci_profile() -> serde_json::Value {
    use serde_json::json;
    let errno = |names: &[&str], errno: i32, args: serde_json::Value| json!({ "names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": errno, "args": args });
    let masked = |index: u32, mask: u64, value: u64| json!({ "index": index, "value": mask, "valueTwo": value, "op": "SCMP_CMP_MASKED_EQ" });
    let names: Vec<&str> = denied().iter().map(|(n, _)| *n).collect();
    let mut rules = vec![errno(&names, libc::EPERM, json!([])), errno(&["clone3"], libc::ENOSYS, json!([]))];
    // clone: one rule per namespace flag (rules are or-ed).
    for bit in (0..32).map(|b| 1u64 << b).filter(|b| u64::from(CLONE_NS_FLAGS) & b != 0) {
        rules.push(errno(&["clone"], libc::EPERM, json!([masked(0, bit, bit)])));
    }
    // socket: vsock and packet sockets; raw and packet types of IP.
    for domain in [libc::AF_VSOCK, libc::AF_PACKET] {
        rules.push(errno(&["socket"], libc::EPERM, json!([masked(0, 0xffff_ffff, domain as u64)])));
    }
    for domain in [libc::AF_INET, libc::AF_INET6] {
        for kind in [libc::SOCK_RAW as u64, u64::from(SOCK_PACKET)] {
            rules.push(errno(
                &["socket"],
                libc::EPERM,
                json!([masked(0, 0xffff_ffff, domain as u64), masked(1, 0xf, kind)]),
            ));
        }
    }
    for request in [libc::TIOCSTI, libc::TIOCLINUX] {
        rules.push(errno(&["ioctl"], libc::EPERM, json!([masked(1, 0xffff_ffff, request)])));
    }
    // personality: the format has no "none of these values" (libseccomp
    // refuses a second comparison of one argument, and a refusal beats an
    // allowance), so refuse every bit the allowed values do not use, and
    // anything above 32 bits. That allows exactly the allowed values but
    // the query 0xffffffff, which gets EPERM: stricter than the filter.
    let allowed_bits = PERSONALITIES.iter().filter(|v| **v != u32::MAX).fold(0, |acc, v| acc | v);
    for bit in (0..32).map(|b| 1u64 << b).filter(|b| u64::from(allowed_bits) & b == 0) {
        rules.push(errno(&["personality"], libc::EPERM, json!([masked(0, bit, bit)])));
    }
    rules.push(errno(
        &["personality"],
        libc::EPERM,
        json!([{ "index": 0, "value": u64::from(u32::MAX), "op": "SCMP_CMP_GT" }]),
    ));
    #[cfg(target_arch = "x86_64")]
    let arch = "SCMP_ARCH_X86_64";
    #[cfg(target_arch = "aarch64")]
    let arch = "SCMP_ARCH_AARCH64";
    json!({ "defaultAction": "SCMP_ACT_ALLOW", "architectures": [arch], "syscalls": rules })
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_oci_profile_refuses_what_the_filter_refuses() {
        let p = oci_profile();
        if let Ok(path) = std::env::var("WARDEN_DUMP_PROFILE") {
            std::fs::write(path, p.to_string()).unwrap();
        }
        assert_eq!(p["defaultAction"], "SCMP_ACT_ALLOW");
        let rules = p["syscalls"].as_array().unwrap();
        let names: Vec<&str> = rules[0]["names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
        for must in ["mount", "bpf", "io_uring_setup", "keyctl", "unshare", "setns", "perf_event_open"] {
            assert!(names.contains(&must), "{must} missing");
        }
        assert_eq!(names.len(), denied().len());
        let count = |name: &str| rules.iter().filter(|r| r["names"][0] == name).count();
        assert_eq!(count("clone"), CLONE_NS_FLAGS.count_ones() as usize);
        assert_eq!(count("socket"), 6);
        assert_eq!(count("ioctl"), 2);
        assert_eq!(count("personality"), 31);
    }

    use super::*;

    /// Runs the program over a fake `seccomp_data`, as the kernel would.
    fn eval(f: &Filter, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&AUDIT_ARCH.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let mut acc: u32 = 0;
        let mut pc = 0;
        loop {
            let i = f.prog[pc];
            match i.code {
                BPF_LD_W_ABS => {
                    let o = i.k as usize;
                    acc = u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
                }
                BPF_AND_K => acc &= i.k,
                BPF_RET_K => return i.k,
                BPF_JEQ_K | BPF_JGT_K | BPF_JGE_K | BPF_JSET_K => {
                    let taken = match i.code {
                        BPF_JEQ_K => acc == i.k,
                        BPF_JGT_K => acc > i.k,
                        BPF_JGE_K => acc >= i.k,
                        _ => acc & i.k != 0,
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                c => panic!("unexpected opcode {c:#x}"),
            }
            pc += 1;
        }
    }

    const EPERM: u32 = RET_ERRNO | libc::EPERM as u32;
    const ENOSYS: u32 = RET_ERRNO | libc::ENOSYS as u32;

    #[test]
    fn decides_like_the_profile_says() {
        let f = Filter::sandbox_default().unwrap();
        let nr = |n: i64| n as u32;
        assert_eq!(eval(&f, nr(libc::SYS_getpid), [0; 6]), RET_ALLOW);
        assert_eq!(eval(&f, nr(libc::SYS_mount), [0; 6]), EPERM);
        assert_eq!(eval(&f, nr(libc::SYS_keyctl), [0; 6]), EPERM);
        assert_eq!(eval(&f, nr(libc::SYS_io_uring_setup), [0; 6]), EPERM);
        assert_eq!(eval(&f, nr(libc::SYS_clone3), [0; 6]), ENOSYS);
        assert_eq!(eval(&f, 999, [0; 6]), ENOSYS);
        // clone: a thread is fine, a namespace is not.
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
        assert_eq!(eval(&f, nr(libc::SYS_clone), [thread, 0, 0, 0, 0, 0]), RET_ALLOW);
        let userns = libc::CLONE_NEWUSER as u64;
        assert_eq!(eval(&f, nr(libc::SYS_clone), [userns, 0, 0, 0, 0, 0]), EPERM);
        // socket: TCP is fine (the namespace has no route), raw is not.
        let (inet, stream, raw) = (libc::AF_INET as u64, libc::SOCK_STREAM as u64, libc::SOCK_RAW as u64);
        assert_eq!(eval(&f, nr(libc::SYS_socket), [inet, stream | libc::SOCK_CLOEXEC as u64, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(eval(&f, nr(libc::SYS_socket), [inet, raw, 0, 0, 0, 0]), EPERM);
        assert_eq!(eval(&f, nr(libc::SYS_socket), [libc::AF_VSOCK as u64, stream, 0, 0, 0, 0]), EPERM);
        assert_eq!(eval(&f, nr(libc::SYS_socket), [libc::AF_PACKET as u64, 2, 0, 0, 0, 0]), EPERM);
        let inet6 = libc::AF_INET6 as u64;
        assert_eq!(eval(&f, nr(libc::SYS_socket), [inet6, raw, 0, 0, 0, 0]), EPERM);
        assert_eq!(eval(&f, nr(libc::SYS_socket), [inet6, libc::SOCK_DGRAM as u64, 0, 0, 0, 0]), RET_ALLOW);
        let netlink = libc::AF_NETLINK as u64;
        assert_eq!(eval(&f, nr(libc::SYS_socket), [netlink, raw, 0, 0, 0, 0]), RET_ALLOW);
        // ioctl: TCGETS is fine, TIOCSTI is not.
        assert_eq!(eval(&f, nr(libc::SYS_ioctl), [1, libc::TCGETS, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(eval(&f, nr(libc::SYS_ioctl), [1, libc::TIOCSTI, 0, 0, 0, 0]), EPERM);
        assert_eq!(eval(&f, nr(libc::SYS_personality), [0xffff_ffff, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(eval(&f, nr(libc::SYS_personality), [0x0040_0000, 0, 0, 0, 0, 0]), EPERM);
        // Calls after the argument checks still reach ALLOW.
        assert_eq!(eval(&f, nr(libc::SYS_write), [1, 0, 0, 0, 0, 0]), RET_ALLOW);
    }

    #[test]
    fn foreign_architecture_is_refused() {
        let f = Filter::sandbox_default().unwrap();
        let mut data_arch_wrong = f.clone();
        // Evaluate with a different arch by flipping the expected constant.
        if let Some(i) = data_arch_wrong.prog.get_mut(1) {
            i.k ^= 1;
        }
        assert_eq!(eval(&data_arch_wrong, libc::SYS_getpid as u32, [0; 6]), EPERM);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(eval(&f, 0x4000_0000 | libc::SYS_getpid as u32, [0; 6]), EPERM);
    }
}
