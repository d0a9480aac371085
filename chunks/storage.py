"""Where upload bytes live. The storage, not a counter, is the truth about stored bytes.

Layout under the root, one directory per upload:
    uploads/<id>/part-<index>-<sha256>   a numbered chunk, written to a temp name, fsynced, renamed
    uploads/<id>/data                     the appended stream of a STREAM upload
    uploads/<id>/assembled                the concatenated parts, made at completion

A part's name carries its digest, so two different bodies for one index never overwrite each
other: the session in Redis says which digest was acknowledged, and only that file counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Protocol

import aiofiles
import aiofiles.os

from .errors import StorageFull

# errno values that mean "the bytes were not stored", after which we truncate back (PITFALLS).
_NOT_STORED = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG}
_COPY_BLOCK = 1024 * 1024


class ChunkStore(Protocol):
    async def put_part(self, upload_id: str, index: int, data: bytes, digest: str) -> None: ...
    async def has_part(self, upload_id: str, index: int, digest: str) -> bool: ...
    async def drop_part(self, upload_id: str, index: int, digest: str) -> None: ...
    async def assemble(self, upload_id: str, parts: list[tuple[int, str]]) -> Path: ...
    async def stream_size(self, upload_id: str) -> int: ...
    async def truncate(self, upload_id: str, size: int) -> None: ...
    async def append(
        self,
        upload_id: str,
        offset: int,
        body: AsyncIterator[bytes],
        limit: int,
        checkpoint: Callable[[int], Awaitable[None]],
        checkpoint_bytes: int,
    ) -> tuple[int, BaseException | None]: ...
    async def concatenate(self, upload_id: str, sources: list[str]) -> int: ...
    def stream_path(self, upload_id: str) -> Path: ...
    async def discard(self, upload_id: str) -> None: ...
    async def upload_ids(self) -> list[str]: ...


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _storage_error(exc: OSError) -> Exception:
    if exc.errno in _NOT_STORED:
        return StorageFull("the server has no room to store this upload right now")
    return exc


class LocalChunkStore:
    """Chunk bytes on a local (or shared, POSIX) filesystem, written with aiofiles."""

    def __init__(self, root: str | os.PathLike[str], *, fault_enospc_flag: str | os.PathLike[str] | None = None):
        self.root = Path(root).resolve() / "uploads"
        self.root.mkdir(parents=True, exist_ok=True)
        # Test-only (storage.fault_enospc_flag): while this file exists, writes fail with ENOSPC
        # after their bytes went out, as a full disk reports it at write or fsync time.
        self._fault_flag = Path(fault_enospc_flag) if fault_enospc_flag else None

    def _injected_fault(self) -> None:
        if self._fault_flag is not None and self._fault_flag.exists():
            raise OSError(errno.ENOSPC, "No space left on device (injected)")

    def _dir(self, upload_id: str) -> Path:
        # Ids are made by the core (urlsafe base64); refuse anything else rather than trust it in a path.
        if not upload_id or not all(c.isalnum() or c in "-_" for c in upload_id):
            raise ValueError("malformed upload id")
        return self.root / upload_id

    def _part(self, upload_id: str, index: int, digest: str) -> Path:
        return self._dir(upload_id) / f"part-{index:06d}-{digest}"

    def stream_path(self, upload_id: str) -> Path:
        return self._dir(upload_id) / "data"

    async def put_part(self, upload_id: str, index: int, data: bytes, digest: str) -> None:
        """Store a chunk durably under its index and the sha256 `digest` of `data`."""
        directory = self._dir(upload_id)
        final = self._part(upload_id, index, digest)
        tmp = directory / f".tmp-{index:06d}-{secrets.token_hex(8)}"
        try:
            await aiofiles.os.makedirs(directory, exist_ok=True)
            async with aiofiles.open(tmp, "wb") as f:
                await f.write(data)
                await f.flush()
                self._injected_fault()
                await asyncio.to_thread(os.fsync, f.fileno())
            # The same bytes give the same name, so replacing an earlier copy changes nothing.
            await aiofiles.os.replace(tmp, final)
            await asyncio.to_thread(_fsync_dir, directory)
        except OSError as exc:
            with contextlib.suppress(OSError):
                await aiofiles.os.remove(tmp)
            raise _storage_error(exc) from exc

    async def has_part(self, upload_id: str, index: int, digest: str) -> bool:
        return await aiofiles.os.path.isfile(self._part(upload_id, index, digest))

    async def drop_part(self, upload_id: str, index: int, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await aiofiles.os.remove(self._part(upload_id, index, digest))

    async def assemble(self, upload_id: str, parts: list[tuple[int, str]]) -> Path:
        target = self._dir(upload_id) / "assembled"
        tmp = target.with_name(f".assembling-{secrets.token_hex(8)}")
        try:
            async with aiofiles.open(tmp, "wb") as out:
                for index, digest in parts:
                    async with aiofiles.open(self._part(upload_id, index, digest), "rb") as part:
                        while block := await part.read(_COPY_BLOCK):
                            await out.write(block)
                await out.flush()
                await asyncio.to_thread(os.fsync, out.fileno())
            await aiofiles.os.replace(tmp, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                await aiofiles.os.remove(tmp)
            raise _storage_error(exc) from exc
        return target

    async def stream_size(self, upload_id: str) -> int:
        try:
            return (await aiofiles.os.stat(self.stream_path(upload_id))).st_size
        except FileNotFoundError:
            return 0

    async def truncate(self, upload_id: str, size: int) -> None:
        path = self.stream_path(upload_id)
        await aiofiles.os.makedirs(path.parent, exist_ok=True)

        def _truncate() -> None:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.ftruncate(fd, size)
                os.fsync(fd)
            finally:
                os.close(fd)

        await asyncio.to_thread(_truncate)

    async def append(
        self,
        upload_id: str,
        offset: int,
        body: AsyncIterator[bytes],
        limit: int,
        checkpoint: Callable[[int], Awaitable[None]],
        checkpoint_bytes: int,
    ) -> tuple[int, BaseException | None]:
        """Append `body` at `offset`, at most `limit` bytes; fsync and call `checkpoint(offset)`
        every `checkpoint_bytes` so a dropped connection keeps what reached the disk.

        Returns the durable offset and what interrupted the body, if anything (a disconnect, a
        stop request, going over `limit`): the bytes before it are kept and fsynced, and the
        caller records them before re-raising. A storage error truncates back to the last
        durable offset and raises StorageFull."""
        path = self.stream_path(upload_id)
        await aiofiles.os.makedirs(path.parent, exist_ok=True)
        durable = written = offset
        interrupted: BaseException | None = None
        mode = "r+b" if await aiofiles.os.path.exists(path) else "w+b"
        async with aiofiles.open(path, mode) as f:
            try:
                await f.seek(offset)
                blocks = body.__aiter__()
                while True:
                    try:
                        block = await blocks.__anext__()
                    except StopAsyncIteration:
                        break
                    except BaseException as exc:  # noqa: BLE001 - handed back to the caller
                        interrupted = exc
                        break
                    if written + len(block) - offset > limit:
                        interrupted = OverflowError("body longer than allowed")
                        break
                    await f.write(block)
                    self._injected_fault()
                    written += len(block)
                    if written - durable >= checkpoint_bytes:
                        await self._sync(f)
                        durable = written
                        await checkpoint(durable)
                # Shielded: a cancelled request must still leave a consistent, durable file.
                await asyncio.shield(self._sync(f))
            except OSError as exc:
                await self._rollback(f, durable)
                raise _storage_error(exc) from exc
        return written, interrupted

    @staticmethod
    async def _sync(f) -> None:  # type: ignore[no-untyped-def]
        await f.flush()
        await asyncio.to_thread(os.fsync, f.fileno())

    @staticmethod
    async def _rollback(f, durable: int) -> None:  # type: ignore[no-untyped-def]
        with contextlib.suppress(OSError):
            await f.truncate(durable)
            await asyncio.to_thread(os.fsync, f.fileno())

    async def concatenate(self, upload_id: str, sources: list[str]) -> int:
        """Write the stream data of `sources`, in order, as this upload's data (tus concatenation)."""
        path = self.stream_path(upload_id)
        await aiofiles.os.makedirs(path.parent, exist_ok=True)
        tmp = path.with_name(f".concat-{secrets.token_hex(8)}")
        total = 0
        try:
            async with aiofiles.open(tmp, "wb") as out:
                for source in sources:
                    async with aiofiles.open(self.stream_path(source), "rb") as part:
                        while block := await part.read(_COPY_BLOCK):
                            await out.write(block)
                            total += len(block)
                await out.flush()
                await asyncio.to_thread(os.fsync, out.fileno())
            await aiofiles.os.replace(tmp, path)
            await asyncio.to_thread(_fsync_dir, path.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                await aiofiles.os.remove(tmp)
            raise _storage_error(exc) from exc
        return total

    async def discard(self, upload_id: str) -> None:
        await asyncio.to_thread(shutil.rmtree, self._dir(upload_id), True)

    async def upload_ids(self) -> list[str]:
        try:
            return sorted(await aiofiles.os.listdir(self.root))
        except FileNotFoundError:
            return []
