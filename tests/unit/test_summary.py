"""scripts/test_summary.py: the closing line, the load table, and the reports that fail."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from xml.sax.saxutils import quoteattr

SUMMARY = Path(__file__).resolve().parents[2] / "scripts/test_summary.py"


def report(path: Path, cases: str, *, tests: int, skipped: int = 0, failures: int = 0) -> Path:
    path.write_text(
        f'<testsuites><testsuite tests="{tests}" failures="{failures}" errors="0" skipped="{skipped}">'
        f"{cases}</testsuite></testsuites>"
    )
    return path


def summary(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, SUMMARY, *paths], capture_output=True, text=True, check=False)


def test_load_records_print_as_a_table_of_operations_by_method(tmp_path: Path) -> None:
    load = {"operation": "rolling deploy", "methods": {"GET": [100, 0, 0], "WS": [5, 1, 2]}, "reconnected": 0}
    case = f'<testcase name="t"><properties><property name="load" value={quoteattr(json.dumps(load))}/>'
    done = summary(report(tmp_path / "a.xml", case + "</properties></testcase>", tests=1))
    assert done.returncode == 0, done.stdout
    header, row = done.stdout.splitlines()[1:3]
    assert header.split() == ["operation", "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "WS", "all"]
    assert row.split() == ["rolling", "deploy", "100/0/0", "-", "-", "-", "-", "-", "5/1/2", "105/1/2"]
    assert done.stdout.splitlines()[-1] == "tests: 1 passed, 0 failed, 0 skipped"


def test_a_report_with_no_passed_test_or_a_failure_or_none_at_all_fails(tmp_path: Path) -> None:
    passed = report(tmp_path / "passed.xml", '<testcase name="t"/>', tests=1)
    skipped = report(tmp_path / "skipped.xml", '<testcase name="t"><skipped/></testcase>', tests=1, skipped=1)
    failure = '<testcase name="t"><failure message="boom"/></testcase>'
    failed = report(tmp_path / "failed.xml", failure, tests=1, failures=1)
    assert summary(passed).returncode == 0
    for bad in (skipped, failed, tmp_path / "missing.xml"):
        done = summary(passed, bad)
        assert done.returncode == 1, (bad, done.stdout)
        assert bad.name in done.stdout
