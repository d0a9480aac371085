"""What every protocol works with, built once per process when the app starts.

`Services` only holds things. The two use cases every protocol shares live beside it: setting
a user's avatar (`AvatarSetter`) and turning a fully received upload into the avatar
(`complete_upload`, the one place an upload is completed). `CompletionSweeper` completes the
uploads whose completer died, without waiting for a client to ask again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from .events import AnnouncingAvatarStore, Events
from .gravatar import GravatarChoices
from .hooks import PreCreateHook
from .metrics import Metrics, Timer
from .pending_fetches import PendingFetches
from .ratelimit import RequestRate
from .settings import Settings

if TYPE_CHECKING:
    from .object_storage import ObjectStorage

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


class CompletionSweeper:
    """Completion is the server's job: uploads with every byte in but no outcome are finished here.

    At start-up and every `uploads.completion_sweep_seconds` (every process does it; whichever
    claims an upload first completes it), and at once when someone asks about one (`nudge`,
    called by `Uploads.current` on a tus/IETF HEAD or a chunk-API status GET)."""

    def __init__(self, completion: chunks.Completion, tasks: BackgroundTasks, interval: float) -> None:
        self._completion, self._tasks, self._interval = completion, tasks, interval
        self._nudged: set[str] = set()

    def nudge(self, session: chunks.UploadSession) -> None:
        if session.id in self._nudged or len(self._nudged) >= _MAX_NUDGED:
            return
        self._nudged.add(session.id)
        self._tasks.spawn(self._complete(session), name=f"complete-{session.id[:8]}")

    async def _complete(self, session: chunks.UploadSession) -> None:
        try:
            await self._completion.complete_if_free(session)
        finally:
            self._nudged.discard(session.id)

    async def run_forever(self, sessions: chunks.SessionStore) -> None:
        listed = False
        while True:
            try:
                if not listed:
                    if count := await sessions.list_completable():
                        log.info("%d uploads await completion", count)
                    listed = True
                if settled := await self._completion.sweep():
                    log.info("completed %d uploads whose completer was gone", settled)
            except (chunks.UploadError, RedisError, OSError):
                log.warning("completion sweep failed; will retry", exc_info=True)
            await asyncio.sleep(self._interval)


# Uploads being completed at once because someone asked about them; more wait for the sweep.
_MAX_NUDGED = 64


class AvatarSetter:
    """Validate and process an image, then swap it in as the user's avatar."""

    def __init__(
        self,
        pipeline: Pipeline,
        avatars: AvatarStore,
        gravatar: GravatarChoices,
        work_root: Path,
        metrics: Metrics | None = None,
    ):
        self._pipeline, self._avatars, self._gravatar, self._work_root = pipeline, avatars, gravatar, work_root
        self._metrics = metrics or Metrics()

    async def set_avatar(
        self,
        user_id: str,
        source: Path,
        check: Callable[[ProcessedAvatar], None] | None = None,
        guard: Callable[[], AbstractAsyncContextManager[object]] | None = None,
    ) -> AvatarVersion:
        """`check` sees the decoded image before the swap and may raise to refuse it (the
        picture API compares the declared format and size with the real ones). The swap runs
        inside `guard()`, which may raise to call it off (a URL import re-checks, under the
        user's lock, that no DELETE or newer upload came while it worked)."""
        workdir = self._work_root / secrets.token_hex(12)
        try:
            processed = await self._process(source, workdir)
            if check is not None:
                check(processed)
            async with guard() if guard is not None else contextlib.nullcontext():
                version = await self._avatars.swap_in(user_id, processed)
        finally:
            await asyncio.to_thread(shutil.rmtree, workdir, True)
        try:
            # A stored image ends a Gravatar choice, whichever API stored it.
            await self._gravatar.clear(user_id)
        except RedisError:
            log.warning("could not clear the Gravatar choice of a user", exc_info=True)
        return version

    async def _process(self, source: Path, workdir: Path) -> ProcessedAvatar:
        """The pipeline's work, timed by the source's format ("refused" when it was not an image
        the pipeline takes), with the number of images waiting for or in the pool."""
        metrics, timer, label = self._metrics, Timer(), "refused"
        metrics.image_queue.inc()
        try:
            processed = await self._pipeline.process(source, workdir)
            label = processed.source_format.lower()
            return processed
        finally:
            metrics.image_queue.dec()
            metrics.image_seconds.labels(label).observe(timer.seconds)

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
    sweeper: CompletionSweeper
    tasks: BackgroundTasks = field(default_factory=BackgroundTasks)
    metrics: Metrics = field(default_factory=Metrics)
    # The webhook delivery loops (None without `events:`); started and stopped by the app's lifespan.
    events: Events | None = None
    # The blocking pre-create hook (None without hooks.pre_create_url); the app closes its client.
    pre_create: PreCreateHook | None = None
    # The bucket of storage.backend: s3 (None for local), asked by /healthz.
    object_storage: ObjectStorage | None = None


def build_services(
    settings: Settings,
    redis: aioredis.Redis,
    metrics: Metrics | None = None,
    object_storage: ObjectStorage | None = None,
) -> Services:
    """`object_storage` (the open bucket) when storage.backend is s3: bytes and avatars go there,
    and storage.root is only this process's scratch space."""
    root = Path(settings.storage.root).resolve()
    prefix = settings.redis.key_prefix
    metrics = metrics or Metrics()
    # Events go to the stream only when someone is configured to receive them.
    outbox = chunks.Outbox(chunks.Keys(prefix) if settings.events else None, metrics.upload_event)
    auth = Authenticator(settings.auth)
    pipeline = _pipeline(settings)
    avatars: AvatarStore = LocalAvatarStore(root)
    store: chunks.ChunkStore = chunks.LocalChunkStore(
        root, fault_enospc_flag=settings.storage.fault_enospc_flag or None
    )
    if object_storage is not None:
        # Imported only with the S3 backend (botocore and aiohttp are ~30 MiB per process).
        from avatars.s3_store import S3AvatarStore
        from chunks.s3_store import S3ChunkStore

        bucket, scratch = object_storage.bucket, root / "work" / "s3"
        avatars = S3AvatarStore(
            object_storage.client, bucket, prefix=object_storage.prefix, public_base_url=object_storage.public_base_url
        )
        store = S3ChunkStore(object_storage.client, bucket, scratch=scratch, prefix=object_storage.prefix)
    if settings.events:
        avatars = AnnouncingAvatarStore(avatars, outbox, redis, settings.server.base_url)
    gravatar = GravatarChoices(redis, prefix)
    work_root = root / "work"
    work_root.mkdir(parents=True, exist_ok=True)
    pre_create = PreCreateHook(settings.hooks, metrics) if settings.hooks.pre_create_url else None
    uploads = _uploads(settings, redis, store, outbox, metrics)
    uploads.gate = pre_create
    avatar_setter = AvatarSetter(pipeline, avatars, gravatar, work_root, metrics)
    events = None
    if settings.events:
        events = Events(redis, prefix, settings.events, settings.event_delivery, metrics)
    tasks = BackgroundTasks()
    completion = chunks.Completion(
        uploads,
        _avatar_finisher(avatar_setter),
        wait_seconds=settings.uploads.completion_wait_seconds,
        background=tasks.spawn,
    )
    sweeper = CompletionSweeper(completion, tasks, settings.uploads.completion_sweep_seconds)
    uploads.on_awaiting_completion = sweeper.nudge
    return Services(
        settings=settings,
        auth=auth,
        uploads=uploads,
        pipeline=pipeline,
        avatars=avatars,
        avatar_setter=avatar_setter,
        completion=completion,
        gravatar=gravatar,
        pending_fetches=PendingFetches(
            redis, prefix, int(settings.fetch.timeout_seconds * 2) + 60, settings.fetch.max_concurrent
        ),
        rate=RequestRate(redis, prefix, auth, settings.limits),
        body_pace=BodyPace.of(settings.limits),
        body_budget=MemoryBudget(settings.limits.json_body_memory_budget, settings.limits.body_budget_wait_seconds),
        work_root=work_root,
        retry_after_seconds=settings.redis.retry_after_seconds,
        redis=redis,
        metrics=metrics,
        events=events,
        pre_create=pre_create,
        sweeper=sweeper,
        tasks=tasks,
        object_storage=object_storage,
    )


def _uploads(
    settings: Settings, redis: aioredis.Redis, store: chunks.ChunkStore, outbox: chunks.Outbox, metrics: Metrics
) -> chunks.Uploads:
    limits, prefix = settings.limits, settings.redis.key_prefix
    sessions = chunks.SessionStore(
        redis,
        prefix,
        outbox,
        wait_replicas=settings.redis.wait_replicas,
        wait_timeout_seconds=settings.redis.wait_timeout_seconds,
    )
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
        store,
        chunks.UploadLocks(redis, prefix, observe=metrics.lock),
        chunks.UploadLimits(
            max_upload_bytes=limits.max_image_bytes,
            max_chunk_bytes=limits.max_chunk_bytes,
            max_chunks=limits.max_chunks,
            expire_seconds=settings.uploads.expire_seconds,
            claim_seconds=settings.uploads.claim_seconds,
            keep_settled=settings.uploads.keep_settled_per_user,
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
            max_scans=limits.max_scans,
            max_png_chunks=limits.max_png_chunks,
            job_seconds=limits.image_job_seconds,
            webp_quality=avatars.webp_quality,
            webp_method=avatars.webp_method,
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


async def complete_upload(
    services: Services,
    session: chunks.UploadSession,
    expected: chunks.Checksum | None = None,
    *,
    claimed_as: str = "",
) -> chunks.UploadSession:
    """Turn a fully received upload into its owner's avatar, exactly once; the upload as it ends.

    An upload still missing bytes, a partial upload (tus concatenation: never completed on its
    own) and one already settled come back unchanged. One request wins the claim and does the
    work; a concurrent one waits for its outcome. A refused image does not raise: the upload
    comes back FAILED, with the refusal's code and message, for the protocol to render.
    `expected` is a digest of the whole upload to check first (RFC 9530 `Repr-Digest`).
    `claimed_as`: the `chunks.claim_token()` the append that brought the last bytes was given
    (`Uploads.append(claim_as=)`): its record claimed the upload already, one transaction fewer."""
    return await services.completion.complete(session, expected, claimed_as=claimed_as)
