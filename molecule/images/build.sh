#!/usr/bin/env bash
# Builds the systemd test images from Debian's mirror (no registry is needed):
#   asgikit/systemd:debian12 (bookworm) and asgikit/systemd:debian13 (trixie).
# An image that already exists is kept; FORCE=1 rebuilds. Pass suites to build only those:
#   molecule/images/build.sh bookworm
# The images stand in for fresh VMs: systemd as PID 1, python3, sudo and the base tools a
# cloud image ships (iproute2, procps, ca-certificates), and nothing the kit installs itself.
set -euo pipefail

mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
include=systemd,systemd-sysv,dbus,python3,sudo,iproute2,procps,ca-certificates
declare -A tags=([bookworm]=debian12 [trixie]=debian13)
suites=("$@")
[ "${#suites[@]}" -gt 0 ] || suites=(bookworm trixie)

say() { printf '==> images: %s\n' "$*"; }

build() {
  local suite=$1 image="asgikit/systemd:${tags[$1]}" root
  root=$(mktemp -d "/var/tmp/asgikit-rootfs-${suite}.XXXXXX")
  trap 'rm -rf "$root"' RETURN
  say "debootstrap $suite into $root (about a minute)"
  if ! debootstrap --variant=minbase --include="$include" "$suite" "$root" "$mirror" \
      >"$root.log" 2>&1; then
    echo "images: debootstrap $suite failed; last lines of $root.log:" >&2
    tail -n 20 "$root.log" >&2
    return 1
  fi
  # Each container must get its own machine id; an empty file makes systemd create one.
  : >"$root/etc/machine-id"
  rm -f "$root/var/lib/dbus/machine-id"
  # Units that have no job in a container and only slow boot down or fail.
  for unit in systemd-resolved.service getty.target console-getty.service \
              systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
  done
  apt_lists="$root/var/lib/apt/lists"
  rm -rf "${apt_lists:?}"/* "$root"/var/cache/apt/archives/*.deb
  tar -C "$root" -c . | docker import \
    -c 'ENV container=docker' \
    -c 'CMD ["/lib/systemd/systemd"]' \
    - "$image" >/dev/null
  rm -f "$root.log"
  say "built $image"
}

pids=()
for suite in "${suites[@]}"; do
  [ -n "${tags[$suite]:-}" ] || { echo "images: unknown suite '$suite' (known: ${!tags[*]})" >&2; exit 2; }
  image="asgikit/systemd:${tags[$suite]}"
  if [ "${FORCE:-0}" != 1 ] && docker image inspect "$image" >/dev/null 2>&1; then
    say "$image present"
    continue
  fi
  build "$suite" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit "$status"
