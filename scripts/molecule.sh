#!/usr/bin/env bash
# Runs `molecule test` for the named scenarios (default: default), and always destroys a
# scenario's containers, also when it failed. Lanes joined with + run side by side, and the
# scenarios of one lane, joined with a comma, one after the other (`default+ssh,notes
# cluster`: default beside ssh then notes, then cluster); join only scenarios whose
# containers and networks differ. Each scenario's output is kept in
# .cache/test-results/molecule-<scenario>.log and its wall time in
# .cache/test-results/times.txt; when one fails, the lines that say what failed are printed
# again at the very end, where a CI log's tail shows them.
set -uo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
[ "$#" -gt 0 ] || set -- default
logs=.cache/test-results
mkdir -p "$logs"
: >"$logs/times.txt"

# One scenario; its output goes to its log (and to the terminal when it runs alone).
run_scenario() {
  local scenario=$1 alone=$2 log="$logs/molecule-$1.log" started status=0
  started=$(date +%s)
  echo "==> molecule test -s $scenario (output also in $log)"
  if [ "$alone" = 1 ]; then
    molecule test -s "$scenario" 2>&1 | tee "$log" || status=1
  else
    molecule test -s "$scenario" >"$log" 2>&1 || status=1
  fi
  if [ "$status" != 0 ]; then
    echo "==> molecule: scenario $scenario failed; destroying its containers" >&2
    molecule destroy -s "$scenario" >/dev/null 2>&1 || true
  fi
  printf '%s %s %s\n' "$scenario" "$(($(date +%s) - started))" "$([ "$status" = 0 ] && echo passed || echo failed)" \
    >>"$logs/times.txt"
  return "$status"
}

status=0
failed=()
for group in "$@"; do
  IFS=+ read -r -a lanes <<<"$group"
  if [ "${#lanes[@]}" = 1 ] && [[ "$group" != *,* ]]; then
    run_scenario "$group" 1 || status=1
    continue
  fi
  echo "==> molecule: ${lanes[*]} side by side (a comma: one after the other)"
  pids=()
  for lane in "${lanes[@]}"; do
    (
      lane_status=0
      IFS=, read -r -a scenarios <<<"$lane"
      for scenario in "${scenarios[@]}"; do
        run_scenario "$scenario" 0 || lane_status=1
      done
      exit "$lane_status"
    ) &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || status=1
  done
  # The whole output of each scenario that ran side by side, once all are done.
  for lane in "${lanes[@]}"; do
    IFS=, read -r -a scenarios <<<"$lane"
    for scenario in "${scenarios[@]}"; do
      sed -n '1,$p' "$logs/molecule-$scenario.log"
    done
  done
done
# Scenarios that failed, from their recorded status (lanes run in subshells).
while read -r scenario _ result; do
  [ "$result" = failed ] && failed+=("$scenario")
done <"$logs/times.txt"

echo "==> molecule: wall time per scenario (s)"
sed 's/^/    /' "$logs/times.txt"
for scenario in "${failed[@]}"; do
  log="$logs/molecule-$scenario.log"
  printf '\n==> molecule: scenario %s failed; what its log (%s) says:\n' "$scenario" "$log" >&2
  sed 's/\x1b\[[0-9;]*m//g' "$log" \
    | grep -a -E 'fatal:|FAILED|ERROR|Error:|failed=[1-9]|unreachable=[1-9]|Executed: Failed|^E  ' \
    | tail -n 60 >&2
done
exit "$status"
