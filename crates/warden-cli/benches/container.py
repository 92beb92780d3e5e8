#!/usr/bin/env python3
"""Container-tier benchmark: warden against the docker CLI, same run.

Times `warden run --tier container --runtime R --image IMG -- /bin/true`
against `docker run --rm --network none --runtime R IMG /bin/true`, for
runc and runsc. The commands run interleaved, round after round, in a
shuffled order, so that drift of this shared machine hits all alike.
Reports medians, p90 and warden's time over docker's for each runtime.

    sudo crates/warden-cli/benches/container.py [--rounds 40] [--image warden-test:latest]
        [--warden target/release/warden] [--docker /usr/bin/docker] [--json out.json]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

import interleave


def commands(warden, state, image, docker):
    cmds = {}
    for rt in ("runc", "runsc"):
        cmds[f"docker run --rm ({rt})"] = [
            docker, "run", "--rm", "--network", "none", "--runtime", rt, image, "/bin/true"]
        cmds[f"warden run --tier container ({rt})"] = [
            warden, "--state-dir", state, "run", "--tier", "container", "--runtime", rt, "--image", image,
            "--", "/bin/true"]
    return cmds


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--image", default="warden-test:latest")
    ap.add_argument("--docker", default="docker", help="the docker CLI to compare with")
    ap.add_argument("--warden", default=os.path.join(os.path.dirname(__file__), "..", "..", "..", "target", "release", "warden"))
    ap.add_argument("--json")
    args = ap.parse_args()

    if os.geteuid() != 0:
        sys.exit("the benchmark needs root")
    state = "/var/tmp/warden-bench-state"
    cmds = commands(os.path.abspath(args.warden), state, args.image, args.docker)
    version = subprocess.run([args.docker, "version", "--format", "{{.Client.Version}}"],
                             capture_output=True, text=True).stdout.strip()
    times = interleave.run(cmds, args.rounds, args.warmup, 10)

    rows = []
    print(f"\n{args.rounds} rounds, image {args.image}, docker CLI {version}")
    print(f"{'command':40} {'median ms':>10} {'p90 ms':>8} {'warden / docker':>16}")
    for rt in ("runc", "runsc"):
        d = statistics.median(times[f"docker run --rm ({rt})"])
        for name in (f"docker run --rm ({rt})", f"warden run --tier container ({rt})"):
            xs = sorted(times[name])
            med = statistics.median(xs)
            p90 = xs[int(len(xs) * 0.9)]
            rows.append({"command": name, "median_ms": med, "p90_ms": p90, "ratio_to_docker": med / d})
            print(f"{name:40} {med:10.1f} {p90:8.1f} {med / d:15.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rounds": args.rounds, "image": args.image, "results": rows}, f, indent=2)


if __name__ == "__main__":
    main()
