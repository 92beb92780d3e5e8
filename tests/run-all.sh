#!/usr/bin/env bash
# The one test command (README): sets up a fresh Debian machine and runs
# every test. As root it installs what is missing; tests that need root or
# a daemon fail (WARDEN_REQUIRE_ALL=1) instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

need_pkgs=()
command -v python3 >/dev/null || need_pkgs+=(python3)
[ -x /usr/bin/python3 ] || need_pkgs+=(python3)
command -v unshare >/dev/null || need_pkgs+=(util-linux)
if ((${#need_pkgs[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${need_pkgs[*]} (run as root to install them)" >&2
    exit 1
  fi
  say "installing ${need_pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# The container tier: Docker, gVisor, a running engine, the test image.
if [ "$(id -u)" -eq 0 ]; then
  say "container engine"
  tests/docker/start-engine.sh
fi

# Build once, outside the clone, so that repeated runs reuse the cache.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/warden-target}"
export WARDEN_REQUIRE_ALL=1
export CARGO_TERM_COLOR=never

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

say "cargo test (unit, integration, end-to-end)"
cargo test --workspace --locked --no-fail-fast 2>&1 | tee /tmp/warden-test.log
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "\nall tests: %d passed, %d failed, %d ignored\n", p, f, i; printf "%d passed, %d failed\n", p, f }' /tmp/warden-test.log
