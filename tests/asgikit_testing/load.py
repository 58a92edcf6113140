"""Bounded background load: a fixed number of threads sending requests until told to stop,
or until a request or time cap is reached. Every response and error is counted."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx


@dataclass
class LoadResult:
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) + sum(self.errors.values())

    @property
    def failed(self) -> int:
        """Transport errors plus any response that is not 2xx."""
        non_2xx = sum(n for status, n in self.statuses.items() if not 200 <= status < 300)
        return sum(self.errors.values()) + non_2xx


class BackgroundLoad:
    """GETs `path` from clients made by `make_client`, in `threads` threads."""

    def __init__(
        self,
        make_client: Callable[[], httpx.Client],
        path: str,
        *,
        threads: int = 4,
        max_requests: int = 50_000,
        max_seconds: float = 120.0,
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

    def _run(self, deadline: float) -> None:
        with self._make_client() as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                with self._lock:
                    if self.result.total >= self._max_requests:
                        return
                started = time.perf_counter()
                try:
                    status: int | None = client.get(self._path).status_code
                    error = None
                except httpx.HTTPError as exc:
                    status, error = None, type(exc).__name__
                elapsed = time.perf_counter() - started
                with self._lock:
                    if status is not None:
                        self.result.statuses[status] += 1
                    else:
                        self.result.errors[str(error)] += 1
                    self.result.latencies.append(elapsed)
