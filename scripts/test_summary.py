"""Adds up the JUnit reports that `make test` writes and prints one closing line:
`tests: N passed, N failed, N skipped`, after each scenario's wall time (times.txt beside the
reports, from scripts/molecule.sh), the figures tests recorded (record_property "figure") and
the names of the tests that failed. Exits 1 when a report is missing, counts a failure, or
has no test that passed (all skipped, or none collected)."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def main(paths: list[str]) -> int:
    passed = failed = skipped = 0
    figures: list[str] = []
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
                figures += [
                    f"  {name}: {prop.get('value')}"
                    for prop in case.iter("property")
                    if prop.get("name") == "figure"
                ]
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
    if failures:
        print("failed:")
        print("\n".join(failures))
    print(f"tests: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed or failures or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
