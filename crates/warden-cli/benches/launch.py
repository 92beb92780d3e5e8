#!/usr/bin/env python3
"""Launch-latency benchmark of the process tier, side by side.

Times `warden run --tier process -- /bin/true` against bare /bin/true,
`unshare --pid --fork --mount --net --uts --ipc /bin/true` and bubblewrap
with a comparable sandbox. The commands run interleaved, round after round,
so that drift of this shared machine hits all of them alike; each round's
order is shuffled. Reports medians, p90 and the ratios to warden.

    sudo crates/warden-cli/benches/launch.py [--rounds 300] [--warden target/release/warden] [--json out.json]
"""

import argparse
import json
import os
import shutil
import statistics
import sys

import interleave


def commands(warden, state):
    bwrap = [
        "bwrap", "--unshare-all", "--die-with-parent", "--new-session",
        "--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc",
        "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
        "--symlink", "usr/sbin", "/sbin", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
        "--cap-drop", "ALL", "/bin/true",
    ]
    return {
        "bare /bin/true": ["/bin/true"],
        "unshare (pid,mount,net,uts,ipc)": ["unshare", "--pid", "--fork", "--mount", "--net", "--uts", "--ipc", "/bin/true"],
        "bubblewrap (userns, all namespaces)": bwrap,
        "warden run --tier process": [warden, "--state-dir", state, "run", "--tier", "process", "--", "/bin/true"],
    }


def favordynmods():
    with open("/proc/mounts") as f:
        return any("cgroup" in line and "favordynmods" in line for line in f)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--warden", default=os.path.join(os.path.dirname(__file__), "..", "..", "..", "target", "release", "warden"))
    ap.add_argument("--json")
    args = ap.parse_args()

    if os.geteuid() != 0:
        sys.exit("the benchmark needs root (warden and unshare create namespaces and cgroups)")
    for tool in ("unshare", "bwrap"):
        if not shutil.which(tool):
            sys.exit(f"`{tool}` is missing: apt-get install util-linux bubblewrap")
    state = "/var/tmp/warden-bench-state"
    cmds = commands(os.path.abspath(args.warden), state)
    times = interleave.run(cmds, args.rounds, args.warmup, 50)

    w = statistics.median(times["warden run --tier process"])
    rows = []
    print(f"\nhost: kernel {os.uname().release}, cgroup favordynmods {'on' if favordynmods() else 'off'}, {args.rounds} rounds")
    print(f"{'command':40} {'median ms':>10} {'p90 ms':>8} {'warden / this':>14}")
    for name in cmds:
        xs = sorted(times[name])
        med = statistics.median(xs)
        p90 = xs[int(len(xs) * 0.9)]
        rows.append({"command": name, "median_ms": med, "p90_ms": p90, "warden_ratio": w / med})
        print(f"{name:40} {med:10.2f} {p90:8.2f} {w / med:13.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"favordynmods": favordynmods(), "rounds": args.rounds, "results": rows}, f, indent=2)


if __name__ == "__main__":
    main()
