"""Forwarding headers a client writes to fool the app about who and where it is, and what
the app may see of them behind the kit's nginx or HAProxy."""

from __future__ import annotations

# What a client sends: another client address, scheme, host, port and path prefix.
SPOOFED = {
    "Forwarded": "for=203.0.113.9;host=evil.example;proto=http",
    "X-Forwarded-For": "203.0.113.9",
    "X-Forwarded-Proto": "http",
    "X-Forwarded-Host": "evil.example",
    "X-Forwarded-Port": "8080",
    "X-Forwarded-Prefix": "/evil",
    "X-Real-IP": "203.0.113.9",
    "X-Forwarded-Ssl": "off",
    "X-Forwarded-Scheme": "http",
    "X-Forwarded-Protocol": "http",
    "X-Forwarded-Server": "evil.example",
    "X-Url-Scheme": "http",
    "Front-End-Https": "off",
    "X-Original-Host": "evil.example",
    "X-Host": "evil.example",
}
# The forwarding headers the edge sets itself, from the connection; the rest never arrive.
SET_BY_THE_EDGE = {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip"}


def spoofed_values_seen(forwarding: dict[str, str]) -> list[str]:
    """The values of SPOOFED found in what the app saw (its /request-info "forwarding")."""
    seen = " ".join(forwarding.values())
    return [value for value in ("203.0.113.9", "evil", "8080", "http;", "off") if value in seen]
