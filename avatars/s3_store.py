"""Avatars in an S3-compatible bucket: renditions under a versioned key, one pointer object.

Keys under `<prefix>avatars/<h[:2]>/<h>/` (h = sha256 of the user id, as on disk):
    v-<version>-<nonce>/<size>.<ext>   the renditions of one version, written first
    current.json                       the pointer, written last: one PUT, atomic in S3, is the switch

Old versions are deleted after the switch: the one the swap replaced at once, and any other
(a crashed or concurrent swap's) once it is older than ORPHAN_SECONDS, so a swap still writing
its renditions in another process is never removed under it.

Serving: with `public_base_url` a rendition is a URL (`<public_base_url>/<key>`, a CDN or a
public bucket; the answer is a redirect). Otherwise the object is streamed: the pointer is read
on every request (a swap from any process is seen at once) and the rendition's object opened
after it. A per-process copy on local disk would save one GET of the bucket per full read
(about 2 ms against a local SeaweedFS, docs/deploy.md), but it costs disk that grows with the
number of users and a second place bytes can go stale; a CDN in front is the way to cut reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError

from avatars._fallback import make_deferred
from avatars.errors import AvatarStorageUnavailable
from avatars.processing import ProcessedAvatar
from avatars.store import (
    _EXTENSIONS,
    _POINTER,
    _VERSION_PREFIX,
    AvatarVersion,
    RenditionBody,
    RenditionFile,
    _choose_file,
    _pointer_record,
    _version_of,
)

ORPHAN_SECONDS = 600
_FAILURES = (BotoCoreError, ClientError, aiohttp.ClientError, TimeoutError)
_MISSING = {"NoSuchKey", "404", "NotFound"}


@contextlib.contextmanager
def _unavailable_on_failure() -> Iterator[None]:
    try:
        yield
    except _FAILURES as exc:
        raise AvatarStorageUnavailable("the object storage did not answer", code="storage-unavailable") from exc


def _missing(exc: BaseException) -> bool:
    cause = exc.__cause__ if isinstance(exc, AvatarStorageUnavailable) else exc
    return isinstance(cause, ClientError) and cause.response.get("Error", {}).get("Code") in _MISSING


class _ObjectBody:
    """An S3 object's body as a RenditionBody; a failure mid-read is the bucket's."""

    def __init__(self, body: Any) -> None:
        self.body = body

    async def read(self, size: int) -> bytes:
        with _unavailable_on_failure():
            return bytes(await self.body.read(size))

    def close(self) -> None:
        self.body.close()


class _BytesBody:
    """A fallback just made, served from memory (a few KB)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.offset = data, 0

    async def read(self, size: int) -> bytes:
        chunk = self.data[self.offset : self.offset + size]
        self.offset += len(chunk)
        return chunk

    def close(self) -> None:
        self.data = b""


class S3AvatarStore:
    def __init__(self, client: Any, bucket: str, *, prefix: str = "", public_base_url: str = "") -> None:
        """`client` is an open aiobotocore S3 client."""
        self.client, self.bucket, self.prefix = client, bucket, prefix
        self.public_base_url = public_base_url.rstrip("/")

    def _user_dir(self, user_id: str) -> str:
        digest = hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()
        return f"{self.prefix}avatars/{digest[:2]}/{digest}/"

    async def swap_in(self, user_id: str, processed: ProcessedAvatar) -> AvatarVersion:
        user_dir = self._user_dir(user_id)
        previous = await self._read_pointer(user_id)
        directory = f"{_VERSION_PREFIX}{processed.digest}-{secrets.token_hex(4)}"
        try:
            files = await self._write_version(user_dir + directory + "/", processed)
        except BaseException:
            await asyncio.shield(self._delete_under(user_dir + directory + "/"))
            raise
        pointer = _pointer_record(user_id, processed, directory, files)
        with _unavailable_on_failure():
            await self.client.put_object(
                Bucket=self.bucket,
                Key=user_dir + _POINTER,
                Body=json.dumps(pointer, sort_keys=True).encode(),
                ContentType="application/json",
            )
        # Only now is the previous version unreachable.
        replaced = previous["directory"] if previous is not None else None
        await self._remove_versions(user_dir, keep=directory, replaced=replaced)
        return _version_of(pointer)

    async def _write_version(self, prefix: str, processed: ProcessedAvatar) -> list[dict]:
        files = []
        for r in processed.renditions:
            name = f"{r.size}{'.animated' if r.animated else ''}.{_EXTENSIONS[r.media_type]}"
            data = await asyncio.to_thread(r.path.read_bytes)
            if hashlib.sha256(data).hexdigest() != r.sha256:
                raise ValueError("a rendition changed on disk after it was processed")
            with _unavailable_on_failure():
                await self.client.put_object(
                    Bucket=self.bucket,
                    Key=prefix + name,
                    Body=data,
                    ContentType=r.media_type,
                    # What a CDN or public bucket serves: the key names the version, so forever.
                    CacheControl="public, max-age=31536000, immutable",
                )
            files.append(
                {
                    "size": r.size,
                    "media_type": r.media_type,
                    "animated": r.animated,
                    "name": name,
                    "sha256": r.sha256,
                    "bytes": len(data),
                }
            )
        return files

    async def current(self, user_id: str) -> AvatarVersion | None:
        pointer = await self._read_pointer(user_id)
        return None if pointer is None else _version_of(pointer)

    async def _read_pointer(self, user_id: str) -> dict | None:
        data = await self._get_bytes(self._user_dir(user_id) + _POINTER)
        return None if data is None else json.loads(data)

    async def _get_bytes(self, key: str) -> bytes | None:
        """A small object's bytes, or None if there is no such object."""
        try:
            with _unavailable_on_failure():
                answer = await self.client.get_object(Bucket=self.bucket, Key=key)
                async with answer["Body"] as body:
                    return bytes(await body.read())
        except AvatarStorageUnavailable as exc:
            if _missing(exc):
                return None
            raise

    async def rendition(
        self,
        user_id: str,
        size: int | None,
        accept: str | None,
        version: str | None = None,
        *,
        animated: bool = False,
    ) -> RenditionFile | None:
        pointer = await self._read_pointer(user_id)
        if pointer is None or (version is not None and version != pointer["version"]):
            return None
        entry = _choose_file(pointer, size, accept, animated)
        if entry is None:
            return None
        prefix = f"{self._user_dir(user_id)}{pointer['directory']}/"
        key = prefix + entry["name"]
        opener = functools.partial(self._open_object, key)
        if "deferred" in entry:
            if self.public_base_url:
                await self._ensure_deferred(prefix, entry)
            else:
                opener = functools.partial(self._open_or_make, prefix, entry)
        return RenditionFile.of(
            pointer,
            entry,
            entry.get("bytes", 0),
            url=f"{self.public_base_url}/{key}" if self.public_base_url else "",
            opener=opener,
        )

    async def _open_object(self, key: str) -> tuple[RenditionBody, int] | None:
        """The object's body, streaming; None if a swap deleted it after the pointer was read."""
        try:
            with _unavailable_on_failure():
                answer = await self.client.get_object(Bucket=self.bucket, Key=key)
        except AvatarStorageUnavailable as exc:
            if _missing(exc):
                return None
            raise
        return _ObjectBody(answer["Body"]), int(answer["ContentLength"])

    async def _open_or_make(self, prefix: str, entry: dict) -> tuple[RenditionBody, int] | None:
        """A fallback's object, made and kept first if nobody asked for it before."""
        opened = await self._open_object(prefix + entry["name"])
        if opened is not None:
            return opened
        data = await self._make_deferred(prefix, entry)
        return None if data is None else (_BytesBody(data), len(data))

    async def _ensure_deferred(self, prefix: str, entry: dict) -> None:
        """Before redirecting to a fallback's URL: the object is there (made now if not)."""
        try:
            with _unavailable_on_failure():
                await self.client.head_object(Bucket=self.bucket, Key=prefix + entry["name"])
        except AvatarStorageUnavailable as exc:
            if not _missing(exc):
                raise
            await self._make_deferred(prefix, entry)

    async def _make_deferred(self, prefix: str, entry: dict) -> bytes | None:
        """Make a fallback first asked for from the version's largest WebP and PUT it beside the
        others; None if a swap removed the version meanwhile. Concurrent first requests each PUT
        the same bytes (avatars/_fallback.py: the encoders are deterministic), so whichever PUT
        lands last changes nothing a reader or the ETag could see."""
        webp = await self._get_bytes(prefix + entry["deferred"]["from"])
        if webp is None:
            return None
        data = await asyncio.to_thread(make_deferred, webp, entry)
        with _unavailable_on_failure():
            await self.client.put_object(
                Bucket=self.bucket,
                Key=prefix + entry["name"],
                Body=data,
                ContentType=entry["media_type"],
                CacheControl="public, max-age=31536000, immutable",
            )
        return data

    async def remove(self, user_id: str) -> bool:
        user_dir = self._user_dir(user_id)
        existed = await self._read_pointer(user_id) is not None
        with _unavailable_on_failure():
            await self.client.delete_object(Bucket=self.bucket, Key=user_dir + _POINTER)
        await self._delete_under(user_dir)
        return existed

    async def _listed(self, prefix: str) -> list[dict]:
        found: list[dict] = []
        with _unavailable_on_failure():
            paginator = self.client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                found += page.get("Contents", [])
        return found

    async def _delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            with _unavailable_on_failure():
                await self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    async def _delete_under(self, prefix: str) -> None:
        await self._delete([item["Key"] for item in await self._listed(prefix)])

    async def _remove_versions(self, user_dir: str, keep: str, replaced: str | None) -> None:
        now = datetime.now(UTC).timestamp()
        doomed = []
        for item in await self._listed(user_dir + _VERSION_PREFIX):
            directory = item["Key"][len(user_dir) :].split("/", 1)[0]
            if directory == keep:
                continue
            if directory == replaced or now - item["LastModified"].timestamp() > ORPHAN_SECONDS:
                doomed.append(item["Key"])
        await self._delete(doomed)
