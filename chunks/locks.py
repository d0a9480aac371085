"""One writer per upload, across every process that shares the Redis: a lease lock.

A holder renews its lease while it works. A second request for the same upload (the usual case
on a flaky network: the phone retries while the server still reads the dead connection) raises
a stop flag; the holder notices it at its next renewal, saves what it has and lets go, so the
retry wins within about a second instead of waiting for the lease to run out.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .errors import StoreUnavailable, UploadBusy
from .keys import Keys

# KEYS[1] lock, KEYS[2] stop flag; ARGV[1] token, ARGV[2] lease ms.
# Returns 1 while held, 2 when asked to stop, 0 when the lease was lost.
_RENEW = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('pexpire', KEYS[1], ARGV[2])
if redis.call('exists', KEYS[2]) == 1 then return 2 end
return 1
"""
# KEYS[1] lock; ARGV[1] token.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


@contextlib.asynccontextmanager
async def started_after(
    delay: float, work: Callable[[], Coroutine[Any, Any, None]], quiet: tuple[type[BaseException], ...]
) -> AsyncIterator[None]:
    """Run `work()` as a task once the block has lasted `delay` seconds; cancel it when the block
    ends, its `quiet` errors swallowed. A lease's renewer acts only past its first period, and
    most blocks (a 64 KiB PATCH, a refused upload's completion) are over long before: a timer
    costs them less than a task made and cancelled every time."""
    loop = asyncio.get_running_loop()
    task: asyncio.Task[None] | None = None

    def start() -> None:
        nonlocal task
        task = loop.create_task(work())

    timer = loop.call_later(delay, start)
    try:
        yield
    finally:
        timer.cancel()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, *quiet):
                await task


class _HolderTokens:
    """Lock-holder tokens: unique across processes, not secret (nobody sends one), so a random
    per-process prefix and a counter serve; secrets.token_hex reads the kernel's random source
    on every call, a visible share of a 64 KiB PATCH (docs/performance.md)."""

    def __init__(self) -> None:
        self._renew()
        os.register_at_fork(after_in_child=self._renew)

    def _renew(self) -> None:
        self._prefix, self._count = secrets.token_hex(8), itertools.count()

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._count):x}"


holder_token = _HolderTokens()


class Lease:
    """A held lock. `stop_requested` is set when another request wants the upload, and the
    callbacks given to `on_stop` are called then (streams.until_stopped ends a read with one:
    cheaper than a task waiting on the event for every request)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.stop_requested = asyncio.Event()
        self.lost = False
        self._on_stop: list[Callable[[], None]] = []

    def request_stop(self) -> None:
        if not self.stop_requested.is_set():
            self.stop_requested.set()
            for callback in list(self._on_stop):
                callback()

    def on_stop(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` when a stop is requested; returns what forgets it."""
        self._on_stop.append(callback)
        return lambda: self._on_stop.remove(callback)


# Told how long each acquisition waited and whether it had to ask a holder to let go ("wait"),
# and of each lease given up because another request asked for it ("yield"): the server's metrics.
LockObserver = Callable[[str, float, bool], None]


def _ignore(what: str, seconds: float, contended: bool) -> None:
    pass


class UploadLocks:
    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str = "avs",
        lease_seconds: float = 5.0,
        renew_seconds: float = 0.25,
        observe: LockObserver = _ignore,
    ) -> None:
        self.redis = redis
        self.observe = observe
        self.keys = Keys(prefix)
        self.lease_ms = int(lease_seconds * 1000)
        self.renew_seconds = renew_seconds
        # register_script reloads the script on NOSCRIPT (after a Redis restart or failover).
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    @contextlib.asynccontextmanager
    async def hold(self, upload_id: str, wait_seconds: float = 3.0) -> AsyncIterator[Lease]:
        lock_key, stop_key = self.keys.lock(upload_id), self.keys.stop(upload_id)
        lease = Lease(holder_token())
        started = time.monotonic()
        try:
            contended = await self._acquire(lock_key, stop_key, lease.token, wait_seconds)
        except RedisError as exc:
            raise StoreUnavailable("the lock store is unavailable; try again shortly") from exc
        except UploadBusy:
            self.observe("wait", time.monotonic() - started, True)
            raise
        self.observe("wait", time.monotonic() - started, contended)
        async with self.renewing(lock_key, stop_key, lease):
            try:
                yield lease
            finally:
                await self.release(lock_key, lease)

    @contextlib.asynccontextmanager
    async def renewing(self, lock_key: str, stop_key: str, lease: Lease) -> AsyncIterator[None]:
        """Renew a taken lease while the body runs (also for hot_path.HotPath, which takes it in a
        script), from `renew_seconds` in (`started_after`)."""
        try:
            async with started_after(self.renew_seconds, lambda: self._keep(lock_key, stop_key, lease), (RedisError,)):
                yield
        finally:
            if lease.stop_requested.is_set() and not lease.lost:
                self.observe("yield", 0.0, True)

    async def release(self, lock_key: str, lease: Lease) -> None:
        with contextlib.suppress(RedisError):
            await asyncio.shield(self._release(keys=[lock_key], args=[lease.token]))

    async def _acquire(self, lock_key: str, stop_key: str, token: str, wait_seconds: float) -> bool:
        """Take the lock; whether another request held it first."""
        deadline = time.monotonic() + wait_seconds
        asked = False
        while True:
            if await self.redis.set(lock_key, token, nx=True, px=self.lease_ms):
                await self.redis.delete(stop_key)
                return asked
            if not asked:
                await self.redis.set(stop_key, b"1", px=self.lease_ms)
                asked = True
            if time.monotonic() >= deadline:
                raise UploadBusy("another request is writing this upload; retry shortly")
            await asyncio.sleep(0.05)

    async def _keep(self, lock_key: str, stop_key: str, lease: Lease) -> None:
        """Renew now (`renewing` starts this `renew_seconds` after the lease was taken), then
        every `renew_seconds`."""
        me = asyncio.current_task()
        while True:
            try:
                state = await self._renew(keys=[lock_key, stop_key], args=[lease.token, self.lease_ms])
            except RedisError:
                state = None
            # redis-py can swallow a cancellation that lands while a command is in flight and
            # return its reply (measured: 24 of 1000 tus creations at 100-way concurrency hung).
            # A renewer that kept going would renew the lock forever and `hold` would wait for
            # it forever: the request hangs and its upload stays locked.
            if me is not None and me.cancelling():
                raise asyncio.CancelledError
            if state == 0:  # None: Redis did not answer, try again at the next turn
                lease.lost = True
                lease.request_stop()
                return
            if state == 2:
                lease.request_stop()
            await asyncio.sleep(self.renew_seconds)
