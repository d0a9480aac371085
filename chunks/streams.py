"""One request body written into a stream upload: stop requests and checksum verification."""

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
    """Yield `body`'s blocks until it ends or the lease holder is asked to stop.

    The next read races the stop flag, because a dead connection's read may never return."""
    blocks = body.__aiter__()
    stop = asyncio.ensure_future(lease.stop_requested.wait())
    try:
        while True:
            read = asyncio.ensure_future(blocks.__anext__())
            done, _ = await asyncio.wait({read, stop}, return_when=asyncio.FIRST_COMPLETED)
            if read not in done:
                read.cancel()
                await asyncio.gather(read, return_exceptions=True)
                raise Stopped()
            try:
                block = read.result()
            except StopAsyncIteration:
                return
            if block:
                yield block
    finally:
        stop.cancel()


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
