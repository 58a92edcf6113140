"""The kit's gunicorn worker: uvicorn_worker.UvicornWorker with a drain that fails no request.

Installed by the gunicorn role next to gunicorn_conf.py, which loads it by path (nothing is
added to sys.path). Tested against the uvicorn and uvicorn-worker versions the kit pins
(asgi_app_server_packages).

Why: when a worker retires (HUP, max_requests, TERM), uvicorn's Server.shutdown() closes
every connection that has no request in flight, at once. nginx keeps idle keep-alive
connections to the app and may be writing a request into one of them at that very moment;
the request is then reset unread, and nginx answers 502, because it never retries a
non-idempotent request (POST, PATCH) that it has sent.

How this worker retires, race-free by construction:
  1. It stops accepting new connections (uvicorn closes its listeners; the socket stays
     open in the master and the other workers, so nothing queued is lost).
  2. A request in flight is answered in full, with `Connection: close`, and the connection
     is closed after that answer.
  3. An idle connection is never closed by the worker. The next request nginx sends on it
     is answered in full, with `Connection: close`; nginx reads that header and does not
     send another. Or nginx, which alone decides when to use an idle connection, closes it
     after its upstream keepalive_timeout (kept short by the nginx role). Either way the
     connection is closed only when no request can be on its way: after an answer that said
     so, or by the peer itself.
  4. An open WebSocket is closed with 1012 (service restart) through the closing handshake:
     the worker sends its close frame, keeps reading (and discarding) what the client still
     sends, and closes once the client answers with its own close frame (or after 10 s).
     Stock uvicorn closes the socket right after its close frame; a message the client sent
     meanwhile is then unread, the kernel resets the connection, and nginx can lose the
     close frame on its way to the client (a 1006 instead of a 1012).
  5. A WebSocket handshake that still arrives on an idle connection, or that is under way
     when the worker starts retiring, completes, and the socket is then closed as in 4
     (stock uvicorn answers a handshake under way with 500); clients reconnect to a live
     worker. (The nginx role opens a new connection for each handshake, so only workers
     that accept get them.)
  6. A connection the worker accepted just before it stopped accepting, but whose protocol
     starts only after the shutdown began (the event loop makes it a moment later), is
     retiring from its start: uvicorn's shutdown never saw it, and it would otherwise serve
     a WebSocket until the graceful timeout cut it without a close frame.
  7. In-flight work gets graceful_timeout seconds (uvicorn's timeout_graceful_shutdown,
     which the stock worker leaves unset); gunicorn kills the worker after that.

And when a HUP replaces every worker, the old ones retire only once the new ones serve
(retire_old_workers_once_new_ones_serve, installed in the master by gunicorn_conf.py).
gunicorn itself signals the old workers right after forking the new ones, so for as long as
the new ones take to import the app and run its startup, no worker accepts: every request
waits in the socket's backlog (gunicorn #1199, #1757).

A worker that retires by itself (max_requests) is replaced at once, not when it leaves:
gunicorn starts a replacement only for a worker that has exited, and this one lingers until
nginx lets go of its idle connections. Under a heavy load every worker reaches max_requests
within a second or two of the others, and nothing would accept meanwhile (measured: no
answer for 26 s, until gunicorn's timeout killed them). So a retiring worker marks its
heartbeat file (the owner-execute bit of the file it shares with the master alone, which
goes with it) and wakes the master (SIGCHLD), whose manage_workers() then counts only the
workers that are not retiring.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
import sys
import time
from typing import Any, ClassVar

from gunicorn.arbiter import Arbiter
from uvicorn.protocols.websockets.auto import AutoWebSocketsProtocol
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HTTPProtocol
except ImportError:  # httptools missing: uvicorn's pure-Python h11 protocol
    from uvicorn.protocols.http.h11_impl import H11Protocol as _HTTPProtocol

CONNECTION_CLOSE = (b"connection", b"close")
# How often a WebSocket opened during the drain is checked for a completed handshake.
HANDSHAKE_POLL_SECONDS = 0.05
# How often the master looks whether a HUP's new workers serve yet.
SERVING_POLL_SECONDS = 0.1
# The mark a retiring worker puts on its heartbeat file: the owner-execute bit.
RETIRING = stat.S_IXUSR


def _handshake_done(protocol: Any) -> bool:
    """Whether uvicorn's WebSocket protocol finished its handshake (websockets and
    websockets-sansio/wsproto implementations name it differently)."""
    event = getattr(protocol, "handshake_completed_event", None)
    if event is not None:
        return bool(event.is_set())
    return bool(getattr(protocol, "handshake_complete", False))


class DrainingHTTPProtocol(_HTTPProtocol):  # type: ignore[misc, valid-type]
    """uvicorn's HTTP protocol, but a shutdown never closes a connection the peer may be
    writing to: every answer from then on carries `Connection: close`."""

    _cycle: Any = None

    @property
    def draining(self) -> bool:
        """The worker is retiring (DrainingServer marks the state every connection shares),
        so a connection whose protocol starts after the shutdown began is retiring too
        (module docstring, 6)."""
        return bool(getattr(self.server_state, "draining", False))

    @property  # type: ignore[override]
    def cycle(self) -> Any:
        return self._cycle

    @cycle.setter
    def cycle(self, cycle: Any) -> None:
        # uvicorn assigns self.cycle for each request it parses, pipelined ones included.
        if cycle is not None and self.draining:
            self._answer_then_close(cycle)
        self._cycle = cycle

    @staticmethod
    def _answer_then_close(cycle: Any) -> None:
        cycle.keep_alive = False
        if _HTTPProtocol.__name__ == "H11Protocol":
            # uvicorn's h11 cycle closes without saying so; the header tells the peer first.
            cycle.default_headers = [*cycle.default_headers, CONNECTION_CLOSE]

    def shutdown(self) -> None:
        """Called by uvicorn's Server.shutdown() for each connection, once, after
        DrainingServer marked the state as draining."""
        if self._cycle is not None and not self._cycle.response_complete:
            self._answer_then_close(self._cycle)
        # Idle: left open on purpose (module docstring, step 3).

    def handle_websocket_upgrade(self, *args: Any) -> None:
        super().handle_websocket_upgrade(*args)
        if self.draining:
            websocket = self.transport.get_protocol()
            asyncio.get_running_loop().create_task(_close_when_open(websocket))


async def _close_when_open(websocket: Any) -> None:
    """Closes a WebSocket opened on a retiring worker with 1012 once its handshake is done
    (uvicorn's own shutdown() answers 500 before that)."""
    while not websocket.transport.is_closing():
        if _handshake_done(websocket):
            websocket.shutdown()
            return
        await asyncio.sleep(HANDSHAKE_POLL_SECONDS)


def _websocket_protocol() -> Any:
    """DrainingWebSocketProtocol where uvicorn's "auto" would pick the websockets sans-I/O
    protocol (websockets installed, as uvicorn[standard] has it), else "auto" itself."""
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    except ImportError:
        return "auto"
    if AutoWebSocketsProtocol is not WebSocketsSansIOProtocol:
        return "auto"

    class DrainingWebSocketProtocol(WebSocketsSansIOProtocol):  # type: ignore[misc]
        """uvicorn's protocol, but a shutdown closes an open socket with the closing
        handshake (module docstring, 4), as uvicorn itself does when the app sends
        websocket.close."""

        def shutdown(self) -> None:
            if not self.handshake_complete and not self.close_sent and not self.transport.is_closing():
                # A handshake under way: let it complete, then close (module docstring, 5).
                self.loop.create_task(_close_when_open(self))
                return
            if self.close_sent or self.transport.is_closing():
                super().shutdown()
                return
            self.stop_keepalive()
            self.queue.put_nowait({"type": "websocket.disconnect", "code": 1012})
            self.conn.send_close(1012)
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.close_sent = True  # from now on, what the client sends is read and dropped
            if self.read_paused:
                self.read_paused = False
                self.transport.resume_reading()
            # The client's close frame closes the socket (handle_close); this, if it never comes.
            self.close_timer = self.loop.call_later(self.close_timeout, self.transport.close)

    return DrainingWebSocketProtocol


class DrainingServer(Server):  # type: ignore[misc]
    """uvicorn's Server, marking the state its connections share as retiring before it shuts
    down: DrainingHTTPProtocol.draining reads it, for the connections shutdown() reaches and
    for those whose protocol starts after that (module docstring, 6). `on_retire` runs as
    the shutdown starts."""

    on_retire: Any = None

    async def shutdown(self, sockets: Any = None) -> None:
        self.server_state.draining = True
        if self.on_retire is not None:
            self.on_retire()
        await super().shutdown(sockets)


class DrainingUvicornWorker(UvicornWorker):  # type: ignore[misc]
    """UvicornWorker (uvloop when installed) with DrainingHTTPProtocol, DrainingWebSocketProtocol
    and gunicorn's graceful_timeout handed to uvicorn."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        "loop": "auto",
        "http": DrainingHTTPProtocol,
        "ws": _websocket_protocol(),
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.timeout_graceful_shutdown = self.cfg.graceful_timeout

    def mark_retiring(self) -> None:
        """Tells the master this worker retires, so that it starts a replacement now (module
        docstring): the mark on the heartbeat file, then a SIGCHLD that wakes its loop."""
        with contextlib.suppress(OSError, ValueError):
            os.fchmod(self.tmp.fileno(), os.fstat(self.tmp.fileno()).st_mode | RETIRING)
            os.kill(self.ppid, signal.SIGCHLD)

    async def _serve(self) -> None:
        """UvicornWorker._serve (uvicorn-worker 0.4.0) with DrainingServer."""
        self.config.app = self.wsgi
        server = DrainingServer(config=self.config)
        server.on_retire = self.mark_retiring
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)


def _serving(worker: Any) -> bool:
    """Whether a worker has started serving: it has sent its first heartbeat, which the
    Uvicorn worker sends once the app's startup is done and it listens. gunicorn's WorkerTmp
    stamps its file with time.monotonic() at each heartbeat; before the first, the stamp is
    the file's creation time on the wall clock, far above any monotonic reading (gunicorn's
    own timeout check reads it the same way)."""
    try:
        return bool(worker.tmp.last_update() <= time.monotonic())
    except (OSError, ValueError):  # the worker is gone and its file closed
        return False


def _retiring(worker: Any) -> bool:
    """Whether a worker has marked its heartbeat file as retiring (mark_retiring)."""
    try:
        return bool(os.fstat(worker.tmp.fileno()).st_mode & RETIRING)
    except (OSError, ValueError):  # the worker is gone and its file closed
        return False


def retire_old_workers_once_new_ones_serve(arbiter: Any) -> None:
    """Makes the master's manage_workers() wait, before it signals the workers beyond the
    configured count (the old ones, after a HUP), until the newest ones serve, or for
    gunicorn's `timeout` at most (a worker that hangs in its startup). Meanwhile it reaps
    exited workers, so a new worker that fails to boot stops the master as it always does.
    Called from gunicorn_conf.py's on_starting and on_reload hooks, in the master; gunicorn's
    own reload() then waits for the old workers to exit, as before."""
    arbiter_class = type(arbiter)

    def working() -> list[Any]:
        return [worker for worker in arbiter.WORKERS.values() if not _retiring(worker)]

    def manage_workers() -> None:
        deadline = time.monotonic() + arbiter.cfg.timeout
        while len(working()) > arbiter.num_workers and time.monotonic() < deadline:
            newest = sorted(working(), key=lambda worker: worker.age)[-arbiter.num_workers :]
            if all(_serving(worker) for worker in newest):
                break
            arbiter.reap_workers()
            time.sleep(SERVING_POLL_SECONDS)
        # gunicorn's own bookkeeping (spawn up to the count, signal the oldest beyond it) over
        # the workers that are not retiring; the retiring ones are back in WORKERS before
        # anything reaps them, so their exit and gunicorn's timeout still apply to them.
        retiring = {pid: worker for pid, worker in arbiter.WORKERS.items() if _retiring(worker)}
        for pid in retiring:
            del arbiter.WORKERS[pid]
        try:
            arbiter_class.manage_workers(arbiter)
        finally:
            arbiter.WORKERS.update(retiring)

    arbiter.manage_workers = manage_workers
