"""Introspection of the server the app runs under: event loop and HTTP protocol."""

from __future__ import annotations

import asyncio
import sys
from importlib import metadata

_PROTOCOL_MODULES = {
    "uvicorn.protocols.http.httptools_impl": "httptools",
    "uvicorn.protocols.http.h11_impl": "h11",
}


def app_version() -> str:
    """The installed distribution's version: what a deploy put on the host."""
    try:
        return metadata.version("refapp")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def event_loop_class() -> str:
    """Dotted class name of the running loop, e.g. ``uvloop.Loop``."""
    loop = asyncio.get_running_loop()
    cls = type(loop)
    return f"{cls.__module__.split('.')[0]}.{cls.__qualname__}"


def http_protocol() -> str:
    """Which uvicorn HTTP protocol implementation is serving this request.

    uvicorn runs each request's ASGI call in a task started by its protocol module, so that
    module's frame sits at the bottom of the awaiting chain. Returns ``httptools``, ``h11``,
    or ``unknown`` when the app is not served by uvicorn (for example under a test client).
    """
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name in _PROTOCOL_MODULES:
            return _PROTOCOL_MODULES[name]
        frame = frame.f_back
    return "unknown"
