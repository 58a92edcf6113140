"""Adds up the JUnit reports that `make test` writes and prints one closing line:
`tests: N passed, N failed, N skipped`, after each scenario's wall time (times.txt beside the
reports, from scripts/molecule.sh), the figures tests recorded (record_property "figure"), a
table of the load each operation ran under (record_property "load": requests, failed and
retried per method) and the names of the tests that failed. Exits 1 when a report is
missing, counts a failure, or has no test that passed (all skipped, or none collected)."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "WS")


def load_table(loads: list[dict]) -> list[str]:
    """Operation by method: requests/failed/retried in each cell, then the row's totals."""
    width = max(len(load["operation"]) for load in loads) + 2
    cells = [*METHODS, "all"]
    rows = [
        "load during each operation, requests/failed/retried per method (WS: WebSocket messages):",
        f"  {'operation':<{width}}" + "".join(f"{m:>13}" for m in cells),
    ]
    for load in loads:
        methods = load["methods"]
        totals = [sum(counts[i] for counts in methods.values()) for i in range(3)]
        row = [methods.get(m) for m in METHODS] + [totals]
        rows.append(
            f"  {load['operation']:<{width}}"
            + "".join(f"{'/'.join(map(str, c)) if c else '-':>13}" for c in row)
        )
    return rows


def properties(case: ET.Element, name: str) -> list[str]:
    """The values a test recorded with record_property(name, ...)."""
    return [prop.get("value", "") for prop in case.iter("property") if prop.get("name") == name]


def main(paths: list[str]) -> int:
    passed = failed = skipped = 0
    figures: list[str] = []
    loads: list[dict] = []
    failures: list[str] = []
    for name in paths:
        path = Path(name)
        if not path.is_file():
            failures.append(f"  {path}: no report (its tests did not run)")
            continue
        root = ET.parse(path).getroot()
        suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
        report_passed = 0
        for suite in suites:
            total = int(suite.get("tests", 0))
            bad = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
            skip = int(suite.get("skipped", 0))
            failed += bad
            skipped += skip
            passed += total - bad - skip
            report_passed += total - bad - skip
            for case in suite.iter("testcase"):
                name = f"{path.stem}: {case.get('name')}"
                figures += [f"  {name}: {value}" for value in properties(case, "figure")]
                loads += [json.loads(value) for value in properties(case, "load")]
                for problem in [*case.findall("failure"), *case.findall("error")]:
                    message = (problem.get("message") or "").splitlines()
                    failures.append(f"  {name}: {message[0][:300] if message else problem.tag}")
        if report_passed == 0:
            failures.append(f"  {path}: no test passed (a scenario in which no test passed is a failure)")
    times = Path(paths[0]).parent / "times.txt" if paths else None
    if times is not None and times.is_file():
        print("wall time per scenario:")
        for line in times.read_text().splitlines():
            scenario, seconds, outcome = line.split()
            print(f"  {scenario}: {int(seconds) // 60}m{int(seconds) % 60:02d}s ({outcome})")
    if figures:
        print("figures:")
        print("\n".join(figures))
    if loads:
        print("\n".join(load_table(loads)))
    if failures:
        print("failed:")
        print("\n".join(failures))
    print(f"tests: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed or failures or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
