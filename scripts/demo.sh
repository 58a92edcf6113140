#!/usr/bin/env bash
# `demo.sh up`: start a systemd container standing in for a VM, converge it with site.yml
# through inventories/demo, and print the URL. Running it again re-converges the same
# container. `demo.sh down`: remove it.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

name=asgikit-demo
image=asgikit/systemd:debian12
say() { printf '==> demo: %s\n' "$*"; }

down() {
  if docker inspect "$name" >/dev/null 2>&1; then
    docker rm -f "$name" >/dev/null
    say "removed the container $name"
  else
    say "no container $name to remove"
  fi
}

up() {
  if [ "$(docker inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" = true ]; then
    say "container $name is already running; converging it again"
  else
    docker rm -f "$name" >/dev/null 2>&1 || true
    say "starting $name from $image (systemd as PID 1), publishing 127.0.0.1:8443->443 and :8080->80"
    docker run -d --name "$name" --hostname "$name" \
      --cap-add SYS_ADMIN --cap-add NET_ADMIN \
      --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
      --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
      --tmpfs /run --tmpfs /run/lock \
      -p 127.0.0.1:8443:443 -p 127.0.0.1:8080:80 \
      "$image" /lib/systemd/systemd >/dev/null
  fi
  for _ in $(seq 1 60); do
    state=$(docker exec "$name" systemctl is-system-running 2>/dev/null || true)
    case "$state" in running|degraded) break ;; esac
    sleep 1
  done
  say "systemd in $name is ${state:-not answering}"
  say "ansible-playbook -i inventories/demo/hosts.yml site.yml"
  ansible-playbook -i inventories/demo/hosts.yml site.yml
  cat <<MSG

==> demo: the app is served at https://127.0.0.1:8443/ (self-signed certificate)
    curl -k https://127.0.0.1:8443/runtime
    curl -kI http://127.0.0.1:8080/          # redirects to https
    WebSocket echo: wss://127.0.0.1:8443/ws
    Remove it with: make demo-down
MSG
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
