#!/usr/bin/env bash
# Runs `molecule test` for the named scenarios (default: default), one after the other, and
# always destroys a scenario's containers, also when it failed. Each scenario's output is kept
# in .cache/test-results/molecule-<scenario>.log; when one fails, the lines that say what
# failed are printed again at the very end, where a CI log's tail shows them.
set -uo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
[ "$#" -gt 0 ] || set -- default
logs=.cache/test-results
mkdir -p "$logs"
status=0
digest=""
for scenario in "$@"; do
  log="$logs/molecule-$scenario.log"
  echo "==> molecule test -s $scenario (output also in $log)"
  if ! molecule test -s "$scenario" 2>&1 | tee "$log"; then
    status=1
    echo "==> molecule: scenario $scenario failed; destroying its containers" >&2
    molecule destroy -s "$scenario" >/dev/null 2>&1 || true
    digest+=$'\n'"==> molecule: scenario $scenario failed; what its log ($log) says:"$'\n'
    digest+=$(sed 's/\x1b\[[0-9;]*m//g' "$log" \
      | grep -a -E 'fatal:|FAILED|ERROR|Error:|failed=[1-9]|unreachable=[1-9]|Executed: Failed|^E  ' \
      | tail -n 60)
  fi
done
if [ -n "$digest" ]; then
  printf '%s\n' "$digest" >&2
fi
exit "$status"
