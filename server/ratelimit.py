"""Per-user request rate, counted in Redis so it holds across server processes.

A fixed window per user: at most `limits.requests_per_window` requests in each
`limits.rate_window_seconds`; past it a request answers 429 with `Retry-After` (the seconds
until the window ends). Requests without valid credentials are not counted here: they get
their 401 from the handler, which costs less than counting them would.

If Redis does not answer, the request goes through: the handler will meet the same outage
and answer 503 itself; a rate limiter must not turn an outage into a different error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from .auth import Authenticator, AuthError
from .settings import LimitSettings

log = logging.getLogger(__name__)

# KEYS[1] the user's window counter; ARGV[1] window ms. Returns {count, ms left in the window}.
_HIT = """
local n = redis.call('incr', KEYS[1])
if n == 1 then redis.call('pexpire', KEYS[1], ARGV[1]) end
local left = redis.call('pttl', KEYS[1])
if left < 0 then redis.call('pexpire', KEYS[1], ARGV[1]); left = tonumber(ARGV[1]) end
return {n, left}
"""
# Public, credential-free paths never count against anyone.
_EXEMPT = ("/healthz", "/openapi.json", "/debug/")


class RequestRate:
    """Requests per authenticated user and window, counted in Redis (one script, registered once)."""

    def __init__(self, redis: aioredis.Redis, prefix: str, auth: Authenticator, limits: LimitSettings):
        self._auth, self._prefix = auth, prefix
        self._per_window = limits.requests_per_window
        self._window_ms = max(1, int(limits.rate_window_seconds * 1000))
        self._hit = redis.register_script(_HIT)

    async def over_limit(self, conn: HTTPConnection) -> int | None:
        """Count this request against its caller; the seconds to wait if it is past the limit."""
        if self._per_window <= 0:
            return None
        try:
            user_id = self._auth.authenticate(conn).user_id
        except AuthError:
            return None
        # Hashed: a user id is the client's own text, and a key name should not carry it.
        digest = hashlib.sha256(user_id.encode()).hexdigest()[:32]
        try:
            count, left_ms = await self._hit(keys=[f"{self._prefix}:rate:{{{digest}}}"], args=[self._window_ms])
        except RedisError:
            log.warning("rate limit not checked: Redis did not answer")
            return None
        if int(count) <= self._per_window:
            return None
        return max(1, math.ceil(int(left_ms) / 1000))


class RateLimit:
    """ASGI middleware. `rate_of` finds the app's `RequestRate` (built when the app starts)."""

    def __init__(self, app: ASGIApp, rate_of: Callable[[HTTPConnection], RequestRate]):
        self.app, self.rate_of = app, rate_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(_EXEMPT):
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        retry_after = await self.rate_of(conn).over_limit(conn)
        if retry_after is None:
            await self.app(scope, receive, send)
            return
        await _too_many(scope, send, retry_after)


async def _too_many(scope: Scope, send: Send, retry_after: int) -> None:
    body = json.dumps({"error": "too many requests; slow down", "code": "rate-limited"}).encode()
    scope["avs.problem_code"] = "rate-limited"  # for the request's metrics and log line (request_log.py)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(retry_after).encode()),
    ]
    if any(name == b"tus-resumable" for name, _ in scope["headers"]):
        headers.append((b"tus-resumable", b"1.0.0"))
    await send({"type": "http.response.start", "status": 429, "headers": headers})
    await send({"type": "http.response.body", "body": body})
