"""Interleaved timing shared by the benchmark scripts.

Each command is run once to check it works, then every round runs all of
them in a shuffled order, so that drift of this shared machine hits all of
them alike. Returns each command's wall times in milliseconds.
"""

import random
import subprocess
import sys
import time


def check(cmds):
    for name, argv in cmds.items():
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True)
        if r.returncode != 0:
            sys.exit(f"{name} failed: {r.stderr.decode(errors='replace')}")


def run(cmds, rounds, warmup, report_every):
    check(cmds)
    times = {name: [] for name in cmds}
    names = list(cmds)
    total = warmup + rounds
    for i in range(total):
        random.shuffle(names)
        for name in names:
            t = time.perf_counter_ns()
            subprocess.run(cmds[name], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=True)
            if i >= warmup:
                times[name].append((time.perf_counter_ns() - t) / 1e6)
        if (i + 1) % report_every == 0:
            print(f"  round {i + 1}/{total}", file=sys.stderr)
    return times
