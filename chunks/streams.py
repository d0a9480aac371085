"""One request body written into a stream upload: stop requests, its bound and checksum verification."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from .locks import Lease


@dataclass(frozen=True)
class Checksum:
    """A digest the client sent for one body: `algorithm` is a hashlib name (sha1, md5, sha256)."""

    algorithm: str
    digest: bytes


class Stopped(Exception):
    """A competing request asked this one to let go of the upload."""


async def until_stopped(body: AsyncIterator[bytes], lease: Lease) -> AsyncIterator[bytes]:
    """Yield `body`'s blocks until it ends or the lease holder is asked to stop (Stopped).

    A dead connection's read may never return, so a stop request must be able to end a read in
    progress: it cancels this task while the task waits for a block, and that one cancellation
    (uncancel, as asyncio.timeout does) becomes Stopped. A stop request made between reads is
    seen before the next one. (Racing every read against the stop flag with asyncio.wait made a
    task and a wait per block: a visible share of a 64 KiB PATCH, docs/performance.md.)"""
    task = asyncio.current_task()
    assert task is not None
    blocks = body.__aiter__()
    reading = stopping = False

    def on_stop() -> None:
        nonlocal stopping
        if reading and not stopping:
            stopping = True
            task.cancel()

    forget = lease.on_stop(on_stop)
    try:
        while True:
            if lease.stop_requested.is_set():
                raise Stopped()
            reading = True
            try:
                block = await blocks.__anext__()
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                if stopping and task.uncancel() == 0:
                    raise Stopped() from None  # ours; a cancellation of the request goes on
                raise
            finally:
                reading = False
            if block:
                yield block
    finally:
        forget()


class BoundedBody:
    """`body`'s blocks up to `limit` bytes in all, for a store's append loop (local_store.py,
    s3_append.py). Whatever ends the body early is kept in `interrupted`, not raised: a
    disconnect or a stop request (the exception itself), or an OverflowError for the block that
    would go past `limit` (which is not handed out). The store makes the bytes before it durable
    and hands the interruption back to the core (ChunkStore.append)."""

    def __init__(self, body: AsyncIterator[bytes], limit: int) -> None:
        self._body, self._limit = body, limit
        self.interrupted: BaseException | None = None

    async def blocks(self) -> AsyncIterator[bytes]:
        taken = 0
        source = self._body.__aiter__()
        while True:
            try:
                block = await source.__anext__()
            except StopAsyncIteration:
                return
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller
                self.interrupted = exc
                return
            taken += len(block)
            if taken > self._limit:
                self.interrupted = OverflowError("body longer than allowed")
                return
            yield block


class VerifiedBody:
    """`body`, hashed on the way through, so a store can tell whether it matched `checksum`."""

    def __init__(self, body: AsyncIterator[bytes], checksum: Checksum) -> None:
        self._body = body
        self._checksum = checksum
        self._hasher: Any = hashlib.new(checksum.algorithm)

    async def blocks(self) -> AsyncIterator[bytes]:
        async for block in self._body:
            self._hasher.update(block)
            yield block

    def matches(self) -> bool:
        """Whether the bytes that went through so far are exactly the ones the checksum names."""
        return bool(self._hasher.digest() == self._checksum.digest)
