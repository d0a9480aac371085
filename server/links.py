"""Absolute links in answers: the configured public URL, or the request's own.

The request's own URL comes from its Host header, which the client writes. With
`server.base_url` empty, `TrustedHosts` therefore lets through only requests whose Host is in
`server.allowed_hosts` (by default the listen address and localhost): a forged Host
(`Host: evil.example`) answers 400 `host-not-allowed` before any handler runs, so no link, no
upload and no Location header is ever made from it.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from .settings import ServerSettings, Settings

# Liveness probes often name the pod's address: they make no links, so any Host will do.
_ANY_HOST_PATHS = ("/healthz",)


def base_url(request: Request, settings: Settings) -> str:
    return (settings.server.base_url or str(request.base_url)).rstrip("/")


def absolute(described: dict[str, Any], base: str) -> dict[str, Any]:
    """An avatar description whose path-only URLs (as stored with an upload) are made absolute."""
    absolute_urls: dict[str, Any] = {
        key: {size: url if "://" in url else f"{base}{url}" for size, url in described[key].items()}
        for key in ("urls", "fallback_urls")
        if key in described
    }
    return {**described, **absolute_urls}


def allowed_hosts(settings: ServerSettings) -> frozenset[str]:
    """Host names (lower case, no port, IPv6 without brackets) links may be made for."""
    if settings.allowed_hosts:
        return frozenset(h.strip().lower().strip("[]") for h in settings.allowed_hosts)
    return frozenset({settings.host.lower().strip("[]"), "localhost", "127.0.0.1", "::1"})


def host_name(host_header: str) -> str:
    """`example.com:8000` -> `example.com`; `[::1]:8000` -> `::1`."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


class TrustedHosts:
    """ASGI middleware: 400 host-not-allowed for a Host outside the allow-list (see the module doc)."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str]):
        self.app, self.hosts = app, hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _ANY_HOST_PATHS:
            await self.app(scope, receive, send)
            return
        given = next((value for name, value in scope["headers"] if name == b"host"), b"")
        if host_name(given.decode("latin-1")) in self.hosts:
            await self.app(scope, receive, send)
            return
        body = json.dumps(
            {"error": "the Host header names a host this server does not serve", "code": "host-not-allowed"}
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        if any(name == b"tus-resumable" for name, _ in scope["headers"]):
            headers.append((b"tus-resumable", b"1.0.0"))
        await send({"type": "http.response.start", "status": 400, "headers": headers})
        await send({"type": "http.response.body", "body": body})
