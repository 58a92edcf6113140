"""The load tool's phases, against an in-process transport (no network)."""

from __future__ import annotations

import time

import httpx

from asgikit_testing.load import BackgroundLoad, measure


def client_answering_after(seconds: float) -> httpx.Client:
    """A client whose every GET gets the app's JSON answer after `seconds`."""

    def answer(request: httpx.Request) -> httpx.Response:
        time.sleep(seconds)
        return httpx.Response(200, json={"status": "ready", "version": "1.0.0"})

    return httpx.Client(transport=httpx.MockTransport(answer), base_url="https://app")


def test_the_operation_phase_lasts_until_the_load_beside_sent_its_requests_too() -> None:
    """A load beside the measured one, twenty times slower, still sends `min_requests` in the
    operation phase: the phase waits for it, and its share of the window holds them."""
    with BackgroundLoad(lambda: client_answering_after(0.02), threads=1, max_seconds=60) as slow:
        run, _ = measure(
            lambda: client_answering_after(0.001),
            lambda: None,
            threads=1,
            steady_seconds=0.1,
            min_requests=50,
            after_seconds=0.1,
            max_seconds=60,
            beside=(slow,),
        )
    beside = slow.result.between(*run.window)
    assert beside.total >= 50, beside.summary()
    assert beside.failed == 0, beside.summary()
    # The measured load, faster, sent several times as many in the same window.
    assert run.operation.total > 2 * beside.total, (run.operation.total, beside.total)
