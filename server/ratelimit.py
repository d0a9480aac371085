"""Request rates, counted in Redis so they hold across server processes.

Authenticated requests are counted per user: `limits.requests_per_window` in each
`limits.rate_window_seconds`. Requests without valid credentials (401 floods, API-key
guessing, anonymous avatar reads) are counted per client address against
`limits.anonymous_requests_per_window`. Past a limit a request answers 429 `rate-limited` with
`Retry-After`.

The limiter is GCRA (a token bucket kept as one timestamp): a burst of up to the limit, then
one request per `window / limit` seconds. Unlike a fixed window it never lets twice the rate
through across a window boundary. One Lua script decides and records atomically, on Redis's
clock, so processes with skewed clocks agree. A refused request is not recorded.

A caller's first request takes one token, in one round trip. A caller who keeps a process busy
takes more at a time (a lease: 2, 4, ... up to a hundredth of the limit, at most 16), and that
process serves the caller's next requests from it without asking Redis, for up to a second: in
the steady state of an upload (a PATCH or a chunk after another) the rate then costs no round
trip of its own. The tokens of a lease are paid for when taken, so across processes no more
requests than the limit are ever served in a window; what a lease leaves unused when its caller
stops (fewer than its size) counts as used.

If Redis does not answer, the request goes through: the handler will meet the same outage
and answer 503 itself; a rate limiter must not turn an outage into a different error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisClusterException, RedisError
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from .auth import Authenticator, AuthError
from .settings import LimitSettings

log = logging.getLogger(__name__)

# GCRA. KEYS[1] the caller's theoretical arrival time (ms); ARGV[1] ms between requests at the
# steady rate, ARGV[2] the window in ms (the burst the bucket holds), ARGV[3] how many tokens to
# take at most. Returns {tokens taken, 0}, or {0, ms to wait} when not one is free.
_TAKE = """
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval, window, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('get', KEYS[1]) or now)
if tat < now then tat = now end
local free = math.floor((now + window - tat) / interval + 1e-9)
if free < 1 then return {0, math.max(1, math.ceil(tat + interval - window - now))} end
local taken = math.min(want, free)
local after = tat + taken * interval
redis.call('set', KEYS[1], after, 'px', math.max(1, math.ceil(after - now)))
return {taken, 0}
"""
_LEASE_SECONDS = 1.0  # how long a process serves a caller from the tokens it took
_LEASE_CAP = 16
_LEASES_KEPT = 10_000  # callers with a lease per process; past that the oldest are dropped
# Public, credential-free paths never count against anyone.
_EXEMPT = ("/healthz", "/openapi.json", "/debug/")


class _Bucket:
    """One GCRA limit: `per_window` requests per `window_ms`, 0 = none."""

    def __init__(self, per_window: int, window_ms: int):
        self.per_window, self.window_ms = per_window, window_ms
        self.interval_ms = window_ms / per_window if per_window > 0 else 0.0
        # A lease may leave up to its size less one unused: small beside the limit, or none.
        self.largest_lease = max(1, min(_LEASE_CAP, per_window // 100))


class _Lease:
    """Tokens a process took for a caller and serves its requests from (see the module's text)."""

    __slots__ = ("left", "size", "until")

    def __init__(self, left: int, size: int, until: float):
        self.left, self.size, self.until = left, size, until


class RequestRate:
    """Requests per authenticated user, or per address without credentials (one script, registered once)."""

    def __init__(self, redis: aioredis.Redis, prefix: str, auth: Authenticator, limits: LimitSettings):
        self._auth, self._prefix = auth, prefix
        window_ms = max(1, int(limits.rate_window_seconds * 1000))
        self._users = _Bucket(limits.requests_per_window, window_ms)
        self._anonymous = _Bucket(limits.anonymous_requests_per_window, window_ms)
        self._take = redis.register_script(_TAKE)
        self._leases: dict[str, _Lease] = {}

    async def over_limit(self, conn: HTTPConnection) -> int | None:
        """Count this request against its caller; the seconds to wait if it is past the limit."""
        try:
            caller, bucket = "user:" + self._auth.authenticate(conn).user_id, self._users
        except AuthError:
            address = conn.client.host if conn.client is not None else "unknown"
            caller, bucket = "addr:" + address, self._anonymous
        if bucket.per_window <= 0:
            return None
        now = time.monotonic()
        lease = self._leases.get(caller)
        if lease is not None and lease.left > 0 and now < lease.until:
            lease.left -= 1
            return None
        # A lease used up while it lasted: the caller keeps this process busy, so take twice as
        # many; else one, as for a caller seen for the first time.
        size = min(lease.size * 2, bucket.largest_lease) if lease is not None and now < lease.until else 1
        # Hashed: a user id is the client's own text, and a key name should not carry it.
        digest = hashlib.sha256(caller.encode()).hexdigest()[:32]
        try:
            taken, wait_ms = await self._take(
                keys=[f"{self._prefix}:rate:{{{digest}}}"], args=[bucket.interval_ms, bucket.window_ms, size]
            )
        except (RedisError, RedisClusterException):  # the cluster client's "no node answers" too
            log.warning("rate limit not checked: Redis did not answer")
            return None
        if int(taken) < 1:
            self._leases.pop(caller, None)
            return max(1, math.ceil(float(wait_ms) / 1000))
        # This request takes one; the rest serve the caller's next requests here, added to the
        # lease of a request of the same caller that took some while this one waited for Redis.
        current = self._leases.get(caller)
        if current is not None and current is not lease and now < current.until:
            current.left += int(taken) - 1
            return None
        if current is None and len(self._leases) >= _LEASES_KEPT:
            del self._leases[next(iter(self._leases))]  # the longest-known caller's
        self._leases[caller] = _Lease(int(taken) - 1, size, now + _LEASE_SECONDS)
        return None


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
