#!/usr/bin/env bash
# Runs `molecule test` for the named scenarios (default: default) and always destroys the
# containers afterwards: a failing verify would otherwise leave them behind.
set -uo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
[ "$#" -gt 0 ] || set -- default
status=0
for scenario in "$@"; do
  echo "==> molecule test -s $scenario"
  if ! molecule test -s "$scenario"; then
    status=1
    echo "==> molecule: scenario $scenario failed; destroying its containers" >&2
    molecule destroy -s "$scenario" || true
  fi
done
exit "$status"
