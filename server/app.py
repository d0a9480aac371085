"""The Starlette app: the protocols' routes, middleware, the lifespan that builds the services,
and the last-resort error handlers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisClusterException, RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

import chunks

from . import debug, errors, protocols, redis_client
from . import metrics as metrics_module
from .auth import check_secret
from .endpoint import json_problem
from .links import TrustedHosts, allowed_hosts
from .ratelimit import RateLimit, RequestRate
from .redis_process import RedisProcess
from .request_log import SCOPE_PROBLEM, RequestObserver, note
from .resumable import EXPOSED_HEADERS
from .services import Services, build_services, services_of
from .settings import Settings

log = logging.getLogger("server")


def _redis_client(url: str, settings: Settings) -> aioredis.Redis:
    """The bounded, fail-fast client of `redis.mode` (server/redis_client.py)."""
    return redis_client.build(url, settings.redis)


async def _reap_forever(services: Services) -> None:
    interval = services.settings.uploads.reap_interval_seconds
    while True:
        try:
            removed = await services.uploads.reap()
            if removed:
                log.info("reaper removed %d expired uploads", removed)
            relayed = await services.uploads.sessions.relay_stranded()
            if relayed:
                log.info("reaper relayed %d events a crash had left staged", relayed)
        except (chunks.UploadError, RedisError, RedisClusterException, OSError):
            log.warning("reaper pass failed; will retry", exc_info=True)
        await asyncio.sleep(interval)


async def _warm_up(redis: aioredis.Redis, settings: Settings) -> None:
    """Redis connections and scripts ready before the first request (LeanRedis.warm_up). A
    Redis that is not answering yet is not a reason to refuse to start: requests then answer
    503 until it is back, as they would had it gone away later."""
    if isinstance(redis, redis_client.LeanRedis):
        try:
            await redis.warm_up(min(settings.redis.max_connections, _WARM_CONNECTIONS))
        except redis_client.UNAVAILABLE as exc:
            log.warning("Redis connections not warmed up: %s", exc)


# As many connections as a first burst of concurrent uploads takes, within redis.max_connections.
_WARM_CONNECTIONS = 32

# The cyclic garbage collector's youngest generation is collected, by default, every 700 more
# allocations than frees. With 100 uploads in flight (W3 of `make bench-tus`) the objects of the
# requests under way alone pass that all the time: a run made 1,200 collections, 110 of the
# middle generation and 10 full ones of ~30 ms (each scanning the ~66,000 objects the app made at
# start-up), 12 % of the event loop's time. Requests free what they make (their garbage is
# rarely cyclic), so at 50,000 a run made none, and CPU per 64 KiB PATCH fell by a fifth
# (docs/performance.md). What a request does leave in cycles is still collected, 50,000 objects
# (a few MB) at most later.
_GC_THRESHOLD = (50_000, 10, 10)


def _settle_heap() -> None:
    """Once started: the app's own objects (modules, settings, services) are moved out of the
    collector's sight (gc.freeze), so a full collection scans only what came after them, and the
    youngest generation waits for `_GC_THRESHOLD`."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*_GC_THRESHOLD)


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    # Each resource is released by the stack as soon as it exists, so a start-up that fails
    # half-way (a bad setting, a full disk) leaves no redis-server or worker pool behind.
    async with contextlib.AsyncExitStack() as stack:
        url = settings.redis.url
        if url == "embedded":
            embedded = RedisProcess(settings.redis.embedded_dir)
            stack.push_async_callback(asyncio.to_thread, embedded.stop)
            # Spawned on the loop's thread, which lives as long as the server: the child's
            # death signal is tied to the thread that started it (see RedisProcess.spawn).
            embedded.spawn()
            await asyncio.to_thread(embedded.wait_ready)
            url = embedded.url
            stack.push_async_callback(_cancel, [asyncio.create_task(embedded.watch())])
        redis = _redis_client(url, settings)
        stack.push_async_callback(redis.aclose)
        object_storage = None
        if settings.storage.backend == "s3":
            # Imported only here: aiobotocore and aiohttp are ~30 MiB a local-disk server never needs.
            from .object_storage import ObjectStorageUnusable, open_object_storage

            try:
                object_storage = await open_object_storage(settings.storage.s3, stack)
            except ObjectStorageUnusable as exc:
                log.critical("%s", exc)  # the one line that says why the server does not start
                raise
        services = build_services(settings, redis, app.state.metrics, object_storage)
        await _warm_up(redis, settings)
        stack.push_async_callback(services.pipeline.aclose)
        app.state.services = services
        reaper = asyncio.create_task(_reap_forever(services))
        sweeper = asyncio.create_task(services.sweeper.run_forever(services.uploads.sessions))
        stack.push_async_callback(lambda: _cancel([reaper, sweeper, *services.tasks.running()]))
        if services.pre_create is not None:
            stack.push_async_callback(services.pre_create.aclose)
        if services.events is not None:
            stack.push_async_callback(services.events.aclose)
            deliveries = await services.events.start()
            stack.push_async_callback(_cancel, deliveries)
        _settle_heap()
        yield


async def _cancel(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def healthz(request: Request) -> Response:
    """Redis and, with storage.backend: s3, the bucket: 503 with Retry-After if either does not answer."""
    services = services_of(request)
    try:
        await services.uploads.sessions.ping()
        redis_ok = True
    except chunks.StoreUnavailable:
        redis_ok = False
    body: dict[str, Any] = {"redis": redis_ok}
    storage_ok = True
    if services.object_storage is not None:
        storage_ok = body["storage"] = await services.object_storage.healthy()
    if not (redis_ok and storage_ok):
        return JSONResponse(
            {"status": "unavailable", **body},
            status_code=503,
            headers={"Retry-After": str(services.retry_after_seconds)},
        )
    return JSONResponse({"status": "ok", **body})


async def _known_failure(request: Request, exc: Exception) -> Response:
    """A known failure outside any protocol endpoint: the plain JSON shape."""
    settings: Settings = request.app.state.settings
    problem = errors.problem_for(exc, settings.redis.retry_after_seconds)
    assert problem is not None
    note(request.scope, SCOPE_PROBLEM, problem.code)
    return json_problem(problem)


_ROUTER_CODES = {404: "not-found", 405: "method-not-allowed"}


async def _router_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such path, a method the path does not take) in the JSON shape."""
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if "tus-resumable" in request.headers:
        headers["Tus-Resumable"] = "1.0.0"  # a tus client checks every answer for it
    code = _ROUTER_CODES.get(exc.status_code, f"http-{exc.status_code}")
    return JSONResponse({"error": exc.detail, "code": code}, exc.status_code, headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    """A bug. Logged with its traceback; the answer never echoes it, as it may hold paths or internals."""
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return json_problem(errors.INTERNAL_ERROR)


def _rate_of(conn: HTTPConnection) -> RequestRate:
    return services_of(conn).rate


def _metrics_redis(conn: HTTPConnection) -> tuple[Any, str] | None:
    services = getattr(conn.app.state, "services", None)
    return None if services is None else (services.redis, services.settings.redis.key_prefix)


def create_app(settings: Settings) -> Starlette:
    """The app. Refuses (InsecureSecret) a JWT secret that must not be used; `settings.server.host`
    is where it will listen."""
    check_secret(settings.auth, settings.server.host)
    document = protocols.openapi_document(settings)

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(document)

    routes: list[BaseRoute] = [
        *protocols.routes(settings),  # first: the router tries routes in order (protocols/__init__.py)
        Route("/healthz", healthz, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
    ]
    if settings.server.debug_endpoints:
        routes += debug.routes()
    # Observability (docs/operations.md): /metrics, and the outermost middleware that counts,
    # times and logs every request and gives it an X-Request-Id.
    metrics = metrics_module.Metrics()
    scrape = metrics_module.endpoint(metrics, settings.server.metrics_token, _metrics_redis)
    routes.append(Route("/metrics", scrape, methods=["GET"]))
    middleware = [Middleware(RequestObserver, metrics=metrics)]
    if settings.server.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.server.cors_origins),
                allow_methods=["*"],
                allow_headers=["*"],
                # "*" is not honoured for credentialed requests: name the tus/IETF headers too.
                expose_headers=["*", *EXPOSED_HEADERS],
                max_age=86400,
            )
        )
    if not settings.server.base_url:
        middleware.append(Middleware(TrustedHosts, hosts=allowed_hosts(settings.server)))
    middleware.append(Middleware(RateLimit, rate_of=_rate_of))  # inside CORS, so a 429 still carries CORS headers
    # Known failures by class (Starlette finds a handler along the MRO, as `errors` finds a
    # status); `Exception` only for bugs, which Starlette answers with our 500 and re-raises.
    handlers: dict[Any, Any] = {kind: _known_failure for kind in errors.KNOWN}
    handlers[HTTPException] = _router_error
    handlers[Exception] = _internal_error
    app = Starlette(routes=routes, middleware=middleware, lifespan=_lifespan, exception_handlers=handlers)
    app.state.settings = settings
    app.state.metrics = metrics
    return app
