"""Numbered parts on a local filesystem: appended to a log of their upload, one log per process.

A part (a chunk of the JSON chunk API) used to be a file of its own: written under a temp name,
fdatasynced, renamed, its directory fsynced. That is eleven system calls, each letting go of the
GIL and taking it back while the event loop runs, and a new inode per chunk; under load it made a
64 KiB chunk cost the server about twice what a tus PATCH of the same bytes does
(docs/performance.md). Now a process appends the part to its own log in the upload's directory
and fdatasyncs it, like the PATCH's write: a small part is written from the event loop and only
the sync and close go to a worker thread (`write`, `sync`), anything else goes there whole
(`append`).

Where the part landed, its place (`<log>@<offset>`), is recorded with the chunk in Redis
(chunks/chunk_records.py) only after the sync returned, so:
- A recorded place holds synced bytes; a write torn by a crash lies where no record points.
- Nothing is overwritten: two bodies for one index (a racing twin, a conflicting one) land at
  two places, and the record says which one counts. A place that is not recorded has its blocks
  given back (`punch_hole`); the log itself goes with the upload's directory (completion,
  abandon, expiry).
- Each process appends only to its own log (`parts-<token>-<pid>`), so processes and hosts that
  share the filesystem never append to one file: O_APPEND is not atomic across NFS clients.
  Within a process one lock per log (striped) orders the appends, so a write that failed is cut
  back off the log's end before the next one lands after it: a full disk keeps no half part.
- A log's name is made durable when the log is created (its directory fsynced, and the uploads
  directory when the upload's own is new), before any part in it is acknowledged.
- A log that holds exactly its upload's parts, in order from its start, is the whole upload byte
  for byte: the completer reads it as it is, instead of copying the parts into a file of their
  own (`sealed`). While it is read the log takes no more appends: a late twin of a recorded chunk
  goes to another log of this process, so the file stays exactly the upload.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import secrets
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

_PLACE = re.compile(r"(parts-[0-9a-f]+-[0-9]+)@([0-9]+)")
_COPY_BLOCK = 1024 * 1024
_STRIPES = 64


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def parse_place(place: str) -> tuple[str, int]:
    """The log's name and the offset in it; ValueError for anything `PartLog.append` did not write."""
    match = _PLACE.fullmatch(place)
    if match is None:
        raise ValueError(f"not a place in a part log: {place!r}")
    return match[1], int(match[2])


class PartLog:
    """The appending side: this process's log name, and the locks that order its appends."""

    def __init__(self) -> None:
        # The pid is read at each append: a store made before a fork gives each child its own log.
        self._token = secrets.token_hex(6)
        # Where parts of an upload whose log is `sealed` go meanwhile.
        self._other_token = secrets.token_hex(6)
        self._sealed: set[Path] = set()
        self._locks = [threading.Lock() for _ in range(_STRIPES)]

    def append(self, directory: Path, data: bytes, fault: Callable[[], None]) -> str:
        """Append `data` to this process's log in `directory` and sync it; its place. Runs in a
        worker thread. An OSError leaves the log as it was before, but for a failed sync's bytes."""
        while True:
            name = self._name(directory)
            path = directory / name
            try:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            except FileNotFoundError:
                fd = _create(directory, path)
            try:
                with self._lock(path):
                    start = _write(fd, data, fault) if name == self._name(directory) else None
            except BaseException:
                os.close(fd)
                raise
            if start is not None:
                break
            os.close(fd)  # the log was sealed since its name was taken: append to the other one
        sync(fd)
        return f"{name}@{start}"

    def write(self, directory: Path, data: bytes, fault: Callable[[], None]) -> tuple[int, str] | None:
        """The write half of `append`, in the caller's thread: for a small part in the event loop,
        where a write into the page cache costs less than handing it to a worker thread, and
        each system call a worker makes takes the GIL back from the loop. The open descriptor
        and the place, for `sync` (in a worker thread) to finish; None when the log does not
        exist yet, is sealed or another thread is appending to it: then `append` does the whole."""
        name = self._name(directory)
        path = directory / name
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        except FileNotFoundError:
            return None  # made by `append`, with its directory's fsync: not in the event loop
        lock = self._lock(path)
        if not lock.acquire(blocking=False):  # never wait in the event loop for a worker's write
            os.close(fd)
            return None
        try:
            start = _write(fd, data, fault) if name == self._name(directory) else None
        except BaseException:
            os.close(fd)
            raise
        finally:
            lock.release()
        if start is None:  # sealed since its name was taken
            os.close(fd)
            return None
        return fd, f"{name}@{start}"

    @contextlib.contextmanager
    def sealed(self, directory: Path, places: list[tuple[str, int, int]]) -> Iterator[Path | None]:
        """This process's log in `directory`, when it holds these parts ((log, offset, size), in
        order) from its first byte to its last and nothing else: then it is the whole upload, and
        until the block ends it takes no more appends (they go to another log of this process).
        None when it is not so (a part in another log or a legacy file, a gap, more bytes after)
        or another thread is appending to it right now: then the parts must be copied."""
        name = self._name(directory)
        path, end = directory / name, 0
        for log, offset, size in places:
            if log != name or offset != end:
                yield None
                return
            end += size
        lock = self._lock(path)
        if not lock.acquire(blocking=False):  # in the event loop: never wait for a worker's write
            yield None
            return
        try:
            # Under the lock no append is half done: the length is every byte the log will have.
            exact = os.stat(path).st_size == end
            if exact:
                self._sealed.add(directory)
        except OSError:
            exact = False  # the copy will say what is wrong
        finally:
            lock.release()
        if not exact:
            yield None
            return
        try:
            yield path
        finally:
            self._sealed.discard(directory)

    def _name(self, directory: Path) -> str:
        token = self._other_token if directory in self._sealed else self._token
        return f"parts-{token}-{os.getpid()}"

    def _lock(self, path: Path) -> threading.Lock:
        return self._locks[hash(path) % _STRIPES]


def _write(fd: int, data: bytes, fault: Callable[[], None]) -> int:
    """`data` appended to the log open at `fd`, under its lock; where it starts. A failed write is
    cut off again (nobody appended after it: the lock is held)."""
    start = os.lseek(fd, 0, os.SEEK_END)
    try:
        # A regular file takes a write whole unless the disk is full or failing.
        if os.write(fd, data) != len(data):
            raise OSError(errno.ENOSPC, "No space left on device (short write)")
        fault()
    except OSError:
        os.ftruncate(fd, start)
        raise
    return start


def sync(fd: int) -> None:
    """Make what was written at `fd` durable, then close it."""
    try:
        os.fdatasync(fd)  # the log's new length with the bytes: what a later read needs
    finally:
        os.close(fd)


def _create(directory: Path, path: Path) -> int:
    """`path` created (and its directory, for the upload's first part) with its name synced."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except FileNotFoundError:
        directory.mkdir(parents=True, exist_ok=True)
        fsync_dir(directory.parent)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fsync_dir(directory)
    except OSError:
        os.close(fd)
        raise
    return fd


_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 0x01, 0x02


def punch_hole(path: Path, offset: int, size: int) -> None:
    """Give the blocks of `size` bytes at `offset` back to the filesystem; the log keeps its length
    and the range reads as zeros. Where the platform or filesystem cannot (fallocate's PUNCH_HOLE
    is Linux's, and Python does not offer it), the bytes stay until the upload's directory goes."""
    if not sys.platform.startswith("linux") or size <= 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_WRONLY)
    try:
        mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
        if libc.fallocate(fd, mode, ctypes.c_int64(offset), ctypes.c_int64(size)) != 0:
            error = ctypes.get_errno()
            if error not in (errno.EOPNOTSUPP, errno.ENOSYS):
                raise OSError(error, os.strerror(error))
    finally:
        os.close(fd)


def copy_range(source: int, target: int, offset: int, size: int) -> None:
    """`size` bytes of `source` from `offset` written at `target`'s position, in the kernel where
    it can (copy_file_range), else through a buffer. FileNotFoundError if `source` ends first."""
    end = offset + size
    kernel = hasattr(os, "copy_file_range")
    while offset < end:
        done = 0
        if kernel:
            try:
                done = os.copy_file_range(source, target, end - offset, offset)
            except OSError as exc:
                # Not supported between these files (another filesystem, an old kernel).
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                kernel = False
                continue
        else:
            block = memoryview(os.pread(source, min(_COPY_BLOCK, end - offset), offset))
            done = len(block)
            while block:
                block = block[os.write(target, block) :]
        if done == 0:
            raise FileNotFoundError("a recorded part is not stored whole")
        offset += done
