"""The upload core as the integration tests build it: real Redis, real files, a fresh key prefix.

`open_core` is the one place a test gets `chunks.Uploads` and `chunks.Completion` from;
`chunk_store` the one place it gets a ChunkStore for a named backend (the contract suite runs
against every backend listed in BACKENDS).
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

import chunks
from chunks.s3_store import S3ChunkStore
from tests.support.s3 import Bucket, fresh_prefix

BACKENDS = ["local", "s3"]


def chunk_store(backend: str, root: Path, bucket: Bucket | None = None) -> chunks.ChunkStore:
    """A store of `backend`; "s3" needs the tests' `bucket` fixture and gets a fresh key prefix."""
    if backend == "local":
        return chunks.LocalChunkStore(root)
    if backend == "s3":
        assert bucket is not None, "the s3 backend needs the bucket fixture"
        return S3ChunkStore(bucket.client, bucket.name, scratch=root / "work", prefix=fresh_prefix())
    raise ValueError(f"no chunk store backend named {backend!r}")


async def digest_finisher(session: chunks.UploadSession, path: Path) -> dict[str, Any]:
    """A finisher that keeps nothing and reports what it was handed: size and sha256."""
    data = path.read_bytes()
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def digest_of(data: bytes) -> dict[str, Any]:
    """What `digest_finisher` reports for an upload of exactly `data`."""
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@dataclass
class Core:
    uploads: chunks.Uploads
    completion: chunks.Completion
    store: chunks.ChunkStore
    redis: aioredis.Redis
    keys: chunks.Keys


@contextlib.asynccontextmanager
async def open_core(
    redis_url: str,
    root: Path,
    *,
    limits: chunks.UploadLimits | None = None,
    quota_limits: chunks.QuotaLimits | None = None,
    finisher: chunks.Finisher = digest_finisher,
    wait_seconds: float = 5.0,
    backend: str = "local",
    bucket: Bucket | None = None,
    cluster: bool = False,
) -> AsyncIterator[Core]:
    """An Uploads and its Completion on their own key prefix; the Redis client is closed after.
    `cluster`: `redis_url` is a node of a Redis Cluster, reached through the cluster client."""
    client = RedisCluster.from_url(redis_url) if cluster else aioredis.from_url(redis_url)
    prefix = f"t{secrets.token_hex(4)}"
    sessions = chunks.SessionStore(client, prefix)
    store = chunk_store(backend, root, bucket)
    quotas: chunks.Quotas = chunks.NoQuotas()
    if quota_limits is not None:
        quotas = chunks.RedisQuotas(client, sessions, quota_limits, prefix)
    uploads = chunks.Uploads(
        sessions,
        store,
        chunks.UploadLocks(client, prefix),
        limits or chunks.UploadLimits(max_upload_bytes=1_000_000, max_chunk_bytes=100_000, expire_seconds=3600),
        quotas,
    )
    completion = chunks.Completion(uploads, finisher, wait_seconds=wait_seconds)
    try:
        yield Core(uploads, completion, store, client, chunks.Keys(prefix))
    finally:
        await client.aclose()
