#!/usr/bin/env bash
# Runs `molecule test` for the named scenarios (default: default), and always destroys a
# scenario's containers, also when it failed. Scenarios joined with + run side by side
# (`default+ssh cluster`: default and ssh together, then cluster); join only scenarios whose
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
  IFS=+ read -r -a scenarios <<<"$group"
  if [ "${#scenarios[@]}" = 1 ]; then
    run_scenario "${scenarios[0]}" 1 || { status=1; failed+=("${scenarios[0]}"); }
    continue
  fi
  echo "==> molecule: ${scenarios[*]} side by side"
  pids=()
  for scenario in "${scenarios[@]}"; do
    run_scenario "$scenario" 0 &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || { status=1; failed+=("${scenarios[$i]}"); }
    # The whole output of a scenario that ran side by side, once it is done.
    sed -n '1,$p' "$logs/molecule-${scenarios[$i]}.log"
  done
done

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
