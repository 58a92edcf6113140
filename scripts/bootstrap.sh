#!/usr/bin/env bash
# Prepares a bare Debian machine for `make demo` and `make test`, and is safe to run again:
#   1. Debian packages: the Docker engine, debootstrap, the SSH client (the ssh scenario),
#      wrk (scripts/wrk_reloads.py) and testssl.sh (the default scenario's TLS scan);
#   2. a running Docker engine (an engine that already answers is left alone);
#   3. the pinned controller toolchain in .venv (reinstalled only when requirements.txt changes);
#   4. the systemd test images (built from Debian's mirror only when missing).
# Each step says what it is doing. Set BOOTSTRAP_SKIP_IMAGES=1 to skip step 4.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

say() { printf '==> bootstrap: %s\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

need_pkgs=()
command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need_pkgs+=(debootstrap)
command -v ssh >/dev/null 2>&1 || need_pkgs+=(openssh-client)
command -v wrk >/dev/null 2>&1 || need_pkgs+=(wrk)
command -v testssl >/dev/null 2>&1 || need_pkgs+=(testssl.sh)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  say "installing Debian packages: ${need_pkgs[*]}"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_pkgs[@]}"
else
  say "Debian packages present (dockerd, debootstrap, ssh, wrk, testssl)"
fi

if docker info >/dev/null 2>&1; then
  say "Docker engine already running"
else
  say "starting the Docker engine (log: /var/log/dockerd.log)"
  as_root sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { echo "bootstrap: dockerd did not answer within 60 s; see /var/log/dockerd.log" >&2; exit 1; }
  say "Docker engine is up"
fi

stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  say "toolchain in .venv is current"
else
  say "installing the pinned toolchain into .venv (requirements.txt)"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
  echo "$want" >"$stamp"
fi

if [ "${BOOTSTRAP_SKIP_IMAGES:-0}" != 1 ]; then
  bash molecule/images/build.sh
fi
