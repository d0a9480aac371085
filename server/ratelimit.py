"""Request rates, counted in Redis so they hold across server processes.

Authenticated requests are counted per user: `limits.requests_per_window` in each
`limits.rate_window_seconds`. Requests without valid credentials (401 floods, API-key
guessing, anonymous avatar reads) are counted per client address against
`limits.anonymous_requests_per_window`. Past a limit a request answers 429 `rate-limited` with
`Retry-After`.

The limiter is GCRA (a token bucket kept as one timestamp): a burst of up to the limit, then
one request per `window / limit` seconds. Unlike a fixed window it never lets twice the rate
through across a window boundary. One Lua script decides and records each request atomically,
on Redis's clock, so processes with skewed clocks agree. A refused request is not recorded.

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
from redis.exceptions import RedisClusterException, RedisError
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from .auth import Authenticator, AuthError
from .settings import LimitSettings

log = logging.getLogger(__name__)

# GCRA. KEYS[1] the caller's theoretical arrival time (ms); ARGV[1] ms between requests at the
# steady rate, ARGV[2] the window in ms (the burst the bucket holds). Returns ms to wait, 0 if allowed.
_HIT = """
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('get', KEYS[1]) or now)
if tat < now then tat = now end
local after = tat + interval
local wait = after - window - now
if wait > 0 then return math.ceil(wait) end
redis.call('set', KEYS[1], after, 'px', math.max(1, math.ceil(after - now)))
return 0
"""
# Public, credential-free paths never count against anyone.
_EXEMPT = ("/healthz", "/openapi.json", "/debug/")


class _Bucket:
    """One GCRA limit: `per_window` requests per `window_ms`, 0 = none."""

    def __init__(self, per_window: int, window_ms: int):
        self.per_window, self.window_ms = per_window, window_ms
        self.interval_ms = window_ms / per_window if per_window > 0 else 0.0


class RequestRate:
    """Requests per authenticated user, or per address without credentials (one script, registered once)."""

    def __init__(self, redis: aioredis.Redis, prefix: str, auth: Authenticator, limits: LimitSettings):
        self._auth, self._prefix = auth, prefix
        window_ms = max(1, int(limits.rate_window_seconds * 1000))
        self._users = _Bucket(limits.requests_per_window, window_ms)
        self._anonymous = _Bucket(limits.anonymous_requests_per_window, window_ms)
        self._hit = redis.register_script(_HIT)

    async def over_limit(self, conn: HTTPConnection) -> int | None:
        """Count this request against its caller; the seconds to wait if it is past the limit."""
        try:
            caller, bucket = "user:" + self._auth.authenticate(conn).user_id, self._users
        except AuthError:
            address = conn.client.host if conn.client is not None else "unknown"
            caller, bucket = "addr:" + address, self._anonymous
        if bucket.per_window <= 0:
            return None
        # Hashed: a user id is the client's own text, and a key name should not carry it.
        digest = hashlib.sha256(caller.encode()).hexdigest()[:32]
        try:
            wait_ms = await self._hit(
                keys=[f"{self._prefix}:rate:{{{digest}}}"], args=[bucket.interval_ms, bucket.window_ms]
            )
        except (RedisError, RedisClusterException):  # the cluster client's "no node answers" too
            log.warning("rate limit not checked: Redis did not answer")
            return None
        wait = float(wait_ms)
        return None if wait <= 0 else max(1, math.ceil(wait / 1000))


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
