"""One log line and one set of metrics per request, and the request id every answer carries.

The middleware sees only the request's method, route template, status, timing, byte count and
what the endpoint wrapper left in the ASGI scope (who the caller was, which problem code the
answer carried). It never sees a header's value other than X-Request-Id, never a query string
and never a body byte, so no token, key or image can reach a log line through it.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .metrics import Metrics, Timer

access_log = logging.getLogger("server.access")

# Keys the endpoint wrapper and the rate limiter write into the ASGI scope for this middleware.
SCOPE_USER = "avs.user"
SCOPE_PROBLEM = "avs.problem_code"
SCOPE_UPLOAD = "avs.upload_id"

# A client's own request id is kept only if it is short and plain, so it cannot forge log lines.
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_UPLOAD_ID = re.compile(r"[A-Za-z0-9_-]{32}")


def note(scope: Scope, key: str, value: str) -> None:
    """Record a fact about the request for its log line (user, problem code, upload id)."""
    scope[key] = value


class RequestObserver:
    """ASGI middleware, outermost: times every request, counts it, logs it, tags it with an id."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seen = _Seen(_request_id(scope))

        async def counted_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen.received += len(message.get("body", b""))
            return message

        async def tagged_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen.status = message["status"]
                headers = list(message.get("headers", []))
                seen.location = next((v.decode("latin-1") for n, v in headers if n.lower() == b"location"), "")
                headers.append((b"x-request-id", seen.request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, counted_receive, tagged_send)
        finally:
            self.metrics.in_flight.dec()
            self._record(scope, seen)

    def _record(self, scope: Scope, seen: _Seen) -> None:
        route = getattr(scope.get("route"), "path", None) or "<unmatched>"
        code = scope.get(SCOPE_PROBLEM)
        seconds = seen.timer.seconds
        self.metrics.bytes_received.inc(seen.received)
        self.metrics.answered(scope["method"], route, seen.status, seconds, code)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                "%s %s %d",
                scope["method"],
                route,
                seen.status,
                extra={
                    "request": {
                        "method": scope["method"],
                        "route": route,
                        "status": seen.status,
                        "duration_ms": round(seconds * 1000, 2),
                        "user": scope.get(SCOPE_USER),
                        "upload_id": _upload_id(scope, seen.location),
                        "bytes": seen.received,
                        "request_id": seen.request_id,
                        "code": code,
                    }
                },
            )


class _Seen:
    """What the middleware saw of one request. A request that raised is a 500 until an answer
    says otherwise (the app's error handler sends that 500 outside this middleware)."""

    def __init__(self, request_id: str) -> None:
        self.request_id, self.timer = request_id, Timer()
        self.status, self.received, self.location = 500, 0, ""


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            given = value.decode("latin-1")
            if _CLIENT_ID.fullmatch(given):
                return given
    return f"{_ID_PREFIX}{next(_ID_COUNT):06x}"


# Request ids need to be unique, not secret: a random prefix per process and a counter (cheaper
# than reading the kernel's random source for every request).
_ID_PREFIX, _ID_COUNT = secrets.token_hex(5), itertools.count()


def _upload_id(scope: Scope, location: str) -> str | None:
    noted = scope.get(SCOPE_UPLOAD)
    if noted:
        return str(noted)
    for value in (scope.get("path_params") or {}).values():
        if isinstance(value, str) and _UPLOAD_ID.fullmatch(value):
            return value
    tail = location.rstrip("/").rpartition("/")[2]
    return tail if _UPLOAD_ID.fullmatch(tail) else None
