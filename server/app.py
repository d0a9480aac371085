"""Where the three packages meet: chunks assembles, avatars processes and swaps, protocols answer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiofiles
import aiofiles.os
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

import chunks
from avatars import (
    AvatarStore,
    AvatarVersion,
    ImageRejected,
    LocalAvatarStore,
    Pipeline,
    PipelineSettings,
    ProcessedAvatar,
)

from . import (
    avatar_api,
    chunk_api,
    debug,
    gravatar,
    openapi,
    picture_api,
    profile_image_api,
    setting_avatar_api,
    tus,
    upload_resource,
    user_image_api,
    web_page,
)
from .auth import Authenticator
from .errors import json_error, problem_for
from .ratelimit import RateLimit
from .redis_process import RedisProcess
from .settings import Settings

log = logging.getLogger("server")


@dataclass
class Services:
    """Everything a protocol module needs, built once per process and passed in."""

    settings: Settings
    auth: Authenticator
    uploads: chunks.Uploads
    pipeline: Pipeline
    avatars: AvatarStore
    redis: aioredis.Redis
    work_root: Path
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run `work` in the background, tracked so shutdown cancels it."""
        task = asyncio.create_task(work, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def complete(self, upload: chunks.UploadSession) -> chunks.UploadSession:
        """Turn a fully received upload into the owner's avatar, exactly once.

        One request wins the claim and does the work; a concurrent one waits for its outcome.
        A rejected image marks the upload failed and re-raises for the protocol to render."""
        claim = await self.uploads.claim(upload.id)
        if claim is None:
            return await self.uploads.settled(upload.id, upload.owner, self.settings.uploads.completion_wait_seconds)
        try:
            version = await self.set_avatar(upload.owner, claim.path)
        except ImageRejected as exc:
            await self.uploads.fail(claim, exc.code, exc.message)
            raise
        except BaseException:
            await asyncio.shield(self.uploads.release(upload.id))
            raise
        return await self.uploads.finish(claim, version.describe())

    async def set_avatar_from_bytes(
        self, user_id: str, data: bytes, check: Callable[[ProcessedAvatar], None] | None = None
    ) -> AvatarVersion:
        """`set_avatar` for an image a protocol received whole in one small document (base64 JSON)."""
        source = self.work_root / f"whole-{secrets.token_hex(12)}"
        try:
            async with aiofiles.open(source, "wb") as out:
                await out.write(data)
            return await self.set_avatar(user_id, source, check)
        finally:
            with contextlib.suppress(FileNotFoundError):
                await aiofiles.os.remove(source)

    async def set_avatar(
        self, user_id: str, source: Path, check: Callable[[ProcessedAvatar], None] | None = None
    ) -> AvatarVersion:
        """Validate and process `source`, then swap it in as `user_id`'s avatar.

        `check` sees the decoded image before the swap and may raise to refuse it (seed 001
        compares the declared size with the real one)."""
        workdir = self.work_root / secrets.token_hex(12)
        try:
            processed = await self.pipeline.process(source, workdir)
            if check is not None:
                check(processed)
            version = await self.avatars.swap_in(user_id, processed)
        finally:
            await asyncio.to_thread(shutil.rmtree, workdir, True)
        try:
            # A stored image ends a Gravatar choice, whichever API stored it.
            await gravatar.clear(self.redis, self.settings.redis.key_prefix, user_id)
        except RedisError:
            log.warning("could not clear the Gravatar choice of a user", exc_info=True)
        return version


def _redis_client(url: str, settings: Settings) -> aioredis.Redis:
    # redis-py 8 defaults to long timeouts and many retries; a request must fail fast with a 503.
    return aioredis.from_url(
        url,
        socket_timeout=settings.redis.socket_timeout,
        socket_connect_timeout=settings.redis.connect_timeout,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1),
        health_check_interval=10,
    )


def build_services(settings: Settings, redis: aioredis.Redis) -> Services:
    root = Path(settings.storage.root).resolve()
    limits = settings.limits
    sessions = chunks.SessionStore(redis, settings.redis.key_prefix)
    quotas = chunks.Quotas(
        redis,
        sessions,
        chunks.QuotaLimits(
            max_open_uploads=limits.max_open_uploads,
            max_bytes_in_flight=limits.max_bytes_in_flight,
            retry_after_seconds=limits.quota_retry_after_seconds,
            key_ttl_seconds=settings.uploads.expire_seconds + 3600,
        ),
        settings.redis.key_prefix,
    )
    uploads = chunks.Uploads(
        sessions,
        chunks.LocalChunkStore(root, fault_enospc_flag=settings.storage.fault_enospc_flag or None),
        chunks.UploadLocks(redis, settings.redis.key_prefix),
        chunks.UploadLimits(
            max_upload_bytes=limits.max_image_bytes,
            max_chunk_bytes=limits.max_chunk_bytes,
            max_chunks=limits.max_chunks,
            expire_seconds=settings.uploads.expire_seconds,
            claim_seconds=settings.uploads.claim_seconds,
        ),
        quotas,
    )
    pipeline = Pipeline(
        PipelineSettings(
            sizes=tuple(settings.avatars.sizes),
            max_pixels=limits.max_pixels,
            max_side=limits.max_side,
            max_frames=limits.max_frames,
            webp_quality=settings.avatars.webp_quality,
            jpeg_quality=settings.avatars.jpeg_quality,
            keep_animation=settings.avatars.keep_animation,
            workers=settings.avatars.workers,
        )
    )
    work_root = root / "work"
    work_root.mkdir(parents=True, exist_ok=True)
    return Services(
        settings=settings,
        auth=Authenticator(settings.auth),
        uploads=uploads,
        pipeline=pipeline,
        avatars=LocalAvatarStore(root),
        redis=redis,
        work_root=work_root,
    )


async def _reap_forever(services: Services) -> None:
    interval = services.settings.uploads.reap_interval_seconds
    while True:
        try:
            removed = await services.uploads.reap()
            if removed:
                log.info("reaper removed %d expired uploads", removed)
        except (chunks.UploadError, RedisError, OSError):
            log.warning("reaper pass failed; will retry", exc_info=True)
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    # Each resource is released by the stack as soon as it exists, so a start-up that fails
    # half-way (a bad setting, a full disk) leaves no redis-server or worker pool behind.
    async with contextlib.AsyncExitStack() as stack:
        url = settings.redis.url
        if url == "embedded":
            embedded = RedisProcess(settings.redis.embedded_dir)
            await asyncio.to_thread(embedded.start)
            stack.push_async_callback(asyncio.to_thread, embedded.stop)
            url = embedded.url
            stack.push_async_callback(_cancel, [asyncio.create_task(embedded.watch())])
        redis = _redis_client(url, settings)
        stack.push_async_callback(redis.aclose)
        services = build_services(settings, redis)
        stack.push_async_callback(services.pipeline.aclose)
        app.state.services = services
        reaper = asyncio.create_task(_reap_forever(services))
        stack.push_async_callback(lambda: _cancel([reaper, *services.tasks]))
        yield


async def _cancel(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def healthz(request: Request) -> Response:
    services: Services = request.app.state.services
    try:
        await services.uploads.sessions.ping()
    except chunks.StoreUnavailable:
        return JSONResponse(
            {"status": "unavailable", "redis": False},
            status_code=503,
            headers={"Retry-After": str(services.settings.redis.retry_after_seconds)},
        )
    return JSONResponse({"status": "ok", "redis": True})


async def _unexpected(request: Request, exc: Exception) -> Response:
    if problem_for(exc) is not None:
        return json_error(exc)
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    # Never echo the exception: it may hold paths or internals (tusd #178).
    return JSONResponse({"error": "internal server error", "code": "internal-error"}, status_code=500)


def create_app(settings: Settings) -> Starlette:
    routes: list[BaseRoute] = [Route("/healthz", healthz, methods=["GET"])]
    routes += openapi.routes()
    if settings.protocol_enabled("chunk_api"):
        routes += chunk_api.routes()
    for module in (picture_api, user_image_api, profile_image_api, setting_avatar_api):
        if settings.protocol_enabled(module.PROTOCOL):
            routes += module.routes()
    if settings.protocol_enabled("tus") or settings.protocol_enabled("ietf"):
        routes += upload_resource.routes(settings)  # /files/: tus 1.0.0 and the IETF draft
    routes += avatar_api.routes()
    routes += web_page.routes(settings)  # GET /, /web/..., /docs when server.web_page is on
    if settings.server.debug_endpoints:
        routes += debug.routes()
    middleware = []
    if settings.server.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.server.cors_origins),
                allow_methods=["*"],
                allow_headers=["*"],
                # "*" is not honoured for credentialed requests: name the tus/IETF headers too.
                expose_headers=["*", *tus.EXPOSED_HEADERS],
                max_age=86400,
            )
        )
    middleware.append(Middleware(RateLimit))  # inside CORS, so a 429 still carries CORS headers
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=_lifespan,
        exception_handlers={Exception: _unexpected, RedisError: _unexpected},
    )
    app.state.settings = settings
    return app
