"""Bounded load against 127.0.0.1: a fixed number of threads sending requests until told to
stop, or until a request or time cap is reached.

The load is a mix of methods (GET, HEAD, POST with a JSON body, PUT, PATCH, DELETE against
the reference app's echo and idempotent upsert), plus WebSocket sessions that echo messages
and reconnect when the server closes them with 1012 (service restart). Every answer is
checked: a 2xx whose body is not the app's answer to that very request counts as failed.

Retries are never hidden: POST and PATCH are never sent twice; another method whose
keep-alive connection closed before any response is sent once more (as browsers do, RFC 9112
9.3.1), and that is recorded on the sample. Every request is recorded with its method, start
time, latency, status and the app version it reported, so that a run can be split into
phases (steady state, during an operation, after it) and reported per method."""

from __future__ import annotations

import contextlib
import itertools
import json
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from websockets.exceptions import ConnectionClosed

from asgikit_testing.clients import WebSocketSession

T = TypeVar("T")
WEBSOCKET = "WS"
# Methods a client may send again when the connection closed before any response.
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
SERVICE_RESTART = 1012
# A WebSocket message is sent again on a new session after a 1012 close, this many times at
# most: during a HUP a reconnect may reach another old worker that has not yet stopped
# accepting (uvicorn checks its exit flag every 0.1 s), which closes it with 1012 too.
MAX_RECONNECTS = 3


@dataclass(frozen=True)
class Call:
    """One kind of request. `{key}` in the path becomes the thread's own item key."""

    method: str
    path: str
    body: bool = False


# The reference app's endpoints, one of each method.
MIXED: tuple[Call, ...] = (
    Call("GET", "/readyz"),
    Call("HEAD", "/readyz"),
    Call("POST", "/echo", body=True),
    Call("PUT", "/items/{key}", body=True),
    Call("PATCH", "/items/{key}", body=True),
    Call("DELETE", "/items/{key}"),
)
# Any app: its health path only.
GET_ONLY: tuple[Call, ...] = (Call("GET", "/readyz"),)


@dataclass(frozen=True)
class Sample:
    started: float  # time.monotonic() when the request was sent
    latency: float  # seconds
    method: str  # an HTTP method, or WS for one WebSocket message echoed
    status: int | None  # None when no HTTP response arrived (and for WebSocket messages)
    error: str | None  # why it failed; None when it succeeded
    version: str | None  # the "version" field of a JSON body, when there is one
    retried: bool = False  # sent again after the connection closed before any response
    reconnected: int = 0  # WebSocket: times sent again on a new session after a 1012 close

    @property
    def failed(self) -> bool:
        if self.error is not None:
            return True
        return self.method != WEBSOCKET and (self.status is None or not 200 <= self.status < 300)


# Answers that carry no version: HEAD has no body, and the WebSocket echoes what it gets.
UNVERSIONED = frozenset({"HEAD", WEBSOCKET})


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
        """Transport errors, wrong answers and any HTTP response that is not 2xx."""
        return sum(1 for s in self.samples if s.failed)

    @property
    def retried(self) -> int:
        return sum(1 for s in self.samples if s.retried)

    @property
    def reconnected(self) -> int:
        return sum(s.reconnected for s in self.samples)

    @property
    def versions(self) -> Counter[str]:
        return Counter(s.version for s in self.samples if s.version is not None)

    @property
    def versioned(self) -> int:
        """Answers that name the release's version: all but HEAD's and WebSocket messages."""
        return sum(1 for s in self.samples if s.method not in UNVERSIONED)

    @property
    def methods(self) -> dict[str, LoadResult]:
        by_method: dict[str, LoadResult] = {}
        for sample in self.samples:
            by_method.setdefault(sample.method, LoadResult()).samples.append(sample)
        return dict(sorted(by_method.items()))

    def summary(self) -> str:
        """For assertion messages: failures by cause, retries and statuses."""
        return (
            f"failed={self.failed} retried={self.retried} errors={dict(self.errors)} "
            f"statuses={dict(self.statuses)} per method="
            f"{ {m: (r.total, r.failed, r.retried) for m, r in self.methods.items()} }"
        )

    def record(self, operation: str) -> str:
        """This result as the JSON that tests record (property "load") and the test summary
        prints as a table, operation by method: requests, failed and retried of each."""
        return json.dumps(
            {
                "operation": operation,
                "methods": {m: [r.total, r.failed, r.retried] for m, r in self.methods.items()},
                "reconnected": self.reconnected,
            }
        )

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


def _json(response: httpx.Response) -> dict[str, Any] | None:
    if not response.headers.get("content-type", "").startswith("application/json"):
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _wrong_answer(call: Call, sent: dict[str, Any] | None, answer: dict[str, Any] | None) -> str | None:
    """Whether a 2xx answer is the app's answer to exactly this request."""
    if call.method == "HEAD":
        return None
    if answer is None:
        return "not the app's JSON"
    if call.method == "POST" and answer.get("echo") != sent:
        return "echo differs from the body sent"
    if call.method == "PUT" and answer.get("value") != sent:
        return "stored item differs from the body sent"
    if call.method == "DELETE" and answer.get("value") is not None:
        return "item still there after DELETE"
    return None


class BackgroundLoad:
    """Sends `mix` round-robin from `threads` HTTP threads (clients made by `make_client`),
    and echoes messages over `websockets` sessions (made by `make_websocket`)."""

    def __init__(
        self,
        make_client: Callable[[], httpx.Client],
        mix: Iterable[Call] = GET_ONLY,
        *,
        threads: int = 4,
        make_websocket: Callable[[], WebSocketSession] | None = None,
        websockets: int = 0,
        max_requests: int = 300_000,
        max_seconds: float = 300.0,
    ) -> None:
        self._make_client = make_client
        self._mix = tuple(mix)
        self._threads = threads
        self._make_websocket = make_websocket
        self._websockets = websockets if make_websocket is not None else 0
        self._max_requests = max_requests
        self._max_seconds = max_seconds
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self.result = LoadResult()

    def __enter__(self) -> BackgroundLoad:
        deadline = time.monotonic() + self._max_seconds
        targets = [(self._run_http, n) for n in range(self._threads)]
        targets += [(self._run_websocket, n) for n in range(self._websockets)]
        for target, number in targets:
            worker = threading.Thread(target=target, args=(number, deadline), daemon=True)
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

    @property
    def running(self) -> int:
        """Threads of this load that have not ended (0 once stop() returned, unless one hangs)."""
        return sum(1 for worker in self._workers if worker.is_alive())

    def count_since(self, since: float) -> int:
        with self._lock:
            return sum(1 for s in self.result.samples if s.started >= since)

    def wait_for(self, requests: int, since: float, timeout: float) -> None:
        """Blocks until `requests` requests were sent after `since`. Raises TimeoutError
        when `timeout` passes first, or when the load has stopped."""
        deadline = time.monotonic() + timeout
        while (count := self.count_since(since)) < requests:
            if time.monotonic() >= deadline or self._stop.is_set():
                raise TimeoutError(f"only {count} of {requests} requests were sent within {timeout:.0f} s")
            time.sleep(0.2)

    def _record(self, sample: Sample) -> bool:
        """Keeps the sample; False once the load should end."""
        with self._lock:
            self.result.samples.append(sample)
            return len(self.result.samples) < self._max_requests

    def _send(self, client: httpx.Client, call: Call, path: str, body: dict[str, Any] | None) -> Sample:
        started = time.monotonic()
        retried = False
        while True:
            try:
                response = client.request(call.method, path, json=body)
            except httpx.RemoteProtocolError as exc:
                closed_unanswered = "without sending a response" in str(exc)
                if closed_unanswered and call.method in IDEMPOTENT and not retried:
                    retried = True
                    continue
                error = f"{type(exc).__name__}: {exc}"
                return Sample(started, time.monotonic() - started, call.method, None, error, None, retried)
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
                return Sample(started, time.monotonic() - started, call.method, None, error, None, retried)
            answer = _json(response)
            error = _wrong_answer(call, body, answer) if response.is_success else None
            version = answer.get("version") if answer else None
            latency = time.monotonic() - started
            return Sample(started, latency, call.method, response.status_code, error, version, retried)

    def _run_http(self, number: int, deadline: float) -> None:
        key = f"load-{number}"
        calls = itertools.islice(itertools.cycle(self._mix), number % len(self._mix), None)
        with self._make_client() as client:
            for n, call in enumerate(calls):
                if self._stop.is_set() or time.monotonic() >= deadline:
                    return
                body = {"thread": number, "n": n} if call.body else None
                if not self._record(self._send(client, call, call.path.format(key=key), body)):
                    return

    def _run_websocket(self, number: int, deadline: float) -> None:
        assert self._make_websocket is not None
        connection: WebSocketSession | None = None
        reconnected = 0
        n = 0
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                message = f"session {number} message {n}"
                started = time.monotonic()
                try:
                    if connection is None:
                        connection = self._make_websocket()
                    connection.send(message)
                    echoed = connection.recv(timeout=10)
                except ConnectionClosed as exc:
                    connection = _dropped(connection)
                    if (
                        exc.rcvd is not None
                        and exc.rcvd.code == SERVICE_RESTART
                        and reconnected < MAX_RECONNECTS
                    ):
                        reconnected += 1  # the same message again, on a new session
                        continue
                    error = f"closed: {exc}"
                except Exception as exc:
                    connection = _dropped(connection)
                    error = f"{type(exc).__name__}: {exc}"
                else:
                    error = None if echoed == message else "echo differs from the message sent"
                sample = Sample(
                    started, time.monotonic() - started, WEBSOCKET, None, error, None, reconnected=reconnected
                )
                reconnected = 0
                n += 1
                if not self._record(sample):
                    return
                time.sleep(0.02)
        finally:
            if connection is not None:
                connection.close()


def _dropped(session: WebSocketSession | None) -> None:
    """Ends a session that failed (its own error is what gets recorded, not the close's)."""
    if session is not None:
        with contextlib.suppress(Exception):
            session.close()


@dataclass
class OperationRun:
    """Load split around an operation: before it (steady), from its start until at least
    `min_requests` were sent and it has returned (operation), and after it returned (after).
    `window` holds the operation phase's start and end (time.monotonic()), by which another
    load that ran at the same time is split."""

    steady: LoadResult
    operation: LoadResult
    after: LoadResult
    seconds: dict[str, float]
    window: tuple[float, float]

    def phases(self) -> list[tuple[str, LoadResult, float]]:
        return [
            ("steady", self.steady, self.seconds["steady"]),
            ("operation", self.operation, self.seconds["operation"]),
            ("after", self.after, self.seconds["after"]),
        ]


def measure(
    make_client: Callable[[], httpx.Client],
    operation: Callable[[], T],
    *,
    mix: Iterable[Call] = GET_ONLY,
    threads: int = 6,
    make_websocket: Callable[[], WebSocketSession] | None = None,
    websockets: int = 0,
    steady_seconds: float = 3.0,
    min_requests: int = 20_000,
    after_seconds: float = 2.0,
    max_seconds: float = 600.0,
    beside: Iterable[BackgroundLoad] = (),
) -> tuple[OperationRun, T]:
    """Runs `operation` under continuous load and returns the load, phase by phase. The
    operation phase lasts until `min_requests` were sent during it, by this load and by each
    load running `beside` it. Raises TimeoutError when they were not in time."""
    with BackgroundLoad(
        make_client,
        mix,
        threads=threads,
        make_websocket=make_websocket,
        websockets=websockets,
        max_seconds=max_seconds,
    ) as load:
        t0 = time.monotonic()
        time.sleep(steady_seconds)
        t1 = time.monotonic()
        value = operation()
        t2 = time.monotonic()
        for each in (load, *beside):
            each.wait_for(min_requests, since=t1, timeout=max(1.0, max_seconds - (time.monotonic() - t0)))
        t3 = max(time.monotonic(), t2)
        time.sleep(after_seconds)
        t4 = time.monotonic()
    result = load.result
    run = OperationRun(
        steady=result.between(t0, t1),
        operation=result.between(t1, t3),
        after=result.between(t2, t4),
        seconds={"steady": t1 - t0, "operation": t3 - t1, "after": t4 - t2},
        window=(t1, t3),
    )
    return run, value


def report_rows(phases: Iterable[tuple[str, LoadResult, float]], *, per_method: bool = True) -> list[str]:
    """A fixed-width table: one row per (name, result, seconds) phase, and under the
    operation phase one row per method."""
    rows = [
        f"{'phase':<16}{'requests':>10}{'failed':>8}{'non-2xx':>9}{'errors':>8}{'retried':>9}"
        f"{'reconn':>8}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>8}  versions"
    ]

    def row(name: str, result: LoadResult, seconds: float) -> str:
        non_2xx = sum(n for status, n in result.statuses.items() if not 200 <= status < 300)
        rate = result.total / seconds if seconds > 0 else 0.0
        versions = ", ".join(f"{v}: {n}" for v, n in sorted(result.versions.items())) or "-"
        return (
            f"{name:<16}{result.total:>10}{result.failed:>8}{non_2xx:>9}{sum(result.errors.values()):>8}"
            f"{result.retried:>9}{result.reconnected:>8}{result.percentile(50):>9.1f}"
            f"{result.percentile(99):>9.1f}{rate:>8.0f}  {versions}"
        )

    for name, result, seconds in phases:
        rows.append(row(name, result, seconds))
        if per_method and name == "operation" and len(result.methods) > 1:
            rows += [row(f"  {method}", part, seconds) for method, part in result.methods.items()]
    return rows
