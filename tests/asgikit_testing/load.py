"""Bounded load against 127.0.0.1: a fixed number of threads sending requests until told to
stop, or until a request or time cap is reached. Every request is recorded with its start
time, latency, status and the app version it reported, so that a run can be split into
phases (steady state, during an operation, after it)."""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import httpx

T = TypeVar("T")


@dataclass(frozen=True)
class Sample:
    started: float  # time.monotonic() when the request was sent
    latency: float  # seconds
    status: int | None  # None when the request failed without a response
    error: str | None
    version: str | None  # the "version" field of a JSON body, when there is one
    retried: bool = False  # sent again after the connection closed before any response


@dataclass
class LoadResult:
    samples: list[Sample] = field(default_factory=list)

    @property
    def statuses(self) -> Counter[int]:
        return Counter(s.status for s in self.samples if s.status is not None)

    @property
    def errors(self) -> Counter[str]:
        return Counter(s.error for s in self.samples if s.error is not None)

    @property
    def total(self) -> int:
        return len(self.samples)

    @property
    def failed(self) -> int:
        """Transport errors plus any response that is not 2xx."""
        return sum(1 for s in self.samples if s.status is None or not 200 <= s.status < 300)

    @property
    def retried(self) -> int:
        return sum(1 for s in self.samples if s.retried)

    @property
    def versions(self) -> Counter[str]:
        return Counter(s.version for s in self.samples if s.version is not None)

    def between(self, start: float, end: float) -> LoadResult:
        """The requests sent in [start, end)."""
        return LoadResult([s for s in self.samples if start <= s.started < end])

    def percentile(self, q: float) -> float:
        """Latency percentile in milliseconds (0 when there are no samples)."""
        latencies = sorted(s.latency for s in self.samples)
        if not latencies:
            return 0.0
        if len(latencies) == 1:
            return latencies[0] * 1000
        return statistics.quantiles(latencies, n=1000, method="inclusive")[round(q * 10) - 1] * 1000


def _version(response: httpx.Response) -> str | None:
    if not response.headers.get("content-type", "").startswith("application/json"):
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("version") if isinstance(body, dict) else None


class BackgroundLoad:
    """GETs `path` with clients made by `make_client`, in `threads` threads."""

    def __init__(
        self,
        make_client: Callable[[], httpx.Client],
        path: str,
        *,
        threads: int = 4,
        max_requests: int = 200_000,
        max_seconds: float = 300.0,
    ) -> None:
        self._make_client = make_client
        self._path = path
        self._threads = threads
        self._max_requests = max_requests
        self._max_seconds = max_seconds
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self.result = LoadResult()

    def __enter__(self) -> BackgroundLoad:
        deadline = time.monotonic() + self._max_seconds
        for _ in range(self._threads):
            worker = threading.Thread(target=self._run, args=(deadline,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> LoadResult:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=30)
        return self.result

    def wait_for(self, requests: int, since: float, timeout: float) -> None:
        """Blocks until `requests` requests were sent after `since`, or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stop.is_set():
            with self._lock:
                count = sum(1 for s in self.result.samples if s.started >= since)
            if count >= requests:
                return
            time.sleep(0.2)

    def _get(self, client: httpx.Client) -> tuple[int | None, str | None, str | None, bool]:
        """One GET. Like browsers (RFC 9112, 9.3.1), a GET whose keep-alive connection was
        closed before any response arrived is sent once more, on a new connection; nginx
        closes idle connections when it reloads, and a request can cross that close."""
        retried = False
        while True:
            try:
                response = client.get(self._path)
            except httpx.RemoteProtocolError as exc:
                if not retried and "without sending a response" in str(exc):
                    retried = True
                    continue
                return None, type(exc).__name__, None, retried
            except httpx.HTTPError as exc:
                return None, type(exc).__name__, None, retried
            return response.status_code, None, _version(response), retried

    def _run(self, deadline: float) -> None:
        with self._make_client() as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                with self._lock:
                    if len(self.result.samples) >= self._max_requests:
                        return
                started = time.monotonic()
                status, error, version, retried = self._get(client)
                sample = Sample(started, time.monotonic() - started, status, error, version, retried)
                with self._lock:
                    self.result.samples.append(sample)


@dataclass
class OperationRun:
    """Load split around an operation: before it (steady), from its start until at least
    `min_requests` were sent and it has returned (operation), and after it returned (after)."""

    steady: LoadResult
    operation: LoadResult
    after: LoadResult
    seconds: dict[str, float]

    def phases(self) -> list[tuple[str, LoadResult, float]]:
        return [
            ("steady", self.steady, self.seconds["steady"]),
            ("operation", self.operation, self.seconds["operation"]),
            ("after", self.after, self.seconds["after"]),
        ]


def measure(
    make_client: Callable[[], httpx.Client],
    path: str,
    operation: Callable[[], T],
    *,
    threads: int = 6,
    steady_seconds: float = 3.0,
    min_requests: int = 20_000,
    after_seconds: float = 2.0,
    max_seconds: float = 600.0,
) -> tuple[OperationRun, T]:
    """Runs `operation` under continuous load and returns the load, phase by phase."""
    with BackgroundLoad(make_client, path, threads=threads, max_seconds=max_seconds) as load:
        t0 = time.monotonic()
        time.sleep(steady_seconds)
        t1 = time.monotonic()
        value = operation()
        t2 = time.monotonic()
        load.wait_for(min_requests, since=t1, timeout=max(0.0, max_seconds - (t2 - t0)))
        t3 = max(time.monotonic(), t2)
        time.sleep(after_seconds)
        t4 = time.monotonic()
    result = load.result
    run = OperationRun(
        steady=result.between(t0, t1),
        operation=result.between(t1, t3),
        after=result.between(t2, t4),
        seconds={"steady": t1 - t0, "operation": t3 - t1, "after": t4 - t2},
    )
    return run, value


def report_rows(phases: Iterable[tuple[str, LoadResult, float]]) -> list[str]:
    """A fixed-width table: one row per (name, result, seconds) phase."""
    rows = [
        f"{'phase':<11}{'requests':>10}{'failed':>8}{'non-2xx':>9}{'errors':>8}{'retried':>9}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'req/s':>8}  versions"
    ]
    for name, result, seconds in phases:
        non_2xx = sum(n for status, n in result.statuses.items() if not 200 <= status < 300)
        rate = result.total / seconds if seconds > 0 else 0.0
        versions = ", ".join(f"{v}: {n}" for v, n in sorted(result.versions.items())) or "-"
        rows.append(
            f"{name:<11}{result.total:>10}{result.failed:>8}{non_2xx:>9}{sum(result.errors.values()):>8}"
            f"{result.retried:>9}{result.percentile(50):>9.1f}{result.percentile(99):>9.1f}{rate:>8.0f}"
            f"  {versions}"
        )
    return rows
