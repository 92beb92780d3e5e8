#!/usr/bin/env bash
# Makes the container tier's test prerequisites true on a fresh Debian
# machine, as root: docker.io, runsc and busybox-static installed, a
# dockerd running with the project's daemon config (runsc registered with
# --network=none, no bridge, no iptables changes), and the test image
# built. Does nothing that is already done.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
say() { printf '==> %s\n' "$*"; }

pkgs=()
command -v dockerd >/dev/null || pkgs+=(docker.io)
[ -x /usr/bin/runsc ] || pkgs+=(runsc)
# The image needs a static busybox (ldd fails on a static binary).
if [ ! -x /bin/busybox ] || ldd /bin/busybox >/dev/null 2>&1; then pkgs+=(busybox-static); fi
if ((${#pkgs[@]})); then
  say "installing ${pkgs[*]}"
  # Keep the packages' init scripts from starting a daemon with their own
  # configuration (a bridge, iptables rules).
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi

if ! docker info >/dev/null 2>&1; then
  say "starting dockerd with tests/docker/daemon.json (log: /var/log/warden-dockerd.log)"
  nohup dockerd --config-file "$here/daemon.json" >/var/log/warden-dockerd.log 2>&1 &
  for _ in $(seq 1 150); do
    docker info >/dev/null 2>&1 && break
    sleep 0.2
  done
  docker info >/dev/null 2>&1 || { tail -20 /var/log/warden-dockerd.log >&2; echo "dockerd did not start" >&2; exit 1; }
fi
if ! docker info --format '{{json .Runtimes}}' | grep -q '"runsc"'; then
  echo "the running dockerd has no runsc runtime; start it with tests/docker/daemon.json" >&2
  exit 1
fi

say "building the test image warden-test:latest"
"$here/build-image.sh" warden-test:latest 2>&1 | grep -v -i -e deprecated -e buildx -e 'docs.docker' -e '^$' || true
docker image inspect warden-test:latest >/dev/null
