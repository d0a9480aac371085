"""What every protocol works with, built once per process when the app starts.

`Services` only holds things. The two use cases every protocol shares live beside it: setting
a user's avatar (`AvatarSetter`) and turning a fully received upload into the avatar
(`complete_upload`, the one place an upload is completed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiofiles
import aiofiles.os
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from starlette.requests import HTTPConnection

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

from .auth import Authenticator
from .bodies import BodyPace, MemoryBudget
from .gravatar import GravatarChoices
from .pending_fetches import PendingFetches
from .ratelimit import RequestRate
from .settings import Settings

log = logging.getLogger("server")


class BackgroundTasks:
    """Work that outlives its request, tracked so that shutdown cancels it and a crash is logged."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    def running(self) -> list[asyncio.Task[None]]:
        return list(self._tasks)


class AvatarSetter:
    """Validate and process an image, then swap it in as the user's avatar."""

    def __init__(self, pipeline: Pipeline, avatars: AvatarStore, gravatar: GravatarChoices, work_root: Path):
        self._pipeline, self._avatars, self._gravatar, self._work_root = pipeline, avatars, gravatar, work_root

    async def set_avatar(
        self, user_id: str, source: Path, check: Callable[[ProcessedAvatar], None] | None = None
    ) -> AvatarVersion:
        """`check` sees the decoded image before the swap and may raise to refuse it (the
        picture API compares the declared format and size with the real ones)."""
        workdir = self._work_root / secrets.token_hex(12)
        try:
            processed = await self._pipeline.process(source, workdir)
            if check is not None:
                check(processed)
            version = await self._avatars.swap_in(user_id, processed)
        finally:
            await asyncio.to_thread(shutil.rmtree, workdir, True)
        try:
            # A stored image ends a Gravatar choice, whichever API stored it.
            await self._gravatar.clear(user_id)
        except RedisError:
            log.warning("could not clear the Gravatar choice of a user", exc_info=True)
        return version

    async def set_avatar_from_bytes(
        self, user_id: str, data: bytes, check: Callable[[ProcessedAvatar], None] | None = None
    ) -> AvatarVersion:
        """`set_avatar` for an image a protocol received whole in one small document (base64 JSON)."""
        source = self._work_root / f"whole-{secrets.token_hex(12)}"
        try:
            async with aiofiles.open(source, "wb") as out:
                await out.write(data)
            return await self.set_avatar(user_id, source, check)
        finally:
            with contextlib.suppress(FileNotFoundError):
                await aiofiles.os.remove(source)


@dataclass(frozen=True)
class Services:
    """Everything a protocol module needs; see `build_services`."""

    settings: Settings
    auth: Authenticator
    uploads: chunks.Uploads
    pipeline: Pipeline
    avatars: AvatarStore
    avatar_setter: AvatarSetter
    completion: chunks.Completion
    gravatar: GravatarChoices
    pending_fetches: PendingFetches
    rate: RequestRate
    body_pace: BodyPace
    # Memory for whole-document bodies (JSON chunks) held at once by this process.
    body_budget: MemoryBudget
    work_root: Path
    # How long a client should wait after the session store did not answer.
    retry_after_seconds: int
    # The raw client, for test-only introspection (`server.debug`) and shutdown only.
    redis: aioredis.Redis
    tasks: BackgroundTasks = field(default_factory=BackgroundTasks)


def build_services(settings: Settings, redis: aioredis.Redis) -> Services:
    root = Path(settings.storage.root).resolve()
    prefix = settings.redis.key_prefix
    auth = Authenticator(settings.auth)
    pipeline = _pipeline(settings)
    avatars = LocalAvatarStore(root)
    gravatar = GravatarChoices(redis, prefix)
    work_root = root / "work"
    work_root.mkdir(parents=True, exist_ok=True)
    uploads = _uploads(settings, redis, root)
    avatar_setter = AvatarSetter(pipeline, avatars, gravatar, work_root)
    return Services(
        settings=settings,
        auth=auth,
        uploads=uploads,
        pipeline=pipeline,
        avatars=avatars,
        avatar_setter=avatar_setter,
        completion=chunks.Completion(
            uploads, _avatar_finisher(avatar_setter), wait_seconds=settings.uploads.completion_wait_seconds
        ),
        gravatar=gravatar,
        pending_fetches=PendingFetches(redis, prefix, int(settings.fetch.timeout_seconds * 2) + 60),
        rate=RequestRate(redis, prefix, auth, settings.limits),
        body_pace=BodyPace.of(settings.limits),
        body_budget=MemoryBudget(settings.limits.json_body_memory_budget, settings.limits.body_budget_wait_seconds),
        work_root=work_root,
        retry_after_seconds=settings.redis.retry_after_seconds,
        redis=redis,
    )


def _uploads(settings: Settings, redis: aioredis.Redis, root: Path) -> chunks.Uploads:
    limits, prefix = settings.limits, settings.redis.key_prefix
    sessions = chunks.SessionStore(redis, prefix)
    quotas: chunks.Quotas = chunks.NoQuotas()
    if limits.max_open_uploads > 0 or limits.max_bytes_in_flight > 0:
        quotas = chunks.RedisQuotas(
            redis,
            sessions,
            chunks.QuotaLimits(
                max_open_uploads=limits.max_open_uploads,
                max_bytes_in_flight=limits.max_bytes_in_flight,
                retry_after_seconds=limits.quota_retry_after_seconds,
                key_ttl_seconds=settings.uploads.expire_seconds + 3600,
            ),
            prefix,
        )
    return chunks.Uploads(
        sessions,
        chunks.LocalChunkStore(root, fault_enospc_flag=settings.storage.fault_enospc_flag or None),
        chunks.UploadLocks(redis, prefix),
        chunks.UploadLimits(
            max_upload_bytes=limits.max_image_bytes,
            max_chunk_bytes=limits.max_chunk_bytes,
            max_chunks=limits.max_chunks,
            expire_seconds=settings.uploads.expire_seconds,
            claim_seconds=settings.uploads.claim_seconds,
        ),
        quotas,
    )


def _pipeline(settings: Settings) -> Pipeline:
    limits, avatars = settings.limits, settings.avatars
    return Pipeline(
        PipelineSettings(
            sizes=tuple(avatars.sizes),
            max_pixels=limits.max_pixels,
            max_side=limits.max_side,
            max_frames=limits.max_frames,
            webp_quality=avatars.webp_quality,
            jpeg_quality=avatars.jpeg_quality,
            keep_animation=avatars.keep_animation,
            workers=avatars.workers,
        )
    )


def services_of(conn: HTTPConnection) -> Services:
    """The app's services; they exist once its lifespan has started."""
    services = getattr(conn.app.state, "services", None)
    if not isinstance(services, Services):
        raise RuntimeError(
            "the app's services are not built: they are made by its lifespan, so run it under a "
            "server with lifespan on (or a TestClient used as a context manager)"
        )
    return services


def _avatar_finisher(setter: AvatarSetter) -> chunks.Finisher:
    """The upload core's finisher: a completed upload's bytes become its owner's avatar."""

    async def finish(session: chunks.UploadSession, source: Path) -> dict[str, Any]:
        try:
            version = await setter.set_avatar(session.owner, source)
        except ImageRejected as exc:
            raise chunks.UploadRejected(exc.message, code=exc.code) from exc
        return version.describe()

    return finish


async def complete_upload(services: Services, session: chunks.UploadSession) -> chunks.UploadSession:
    """Turn a fully received upload into its owner's avatar, exactly once; the upload as it ends.

    An upload still missing bytes, a partial upload (tus concatenation: never completed on its
    own) and one already settled come back unchanged. One request wins the claim and does the
    work; a concurrent one waits for its outcome. A refused image does not raise: the upload
    comes back FAILED, with the refusal's code and message, for the protocol to render."""
    return await services.completion.complete(session)
