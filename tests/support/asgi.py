"""Starlette requests built from a bare ASGI scope, for calling request parsers without a server."""

from __future__ import annotations

from starlette.requests import Request


def request_with(
    *pairs: tuple[str, str | bytes], method: str = "POST", path: str = "/files", **headers: str
) -> Request:
    """A request carrying these header lines, in order (`pairs` may repeat a name).

    Keyword names use `_` for `-`. A str value is sent as Latin-1, the way Starlette reads header
    bytes back; pass bytes to send anything else (UTF-8 from a client, say).
    """
    lines = [*pairs, *((name.replace("_", "-"), value) for name, value in headers.items())]
    raw = [
        (name.lower().encode("latin-1"), value if isinstance(value, bytes) else value.encode("latin-1"))
        for name, value in lines
    ]
    return Request({"type": "http", "method": method, "path": path, "headers": raw})
