"""Prometheus metrics (`GET /metrics`), named like tusd's where they mean the same thing.

Every app gets its own registry, so several apps in one process (the in-process tests) never
share counters. The server runs one process per `python -m server`, so prometheus-client's
multiprocess mode is not needed: scrape each process. The names and what they count are listed
in docs/operations.md, with the tusd metric each one corresponds to.
"""

from __future__ import annotations

import hmac
import time
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

import chunks
from chunks import outbox

# Problem codes that mean "a per-user limit said no" (server/errors.py, server/ratelimit.py).
LIMIT_CODES = frozenset({"too-many-uploads", "too-many-bytes-in-flight", "rate-limited"})
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        route = ["method", "route", "status"]
        # prometheus-client appends `_total` to every counter's name (tusd's Go client does not).
        self.requests = Counter("tusd_requests", "HTTP requests, by route template and status", route, registry=r)
        self.request_seconds = Histogram(
            "avs_request_duration_seconds", "Time to answer a request", route, buckets=_DURATION_BUCKETS, registry=r
        )
        self.in_flight = Gauge("avs_requests_in_flight", "Requests being answered now", registry=r)
        self.errors = Counter(
            "tusd_errors", "Failed requests, by status and error code", ["status", "code"], registry=r
        )
        self.bytes_received = Counter("tusd_bytes_received", "Request body bytes read", registry=r)
        self.uploads_created = Counter("tusd_uploads_created", "Uploads created", registry=r)
        self.uploads_finished = Counter("tusd_uploads_finished", "Uploads that became an avatar", registry=r)
        self.uploads_terminated = Counter("tusd_uploads_terminated", "Uploads abandoned by their client", registry=r)
        self.uploads_failed = Counter("avs_uploads_failed", "Uploads whose image was refused", ["code"], registry=r)
        self.uploads_expired = Counter("avs_uploads_expired", "Uploads removed by the reaper", registry=r)
        self.uploads_open = Gauge("avs_uploads_open", "Upload sessions not yet expired (read at scrape)", registry=r)
        self.lock_wait = Histogram(
            "avs_lock_wait_seconds",
            "Time to take an upload's lock",
            ["contended"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.lock_releases = Counter(
            "avs_lock_contention_releases", "Locks given up because another request asked", registry=r
        )
        self.image_seconds = Histogram(
            "avs_image_processing_seconds",
            "Image decoding and rendering",
            ["format"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.image_queue = Gauge("avs_image_processing_queue", "Images waiting for or in the worker pool", registry=r)
        self.redis_errors = Counter("avs_redis_errors", "Requests failed because Redis did not answer", registry=r)
        self.unavailable = Counter("avs_unavailable_responses", "503 answers", registry=r)
        self.limit_rejections = Counter("avs_limit_rejections", "Per-user limit refusals (429)", ["kind"], registry=r)
        hook = ["hooktype"]
        self.hook_invocations = Counter("tusd_hook_invocations", "Blocking hooks called", hook, registry=r)
        self.hook_errors = Counter("tusd_hook_errors", "Blocking hooks that failed or timed out", hook, registry=r)
        endpoint = ["endpoint"]
        self.events_delivered = Counter("avs_events_delivered", "Webhook deliveries answered 2xx", endpoint, registry=r)
        self.event_failures = Counter(
            "avs_event_delivery_failures", "Webhook attempts that failed", endpoint, registry=r
        )
        self.events_dead = Counter("avs_events_dead_lettered", "Events given up on and parked", endpoint, registry=r)
        self.dead_letters = Gauge("avs_events_dead_letters", "Events in the dead-letter stream", registry=r)

    # -- hooks for the core and the services ---------------------------------------------------

    def upload_event(self, event_type: str, data: dict[str, Any]) -> None:
        """chunks.Outbox's `notify`: an upload event committed by this process."""
        if event_type == outbox.UPLOAD_CREATED:
            self.uploads_created.inc()
        elif event_type == outbox.UPLOAD_FINISHED:
            self.uploads_finished.inc()
        elif event_type == outbox.UPLOAD_FAILED:
            self.uploads_failed.labels(str(data.get("error", {}).get("code", ""))).inc()
        elif event_type == outbox.UPLOAD_TERMINATED:
            self.uploads_terminated.inc()
        elif event_type == outbox.UPLOAD_EXPIRED:
            self.uploads_expired.inc()

    def lock(self, what: str, seconds: float, contended: bool) -> None:
        """chunks.UploadLocks' observer."""
        if what == "wait":
            self.lock_wait.labels("true" if contended else "false").observe(seconds)
        else:
            self.lock_releases.inc()

    def answered(self, method: str, route: str, status: int, seconds: float, code: str | None) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.request_seconds.labels(method, route, str(status)).observe(seconds)
        if status >= 400:
            self.errors.labels(str(status), code or "").inc()
        if status == 503:
            self.unavailable.inc()
        if code == "store-unavailable":
            self.redis_errors.inc()
        if status == 429 and code in LIMIT_CODES:
            self.limit_rejections.labels(code).inc()


class Timer:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started


def _authorized(request: Request, token: str) -> bool:
    if not token:
        return True
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    # Constant time: the comparison must not tell an attacker how much of a guess was right.
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


def endpoint(metrics: Metrics, token: str, redis_of: Any) -> Any:
    """`GET /metrics`. `redis_of(request)` gives the Redis client and key prefix for the gauges
    read at scrape time (None before the services exist)."""

    async def scrape(request: Request) -> Response:
        if not _authorized(request, token):
            return JSONResponse(
                {"error": "a valid metrics bearer token is required", "code": "metrics-unauthorized"},
                401,
                {"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        found = redis_of(request)
        if found is not None:
            await _read_gauges(metrics, *found)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return scrape


async def _read_gauges(metrics: Metrics, redis: aioredis.Redis, prefix: str) -> None:
    keys = chunks.Keys(prefix)
    try:
        metrics.uploads_open.set(await redis.zcount(keys.expiry, time.time(), "+inf"))
        metrics.dead_letters.set(await redis.xlen(keys.dead_events))
    except RedisError:
        metrics.redis_errors.inc()
