"""Prometheus metrics (`GET /metrics`), named like tusd's where they mean the same thing.

One process (`server.workers: 1`): every app gets its own registry, so several apps in one
process (the in-process tests) never share counters, and a scrape serves that registry.

Several workers (server/workers.py): the supervisor gives its children a fresh directory in
PROMETHEUS_MULTIPROC_DIR, which switches prometheus-client to its multiprocess values when it is
imported: every worker writes its counts to files there, and a scrape, whichever worker answers
it, collects all of them (MultiProcessCollector), so one scrape sees the whole server. Gauges say
how they combine across workers (`multiprocess_mode`). The gauges read from Redis at scrape time
are not per worker at all: the answering worker reads them once and adds them to that scrape.

The names and what they count are listed in docs/operations.md, with the tusd metric each one
corresponds to.
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Iterator
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

import chunks
from chunks import outbox

# Problem codes that mean "a per-user limit said no" (server/errors.py, server/ratelimit.py).
LIMIT_CODES = frozenset({"too-many-uploads", "too-many-bytes-in-flight", "rate-limited"})
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Read when this module is imported, right after prometheus-client read it to choose its value
# class: set only in the children of server/workers.py's Supervisor.
MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class ScrapeGauges(Collector):
    """The gauges a scrape reads from Redis. They count the whole server's state, not one
    worker's, so they are never written to the multiprocess files (which would add up one copy
    per worker, each as old as that worker's last scrape): the answering worker reads them and
    serves them in that scrape only."""

    def __init__(self) -> None:
        self.uploads_open = 0.0
        self.dead_letters = 0.0

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "avs_uploads_open", "Upload sessions not yet expired (read at scrape)", value=self.uploads_open
        )
        yield GaugeMetricFamily("avs_events_dead_letters", "Events in the dead-letter stream", value=self.dead_letters)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        route = ["method", "route", "status"]
        self._answers: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        # prometheus-client appends `_total` to every counter's name (tusd's Go client does not).
        self.requests = Counter("tusd_requests", "HTTP requests, by route template and status", route, registry=r)
        self.request_seconds = Histogram(
            "avs_request_duration_seconds", "Time to answer a request", route, buckets=_DURATION_BUCKETS, registry=r
        )
        # Each worker counts its own requests; the server's is their sum over the workers alive
        # (a killed worker's last value must not stay in the sum).
        self.in_flight = Gauge(
            "avs_requests_in_flight", "Requests being answered now", registry=r, multiprocess_mode="livesum"
        )
        self.errors = Counter(
            "tusd_errors", "Failed requests, by status and error code", ["status", "code"], registry=r
        )
        self.bytes_received = Counter("tusd_bytes_received", "Request body bytes read", registry=r)
        self.uploads_created = Counter("tusd_uploads_created", "Uploads created", registry=r)
        self.uploads_finished = Counter("tusd_uploads_finished", "Uploads that became an avatar", registry=r)
        self.uploads_terminated = Counter("tusd_uploads_terminated", "Uploads abandoned by their client", registry=r)
        self.uploads_failed = Counter("avs_uploads_failed", "Uploads whose image was refused", ["code"], registry=r)
        self.uploads_expired = Counter("avs_uploads_expired", "Uploads removed by the reaper", registry=r)
        self.scrape_gauges = ScrapeGauges()
        r.register(self.scrape_gauges)
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
        # Every worker has its own image pool: the images waiting server-wide are the sum over
        # the workers alive.
        self.image_queue = Gauge(
            "avs_image_processing_queue",
            "Images waiting for or in the worker pool",
            registry=r,
            multiprocess_mode="livesum",
        )
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
        # The labelled children, looked up once per (method, route, status): prometheus_client's
        # `labels` validates and joins the values on every call.
        children = self._answers.get((method, route, status))
        if children is None:
            labels = (method, route, str(status))
            children = self._answers[(method, route, status)] = (
                self.requests.labels(*labels),
                self.request_seconds.labels(*labels),
            )
        children[0].inc()
        children[1].observe(seconds)
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
        return Response(generate_latest(_registry(metrics)), media_type=CONTENT_TYPE_LATEST)

    return scrape


def _registry(metrics: Metrics) -> CollectorRegistry:
    """What a scrape serves: this app's registry, or with several workers every worker's files
    (read afresh per scrape: a restarted worker adds files) and the gauges just read."""
    if MULTIPROCESS_DIR is None:
        return metrics.registry
    registry = CollectorRegistry()
    MultiProcessCollector(registry, MULTIPROCESS_DIR)
    registry.register(metrics.scrape_gauges)
    return registry


async def _read_gauges(metrics: Metrics, redis: aioredis.Redis, prefix: str) -> None:
    keys, gauges = chunks.Keys(prefix), metrics.scrape_gauges
    try:
        gauges.uploads_open = await redis.zcount(keys.expiry, time.time(), "+inf")
        gauges.dead_letters = await redis.xlen(keys.dead_events)
    except RedisError:
        metrics.redis_errors.inc()
