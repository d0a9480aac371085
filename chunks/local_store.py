"""Upload bytes on a local (or shared, POSIX) filesystem, written with aiofiles.

Layout under the root, one directory per upload:
    uploads/<id>/parts-<token>-<pid>     a process's log of numbered chunks, appended and synced
                                          (chunks/part_log.py); Redis records where each one is
    uploads/<id>/part-<index>-<sha256>   a numbered chunk recorded before logs (read, never written)
    uploads/<id>/data                     the appended stream of a STREAM upload
    uploads/<id>/assembled                the parts joined for the image pipeline (until `discard`)

Two bodies for one index never overwrite each other: each lands at a place of its own, and the
chunk's record in Redis says which one was acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import re
import secrets
import shutil
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import BinaryIO

import aiofiles
import aiofiles.os

from .errors import ChecksumMismatch, StorageFull
from .part_log import PartLog, copy_range, fsync_dir, parse_place, punch_hole
from .part_log import sync as sync_part
from .storage import PartRef, StoreFeature
from .streams import BoundedBody, Checksum, VerifiedBody

# errno values that mean "the bytes were not stored": the write is rolled back and the client
# told to retry later, rather than acknowledging bytes a full or failing disk did not keep.
_NOT_STORED = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG}
_COPY_BLOCK = 1024 * 1024
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]+")
# Blocks up to this size are written from the event loop (page cache: microseconds); larger
# ones, which a socket read does not deliver but another caller might, in a worker thread.
_INLINE_WRITE = 256 * 1024
# A checksummed body has no checkpoints: nothing counts before its digest is known.
_NO_CHECKPOINTS = 1 << 62


def _append(source: BinaryIO, target: BinaryIO) -> None:
    """Copy `source` to the end of `target`, in the kernel where it can (copy_file_range: no
    bytes through this process, which for an 8 MiB upload of 1 MiB parts was a copy as large
    as the upload on the completing request); else through a buffer."""
    if hasattr(os, "copy_file_range"):
        try:
            while os.copy_file_range(source.fileno(), target.fileno(), _COPY_BLOCK):
                pass
            return
        except OSError as exc:
            # Not supported between these files (another filesystem, an old kernel): copy
            # from where the kernel stopped.
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
    shutil.copyfileobj(source, target, _COPY_BLOCK)


def _storage_error(exc: OSError) -> Exception:
    if exc.errno in _NOT_STORED:
        return StorageFull("the server has no room to store this upload right now")
    return exc


def _remove_upload(stream: Path) -> None:
    """An upload's directory gone. Most hold their stream file alone: two calls, where rmtree's
    walk costs twice the CPU; anything else (numbered parts, leftovers) takes the walk."""
    try:
        os.unlink(stream)
        os.rmdir(stream.parent)
    except OSError:
        shutil.rmtree(stream.parent, True)


async def _no_checkpoint(_: int) -> None:
    return None


class LocalChunkStore:
    features = frozenset({StoreFeature.CHECKSUM, StoreFeature.CONCATENATION})

    def __init__(
        self, root: str | os.PathLike[str], *, fault_enospc_flag: str | os.PathLike[str] | None = None
    ) -> None:
        self.root = Path(root).resolve() / "uploads"
        self.root.mkdir(parents=True, exist_ok=True)
        # Test-only (storage.fault_enospc_flag): while this file exists, writes fail with ENOSPC
        # after their bytes went out, as a full disk reports it at write or fsync time.
        self._fault_flag = Path(fault_enospc_flag) if fault_enospc_flag else None
        # Every PATCH names its stream file twice (reconcile, append): remembered for the uploads
        # in flight rather than checked and joined by pathlib each time.
        self._stream = functools.lru_cache(maxsize=1024)(self._stream_path)
        self._parts = PartLog()

    def _injected_fault(self) -> None:
        if self._fault_flag is not None and self._fault_flag.exists():
            raise OSError(errno.ENOSPC, "No space left on device (injected)")

    def _dir(self, upload_id: str) -> Path:
        # Ids are made by the core (urlsafe base64); refuse anything else rather than trust it in a path.
        if not _SAFE_ID.fullmatch(upload_id):
            raise ValueError("malformed upload id")
        return self.root / upload_id

    def _part(self, upload_id: str, index: int, digest: str) -> Path:
        """Where a part recorded without a place (before parts went into logs) is."""
        return self._dir(upload_id) / f"part-{index:06d}-{digest}"

    def _stream_path(self, upload_id: str) -> Path:
        return self._dir(upload_id) / "data"

    # -- numbered parts ------------------------------------------------------------------------

    async def put_part(self, upload_id: str, index: int, data: bytes, digest: Awaitable[str]) -> str:
        # Appended to this process's log of the upload (chunks/part_log.py) while the digest is
        # still being made: the place, not the digest, finds it again. A small part is written
        # from the event loop, as a PATCH's blocks are, and synced in a worker thread; a large
        # one, or one whose log is new or busy, goes to the worker thread whole.
        directory = self._dir(upload_id)
        try:
            if len(data) <= _INLINE_WRITE and (written := self._parts.write(directory, data, self._injected_fault)):
                fd, place = written
                await asyncio.to_thread(sync_part, fd)  # closes it, even if this request is cancelled
                return place
            return await asyncio.to_thread(self._parts.append, directory, data, self._injected_fault)
        except OSError as exc:
            raise _storage_error(exc) from exc

    async def drop_part(self, upload_id: str, part: PartRef) -> None:
        if not part.place:  # a part file of before the logs
            with contextlib.suppress(FileNotFoundError):
                await aiofiles.os.remove(self._part(upload_id, part.index, part.digest))
            return
        # Its blocks given back in the middle of the log (racing twins of one chunk would
        # otherwise each keep a copy on disk until the upload's directory goes).
        log, offset = parse_place(part.place)
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(punch_hole, self._dir(upload_id) / log, offset, part.size)

    async def _assemble(self, upload_id: str, parts: list[PartRef]) -> Path:
        # One worker-thread hop (aiofiles took four per part and one per MiB).
        return await asyncio.to_thread(self._assemble_parts, upload_id, parts)

    def _assemble_parts(self, upload_id: str, parts: list[PartRef]) -> Path:
        """The parts joined into one file for the image pipeline to read. Not synced: it is a
        scratch copy, made again from the durable parts by whichever completer runs next."""
        target = self._dir(upload_id) / "assembled"
        tmp = target.with_name(f".assembling-{secrets.token_hex(8)}")
        logs: dict[str, int] = {}
        try:
            # Unbuffered: the kernel's file offsets are the only ones.
            with open(tmp, "wb", buffering=0) as out:
                for part in parts:
                    if not part.place:  # recorded before parts went into logs: a file of its own
                        with open(self._part(upload_id, part.index, part.digest), "rb", buffering=0) as old:
                            _append(old, out)
                        continue
                    log, offset = parse_place(part.place)
                    if log not in logs:
                        logs[log] = os.open(target.with_name(log), os.O_RDONLY)
                    copy_range(logs[log], out.fileno(), offset, part.size)
            os.replace(tmp, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise _storage_error(exc) from exc
        finally:
            for fd in logs.values():
                os.close(fd)
        return target

    @contextlib.asynccontextmanager
    async def local_copy(self, upload_id: str, parts: list[PartRef] | None) -> AsyncIterator[Path]:
        if parts is None:
            stream = self._stream(upload_id)
            if not os.path.isfile(stream):  # noqa: ASYNC240 - one stat: cheaper here than a thread hop
                raise FileNotFoundError("the upload's stream is not stored")
            yield stream  # already a local file: no copy
            return
        places = [(*parse_place(part.place), part.size) for part in parts] if all(p.place for p in parts) else []
        # A client that sent its chunks in order to one process left them in one log, in order:
        # that log is the upload (chunks/part_log.py), read as it is while no part is added to it.
        with self._parts.sealed(self._dir(upload_id), places) if places else contextlib.nullcontext() as whole:
            if whole is not None:
                yield whole
                return
        # Left in the upload's directory, which `discard` removes with the parts (unlinking a
        # large file takes milliseconds: the completing request need not wait for it twice).
        # A later attempt writes it anew.
        yield await self._assemble(upload_id, parts)

    # -- streams -------------------------------------------------------------------------------

    async def create_stream(self, upload_id: str) -> None:
        # In the event loop: a mkdir and an empty file cost less than a worker-thread hop. Not
        # synced: a stream file lost in a crash reads as no bytes, which is what it held.
        path = self._stream(upload_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))

    async def reconcile(self, upload_id: str, recorded_offset: int) -> int:
        # The stat in the event loop (cheaper than a hop); a torn tail, which is rare, is cut
        # and synced in a worker thread.
        path = self._stream(upload_id)
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            return 0
        if size <= recorded_offset:
            return size

        def cut() -> int:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.ftruncate(fd, recorded_offset)
                os.fsync(fd)
                return recorded_offset
            finally:
                os.close(fd)

        return await asyncio.to_thread(cut)

    async def append(
        self,
        upload_id: str,
        offset: int,
        body: AsyncIterator[bytes],
        *,
        limit: int,
        checksum: Checksum | None,
        checkpoint: Callable[[int], Awaitable[None]],
        checkpoint_bytes: int,
        on_sync: Callable[[int], None] | None = None,
    ) -> tuple[int, BaseException | None]:
        if checksum is None:
            return await self._write(upload_id, offset, body, limit, checkpoint, checkpoint_bytes, on_sync)
        verified = VerifiedBody(body, checksum)
        written, interrupted = await self._write(
            upload_id, offset, verified.blocks(), limit, _no_checkpoint, _NO_CHECKPOINTS, on_sync
        )
        if interrupted is None and verified.matches():
            return written, None
        # Unverifiable or wrong bytes are not stored bytes: cut back before anyone sees them.
        await self.reconcile(upload_id, offset)
        if interrupted is None:
            raise ChecksumMismatch(f"the body does not match its {checksum.algorithm} checksum")
        return offset, interrupted

    async def _write(
        self,
        upload_id: str,
        offset: int,
        body: AsyncIterator[bytes],
        limit: int,
        checkpoint: Callable[[int], Awaitable[None]],
        checkpoint_bytes: int,
        on_sync: Callable[[int], None] | None,
    ) -> tuple[int, BaseException | None]:
        """Write `body` at `offset`; fdatasync and call `checkpoint` once `checkpoint_bytes` are
        written and more bytes arrive (a body that ends there is synced once, at its end).

        Each block is written as it arrives (a stuck body's bytes are in the file, for the request
        that takes over from it), in the event loop when it is small: a pwrite of the 64 KiB a
        socket read delivers lands in the page cache in microseconds, less than a worker-thread
        hop costs. What waits for the disk, fdatasync, runs in a worker thread with `on_sync`
        (hashing) once per checkpoint, and once at the end with the close: a 64 KiB PATCH makes
        one thread hop. An interruption is handed back, not raised, once the bytes before it
        are durable; a storage error truncates back to the last durable offset and raises
        StorageFull."""
        target = _StreamFile(self._stream(upload_id), self._injected_fault)
        durable = written = offset
        bounded = BoundedBody(body, limit)
        try:
            async for block in bounded.blocks():
                if written - durable >= checkpoint_bytes:
                    # More bytes came after a checkpoint's worth: make those durable and count them.
                    await asyncio.to_thread(target.sync, written, on_sync, False)
                    durable = written
                    await checkpoint(durable)
                if len(block) <= _INLINE_WRITE:
                    target.write(block, written)
                else:
                    await asyncio.to_thread(target.write, block, written)
                written += len(block)
            # Shielded: a cancelled request must still leave a consistent, durable file.
            await asyncio.shield(asyncio.to_thread(target.sync, written, on_sync, True))
        except OSError as exc:
            await asyncio.to_thread(target.rollback, durable)
            raise _storage_error(exc) from exc
        finally:
            if target.is_open:
                await asyncio.shield(asyncio.to_thread(target.close))
        return written, bounded.interrupted

    async def concatenate(self, upload_id: str, sources: list[str]) -> int:
        path = self._stream(upload_id)
        await aiofiles.os.makedirs(path.parent, exist_ok=True)
        tmp = path.with_name(f".concat-{secrets.token_hex(8)}")
        total = 0
        try:
            async with aiofiles.open(tmp, "wb") as out:
                for source in sources:
                    async with aiofiles.open(self._stream(source), "rb") as part:
                        while block := await part.read(_COPY_BLOCK):
                            await out.write(block)
                            total += len(block)
                await out.flush()
                await asyncio.to_thread(os.fsync, out.fileno())
            await aiofiles.os.replace(tmp, path)
            await asyncio.to_thread(fsync_dir, path.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                await aiofiles.os.remove(tmp)
            raise _storage_error(exc) from exc
        return total

    async def discard(self, upload_id: str) -> None:
        await asyncio.to_thread(_remove_upload, self._stream(upload_id))


class _StreamFile:
    """An upload's stream file during one append, opened on first write.

    Small writes run in the event loop, syncs and large writes in worker threads, one at a time;
    the lock keeps `close` (run even when the request was cancelled) from closing the
    descriptor under a sync still in flight."""

    def __init__(self, path: Path, fault: Callable[[], None]) -> None:
        self.path, self._fault = path, fault
        self._fd: int | None = None
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def _open(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_WRONLY)
            except FileNotFoundError:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
        return self._fd

    def write(self, data: bytes | bytearray, position: int) -> None:
        with self._lock:
            fd = self._open()
            view = memoryview(data)
            while view:
                done = os.pwrite(fd, view, position)
                view, position = view[done:], position + done
            self._fault()

    def sync(self, position: int, on_sync: Callable[[int], None] | None, close: bool) -> None:
        """Make the bytes up to `position` durable (after `on_sync(position)`); then close if asked."""
        with self._lock:
            if on_sync is not None:
                on_sync(position)
            if self._fd is not None:
                self._fault()
                # fdatasync also writes the file's new size: what a later read needs.
                os.fdatasync(self._fd)
            if close:
                self._close()

    def rollback(self, durable: int) -> None:
        with self._lock, contextlib.suppress(OSError):
            fd = self._open()
            os.ftruncate(fd, durable)
            os.fsync(fd)

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
