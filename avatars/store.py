"""Where finished avatars live: versioned files behind one atomically replaced pointer."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import quote

from avatars._fallback import deferred_entries
from avatars._local_files import fsync_dir, make_kept, write_all, write_durably
from avatars.negotiation import prefers_webp
from avatars.processing import ProcessedAvatar

_EXTENSIONS = {"image/webp": "webp", "image/jpeg": "jpg", "image/png": "png"}
_POINTER = "current.json"
_LOCK = ".lock"
_VERSION_PREFIX = "v-"
_POINTER_FORMAT = 1


@dataclass(frozen=True)
class AvatarVersion:
    user_id: str
    version: str  # content-addressed id (from ProcessedAvatar.digest)
    width: int  # of the largest rendition
    height: int
    sizes: tuple[int, ...]
    media_types: tuple[str, ...]  # e.g. ("image/webp", "image/jpeg")
    source_format: str
    updated_at: float  # unix seconds
    animated: bool = False

    def describe(self, base_url: str = "") -> dict:
        """The JSON description clients see; URLs carry the version so they cache forever."""
        prefix = f"{base_url.rstrip('/')}/avatars/{quote(self.user_id, safe='')}/{self.version}"
        fallback = next((m for m in self.media_types if m != "image/webp"), None)
        described = {
            "version": self.version,
            "sizes": list(self.sizes),
            "urls": {str(size): f"{prefix}/{size}.webp" for size in self.sizes},
            "width": self.width,
            "height": self.height,
            "content_type": "image/webp",
            "media_types": list(self.media_types),
            "source_format": self.source_format,
            "animated": self.animated,
            "updated_at": datetime.fromtimestamp(self.updated_at, UTC).isoformat(),
        }
        if fallback:
            ext = _EXTENSIONS[fallback]
            described["fallback_urls"] = {str(size): f"{prefix}/{size}.{ext}" for size in self.sizes}
            described["fallback_content_type"] = fallback
        return described


class RenditionBody(Protocol):
    """An opened rendition's bytes, read in blocks, then closed."""

    async def read(self, size: int) -> bytes: ...

    def close(self) -> None: ...


Opener = Callable[[], Awaitable["tuple[RenditionBody, int] | None"]]


@dataclass(frozen=True)
class RenditionFile:
    """One rendition to serve: from a local `path`, from an `opener` (an object store streams the
    object), or by redirect to `url` (a CDN or public bucket in front of an object store); the
    others are None / empty."""

    path: Path | None
    media_type: str
    size: int  # square side in px
    etag: str  # strong, quoted, derived from the file's sha256
    version: str = ""
    content_length: int = 0
    animated: bool = False
    url: str = ""
    opener: Opener | None = field(default=None, compare=False, repr=False)

    async def open(self) -> tuple[RenditionBody, int] | None:
        """The bytes opened, with their length; None when a swap removed them first (the pointer,
        read again, names the new version). Reads come from what was opened, so a removal after
        the open cannot cut the answer short."""
        if self.opener is not None:
            return await self.opener()
        if self.path is None:
            return None
        return await asyncio.to_thread(_open_file, self.path)

    @classmethod
    def of(
        cls,
        pointer: dict,
        entry: dict,
        content_length: int,
        *,
        path: Path | None = None,
        url: str = "",
        opener: Opener | None = None,
    ) -> RenditionFile:
        """The rendition a pointer's file `entry` names, served from `path`, `url` or `opener`."""
        return cls(
            path=path,
            media_type=entry["media_type"],
            size=entry["size"],
            etag=f'"{entry["sha256"]}"',
            version=pointer["version"],
            content_length=content_length,
            animated=entry["animated"],
            url=url,
            opener=opener,
        )


class _FileBody:
    def __init__(self, file: BinaryIO) -> None:
        self.file = file

    async def read(self, size: int) -> bytes:
        return await asyncio.to_thread(self.file.read, size)

    def close(self) -> None:
        self.file.close()


def _open_file(path: Path) -> tuple[RenditionBody, int] | None:
    try:
        file = open(path, "rb")  # noqa: SIM115 - closed by whoever reads the body
    except FileNotFoundError:
        return None
    return _FileBody(file), os.fstat(file.fileno()).st_size


class AvatarStore(Protocol):
    async def swap_in(self, user_id: str, processed: ProcessedAvatar) -> AvatarVersion: ...

    async def current(self, user_id: str) -> AvatarVersion | None: ...

    async def rendition(
        self, user_id: str, size: int | None, accept: str | None, version: str | None = None
    ) -> RenditionFile | None: ...

    async def remove(self, user_id: str) -> bool: ...


class LocalAvatarStore:
    """Avatars on a local (or shared POSIX) filesystem.

    Layout: root/avatars/<h[:2]>/<h>/ with h = sha256(user id), holding
    `current.json` (the pointer), `.lock` and one `v-<version>-<nonce>/` directory.
    """

    def __init__(self, root: Path):
        self.root = Path(root)

    async def swap_in(self, user_id: str, processed: ProcessedAvatar) -> AvatarVersion:
        return await asyncio.to_thread(self._swap_in, user_id, processed)

    async def current(self, user_id: str) -> AvatarVersion | None:
        pointer = await asyncio.to_thread(self._read_pointer, user_id)
        return None if pointer is None else _version_of(pointer)

    async def rendition(
        self,
        user_id: str,
        size: int | None,
        accept: str | None,
        version: str | None = None,
        *,
        animated: bool = False,
    ) -> RenditionFile | None:
        return await asyncio.to_thread(self._rendition, user_id, size, accept, version, animated)

    async def remove(self, user_id: str) -> bool:
        return await asyncio.to_thread(self._remove, user_id)

    # -- blocking parts, always run in a thread -------------------------------

    def _user_dir(self, user_id: str) -> Path:
        # User ids are arbitrary strings ("../x", "a/b", emoji): only their hash
        # ever becomes a path.
        digest = hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()
        return self.root / "avatars" / digest[:2] / digest

    @contextmanager
    def _locked(self, user_dir: Path, mode: int = fcntl.LOCK_EX) -> Iterator[None]:
        # Swaps and removals for one user are serialised with flock on a per-user
        # lock file. flock locks belong to the open file description, so this
        # excludes other threads of this process as well as other processes
        # sharing the root; without it two concurrent swaps could each delete
        # only their predecessor and leak a version directory.
        user_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(user_dir / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _swap_in(self, user_id: str, processed: ProcessedAvatar) -> AvatarVersion:
        user_dir = self._user_dir(user_id)
        with self._locked(user_dir):
            directory = f"{_VERSION_PREFIX}{processed.digest}-{secrets.token_hex(4)}"
            try:
                files = _write_version(user_dir / directory, processed)
            except BaseException:
                shutil.rmtree(user_dir / directory, ignore_errors=True)
                raise
            pointer = _pointer_record(user_id, processed, directory, files)
            _replace_pointer(user_dir, pointer)
            # Only now is the previous version unreachable; remove it, and any
            # directory a crash between write and swap left behind.
            _remove_versions(user_dir, keep=directory)
        return _version_of(pointer)

    def _read_pointer(self, user_id: str) -> dict | None:
        try:
            with open(self._user_dir(user_id) / _POINTER, "rb") as fp:
                return json.load(fp)
        except FileNotFoundError:
            return None

    def _rendition(
        self, user_id: str, size: int | None, accept: str | None, version: str | None, animated: bool
    ) -> RenditionFile | None:
        # A swap may delete the directory between reading the pointer and
        # checking the file; the pointer read again then names the new one.
        for _ in range(3):
            if (found := self._lookup(user_id, size, accept, version, animated)) is None:
                return None
            pointer, entry, path = found
            try:
                return RenditionFile.of(pointer, entry, path.stat().st_size, path=path)
            except FileNotFoundError:
                if "deferred" in entry:
                    return self._make_first(user_id, size, accept, version, animated)
        return None

    def _make_first(
        self, user_id: str, size: int | None, accept: str | None, version: str | None, animated: bool
    ) -> RenditionFile | None:
        """A rendition not made yet (avatars/_fallback.py), made and kept under the user's lock held
        shared: concurrent makers do not wait for one another, but no swap can remove the version
        while it is made (without it, a reader racing repeated swaps could lose every time and
        answer "no avatar" for one that exists)."""
        with self._locked(self._user_dir(user_id), fcntl.LOCK_SH):
            if (found := self._lookup(user_id, size, accept, version, animated)) is None:
                return None
            pointer, entry, path = found
            try:
                length = path.stat().st_size
            except FileNotFoundError:
                length = make_kept(path, entry)
            return RenditionFile.of(pointer, entry, length, path=path)

    def _lookup(
        self, user_id: str, size: int | None, accept: str | None, version: str | None, animated: bool
    ) -> tuple[dict, dict, Path] | None:
        """The pointer, the file entry it names for this request and that file's path."""
        pointer = self._read_pointer(user_id)
        if pointer is None or (version is not None and version != pointer["version"]):
            return None
        entry = _choose_file(pointer, size, accept, animated)
        if entry is None:
            return None
        return pointer, entry, self._user_dir(user_id) / pointer["directory"] / entry["name"]

    def _remove(self, user_id: str) -> bool:
        user_dir = self._user_dir(user_id)
        if not user_dir.exists():
            return False
        with self._locked(user_dir):
            pointer = user_dir / _POINTER
            existed = pointer.exists()
            if existed:
                pointer.unlink()
                fsync_dir(user_dir)
            _remove_versions(user_dir, keep=None)
        return existed


def nearest_size(sizes: list[int], wanted: int | None) -> int:
    """The configured size closest to `wanted` (ties go to the larger); None = largest."""
    if wanted is None:
        return max(sizes)
    return min(sizes, key=lambda s: (abs(s - wanted), -s))


def _choose_file(pointer: dict, size: int | None, accept: str | None, animated: bool) -> dict | None:
    chosen = nearest_size(pointer["sizes"], size)
    candidates = [f for f in pointer["files"] if f["size"] == chosen]
    if animated and any(f["animated"] for f in candidates) and prefers_webp(accept, "image/webp"):
        return next(f for f in candidates if f["animated"])
    still = [f for f in candidates if not f["animated"]]
    fallback = next((f for f in still if f["media_type"] != "image/webp"), None)
    webp = next((f for f in still if f["media_type"] == "image/webp"), None)
    if webp is None or (fallback is not None and not prefers_webp(accept, fallback["media_type"])):
        return fallback
    return webp


def _pointer_record(user_id: str, processed: ProcessedAvatar, directory: str, files: list[dict]) -> dict:
    """The pointer to a swapped-in version, as every store writes it (`current.json`)."""
    largest = max(r.size for r in processed.renditions)
    files = files + deferred_entries(processed, files)
    return {
        "format": _POINTER_FORMAT,
        "user_id": user_id,
        "version": processed.digest,
        "directory": directory,
        "width": largest,
        "height": largest,
        "sizes": list(processed.sizes),
        "media_types": _media_types(files),
        "source_format": processed.source_format,
        "animated": any(r.animated for r in processed.renditions),
        "updated_at": time.time(),
        "files": files,
    }


def _media_types(files: list[dict]) -> list[str]:
    found = {f["media_type"] for f in files}
    return sorted(found, key=lambda m: (m != "image/webp", m))


def _version_of(pointer: dict) -> AvatarVersion:
    return AvatarVersion(
        user_id=pointer["user_id"],
        version=pointer["version"],
        width=pointer["width"],
        height=pointer["height"],
        sizes=tuple(pointer["sizes"]),
        media_types=tuple(pointer["media_types"]),
        source_format=pointer["source_format"],
        updated_at=pointer["updated_at"],
        animated=pointer.get("animated", False),
    )


def _write_version(directory: Path, processed: ProcessedAvatar) -> list[dict]:
    directory.mkdir()
    files, fds = [], []
    try:
        for r in processed.renditions:
            name = f"{r.size}{'.animated' if r.animated else ''}.{_EXTENSIONS[r.media_type]}"
            data = r.path.read_bytes()
            if hashlib.sha256(data).hexdigest() != r.sha256:
                raise ValueError("a rendition changed on disk after it was processed")
            fds.append(os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            write_all(fds[-1], data)
            files.append(
                {"size": r.size, "media_type": r.media_type, "animated": r.animated, "name": name, "sha256": r.sha256}
            )
        # Every file written first, then each synced: the first sync's journal commit carries all
        # the new files' metadata and the others wait only for their own data (on this machine's
        # ext4, 4 files: ~0.7 ms instead of ~1.0 ms written and fsynced one by one).
        for fd in fds:
            os.fdatasync(fd)
    finally:
        for fd in fds:
            os.close(fd)
    fsync_dir(directory)
    return files


def _replace_pointer(user_dir: Path, pointer: dict) -> None:
    tmp = user_dir / f".{_POINTER}.{secrets.token_hex(4)}.tmp"
    write_durably(tmp, json.dumps(pointer, sort_keys=True).encode())
    os.replace(tmp, user_dir / _POINTER)
    fsync_dir(user_dir)


def _remove_versions(user_dir: Path, keep: str | None) -> None:
    for entry in user_dir.iterdir():
        if entry.name.startswith(_VERSION_PREFIX) and entry.name != keep:
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.name.endswith(".tmp"):
            entry.unlink(missing_ok=True)
