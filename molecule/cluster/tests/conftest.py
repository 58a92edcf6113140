"""Fixtures for the cluster scenario: the balancer and the app hosts, their published
ports, the wheels of each release, and runners for the kit's playbooks."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from asgikit_testing.clients import client_for, websocket_for
from asgikit_testing.containers import scenario_hosts
from asgikit_testing.load import (
    GET_ONLY,
    MIXED,
    BackgroundLoad,
    LoadResult,
    OperationRun,
    measure,
    report_rows,
)
from asgikit_testing.playbooks import Run, scenario_run
from asgikit_testing.wheels import IMPORT_ERROR, NEVER_READY, build_wheel

REPO = Path(__file__).resolve().parents[3]
BALANCER = "asgikit-lb"
APP_HOSTS = ("asgikit-app1", "asgikit-app2")
SERVICE = "refapp.service"
CURRENT = "/opt/refapp/current"
# The host's lock for the app, in the kit's locks directory (root's alone).
LOCKS = "/run/asgikit"
LOCK = f"{LOCKS}/refapp.lock"
V1_WHEEL = REPO / "app/dist/refapp-1.0.0-py3-none-any.whl"

# Every test module runs once, against the balancer; app hosts come from `app_hosts`.
testinfra_hosts = [f"ansible://{BALANCER}"]


@pytest.fixture(scope="session")
def app_hosts() -> dict[str, Any]:
    return scenario_hosts(*APP_HOSTS)


@pytest.fixture(scope="session")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    return {
        "1.0.0": V1_WHEEL,
        "2.0.0": build_wheel(out, "2.0.0"),
        "broken": build_wheel(out, "2.0.1+broken", IMPORT_ERROR),
        "unready": build_wheel(out, "2.0.2+unready", NEVER_READY),
    }


def run_playbook(name: str, *args: str) -> Run:
    """Runs playbooks/<name>.yml against the scenario's inventory, as an operator would."""
    return scenario_run(name, *args)


@pytest.fixture
def through_balancer() -> Callable[[], httpx.Client]:
    return client_for(BALANCER)


# Requests during each operation, at least: what README claims, asserted by each test.
MIN_REQUESTS = 20_000
ALL_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "WS"}


def under_load(
    make_client: Callable[[], httpx.Client], operation: Callable[[], Any], min_requests: int = MIN_REQUESTS
) -> tuple[OperationRun, Any]:
    """Runs `operation` under continuous GET load on /readyz and prints the load tool's table."""
    run, value = measure(make_client, operation, mix=GET_ONLY, threads=6, min_requests=min_requests)
    print("\n" + "\n".join(report_rows(run.phases())))
    return run, value


# The mixed load's concurrency: request threads, and WebSocket sessions.
MIXED_THREADS, MIXED_WEBSOCKETS = 6, 2


def under_mixed_load(
    container: str,
    operation: Callable[[], Any],
    min_requests: int = MIN_REQUESTS,
    concurrency: tuple[int, int] = (MIXED_THREADS, MIXED_WEBSOCKETS),
    beside: Iterable[BackgroundLoad] = (),
) -> tuple[OperationRun, Any]:
    """Runs `operation` under the mixed load (every method, and WebSocket sessions) straight
    at `container`'s published 443, and prints the table, per method. The operation phase
    lasts until this load, and each load running `beside` it, sent `min_requests`."""
    threads, websockets = concurrency
    run, value = measure(
        client_for(container),
        operation,
        mix=MIXED,
        threads=threads,
        make_websocket=websocket_for(container),
        websockets=websockets,
        min_requests=min_requests,
        beside=beside,
    )
    print("\n" + "\n".join(report_rows(run.phases())))
    return run, value


# Two loads at once share the mixed load's concurrency and its request count: each one has
# half of its threads and WebSocket sessions, and sends at least half of MIN_REQUESTS.
SHARED_THREADS, SHARED_WEBSOCKETS = MIXED_THREADS // 2, MIXED_WEBSOCKETS // 2
MIN_EACH = MIN_REQUESTS // 2


def under_two_mixed_loads(
    first: str, second: str, operation: Callable[[], Any]
) -> tuple[OperationRun, LoadResult, Any]:
    """Runs `operation` under the mixed load at `first` (the balancer, or an app host straight)
    and, at the same time, a second mixed load at `second`, each with half the concurrency.
    Returns the first load by phases, the second one during the first's operation phase, and
    what `operation` returned."""
    with BackgroundLoad(
        client_for(second),
        MIXED,
        threads=SHARED_THREADS,
        make_websocket=websocket_for(second),
        websockets=SHARED_WEBSOCKETS,
        max_seconds=600,
    ) as beside:
        run, value = under_mixed_load(
            first, operation, MIN_EACH, (SHARED_THREADS, SHARED_WEBSOCKETS), beside=(beside,)
        )
    during = beside.result.between(*run.window)
    print(f"{second}, at the same time:")
    print("\n".join(report_rows([("operation", during, run.seconds["operation"])])))
    return run, during, value


def record_loads(record_property: Callable[..., None], operation: str, loads: dict[str, LoadResult]) -> None:
    """Records each load that ran during `operation`, labelled `<operation>, <where it was
    sent>`, for the test summary's table."""
    for where, load in loads.items():
        record_property("load", load.record(f"{operation}, {where}"))


def assert_loads(*loads: LoadResult, none_failed: bool = True) -> None:
    """Each of two loads that ran at once sent at least MIN_EACH requests, of every method,
    and retried none; and, unless `none_failed` is False, none failed."""
    for load in loads:
        assert load.total >= MIN_EACH, load.summary()
        assert set(load.methods) == ALL_METHODS, load.summary()
        assert load.retried == 0, load.summary()
    if none_failed:
        for load in loads:
            assert load.failed == 0, load.summary()


ADMIN_SOCKET = "/run/haproxy/admin.sock"
HAPROXY_BACKEND = "app_hosts"


def balancer_servers(balancer: Any) -> dict[str, dict[str, str]]:
    """Each app host's row in HAProxy's `show stat` (status, scur, ...), read through the
    runtime API on the balancer."""
    out = balancer.check_output(f"echo 'show stat' | socat - UNIX-CONNECT:{ADMIN_SOCKET}")
    header, *rows = out.lstrip("# ").splitlines()
    fields = header.split(",")
    servers = {}
    for row in rows:
        values = dict(zip(fields, row.split(","), strict=False))
        if values.get("pxname") == HAPROXY_BACKEND and values.get("svname") in APP_HOSTS:
            servers[values["svname"]] = values
    return servers


# A line of the balancer's log (roles/haproxy: httplog with the handshake and idle times):
# the seven timers Th/Ti/TR/Tw/Tc/Tr/Ta, then the status.
BALANCER_LOG_STATUS = re.compile(r" (?:-?\d+/){6}-?\d+ (\d{3}) ")


def balancer_errors(minutes: int = 15) -> str:
    """The balancer's log lines of the last `minutes` whose status is 400 or above."""
    log = _docker_exec(BALANCER, f"journalctl --unit haproxy --output cat --since -{minutes}min")
    statuses = ((line, BALANCER_LOG_STATUS.search(line)) for line in log.splitlines())
    lines = [line for line, match in statuses if match and int(match[1]) >= 400]
    return "\n".join(lines[-40:]) or "(none)"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    """A failed test's report shows the balancer's answers of 400 and above, with their
    timers and termination state, for a failure that came through it."""
    report = yield
    if report.when == "call" and report.failed:
        try:
            errors = balancer_errors()
        except (subprocess.SubprocessError, OSError) as error:
            errors = f"could not read the balancer's log: {error!r}"
        report.sections.append(("the balancer's answers of 400 and above", errors))
    return report


def _docker_exec(container: str, command: str) -> str:
    argv = ["docker", "exec", container, "sh", "-c", command]
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout


@dataclass(frozen=True)
class Observation:
    """One look at the cluster: where each app host's `current` points (read first), then
    which app hosts HAProxy has drained."""

    current: dict[str, str]
    drained: frozenset[str]


class DrainWatch:
    """Looks at the cluster over and over (docker exec, a few per second) while an operation
    runs, to show which hosts were drained when their release changed."""

    def __init__(self) -> None:
        self.observations: list[Observation] = []
        self.error: Exception | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        try:
            self._run()
        except Exception as error:  # reported when the watch ends
            self.error = error

    def _run(self) -> None:
        while not self._stop.is_set():
            current = {name: _docker_exec(name, f"readlink {CURRENT}").strip() for name in APP_HOSTS}
            stat = _docker_exec(BALANCER, f"echo 'show stat' | socat - UNIX-CONNECT:{ADMIN_SOCKET}")
            drained = frozenset(
                row.split(",")[1]
                for row in stat.splitlines()
                if row.startswith(f"{HAPROXY_BACKEND},") and row.split(",")[17].startswith("DRAIN")
            )
            self.observations.append(Observation(current, drained))

    def __enter__(self) -> DrainWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        assert self.error is None, f"watching the cluster failed: {self.error!r}"


def master_pids(app_hosts: dict[str, Any]) -> dict[str, int]:
    return {
        name: int(host.check_output(f"systemctl show --property MainPID --value {SERVICE}"))
        for name, host in app_hosts.items()
    }


# A test starts from the release it needs, and leaves the cluster as it ends: the next test
# deploys only when it needs another release (each deploy takes a minute or more).
@pytest.fixture
def on_v1(app_hosts: dict[str, Any], wheels: dict[str, Path]) -> None:
    """The test starts with every app host on release 1.0.0."""
    ensure_version(app_hosts, wheels, "1.0.0")


@pytest.fixture
def on_v2_after_v1(app_hosts: dict[str, Any], wheels: dict[str, Path]) -> None:
    """The test starts with every app host on release 2.0.0, deployed over 1.0.0: what the
    rolling deploy test leaves, so right after it nothing is deployed."""
    for host in app_hosts.values():
        records = deploy_records(host)
        running = records[-1] if records else {"release": None, "version": None}
        earlier = [r["version"] for r in reversed(records) if r["release"] != running["release"]]
        if running["version"] != "2.0.0" or earlier[:1] != ["1.0.0"]:
            ensure_version(app_hosts, wheels, "1.0.0")
            ensure_version(app_hosts, wheels, "2.0.0")
            return


def deploy_records(host: Any) -> list[dict[str, Any]]:
    """The app host's deploy record (/opt/refapp/deploys.jsonl), oldest first."""
    return [json.loads(line) for line in host.file("/opt/refapp/deploys.jsonl").content_string.splitlines()]


def ensure_version(app_hosts: dict[str, Any], wheels: dict[str, Path], version: str) -> None:
    for host in app_hosts.values():
        if f'"version": "{version}"' not in host.file("/opt/refapp/current/release.json").content_string:
            result = run_playbook("deploy", "-e", f"asgi_app_source={wheels[version]}")
            assert result.returncode == 0, result.output[-3000:]
            return
