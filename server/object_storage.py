"""The bucket of `storage.backend: s3`: one aiobotocore client per process, checked at start.

Why aiobotocore: it is botocore (the AWS SDK's own request signing, endpoint rules, retry modes
and error model) on aiohttp, so every call is a coroutine and nothing blocks the event loop; it
is maintained in step with botocore and speaks to any S3-compatible store. Its client holds one
aiohttp connection pool (`storage.s3.max_connections`); botocore's "standard" retry mode retries
5xx answers, throttling and dropped connections with exponential backoff and jitter, up to
`storage.s3.max_attempts` tries of one call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from .seaweed_process import SeaweedProcess
from .settings import S3Settings

log = logging.getLogger("server")

_BAD_CREDENTIALS = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidClientTokenId",
    "AuthorizationHeaderMalformed",
}
# The embedded SeaweedFS answers HTTP a moment before its filer takes writes.
_EMBEDDED_SETTLE_SECONDS = 30.0


class ObjectStorageUnusable(RuntimeError):
    """The bucket cannot be used; the message is one line that says why (start-up stops)."""


@dataclass(frozen=True)
class ObjectStorage:
    client: Any  # an open aiobotocore S3 client
    bucket: str
    prefix: str
    public_base_url: str

    async def healthy(self, timeout: float = 2.0) -> bool:
        """Whether the bucket answers now (for /healthz)."""
        try:
            await asyncio.wait_for(self.client.head_bucket(Bucket=self.bucket), timeout)
        except (BotoCoreError, ClientError, OSError, TimeoutError):
            return False
        return True


async def open_object_storage(settings: S3Settings, stack: contextlib.AsyncExitStack) -> ObjectStorage:
    """The client, its embedded SeaweedFS if asked for, and the bucket, created if missing and
    proven writable. Everything is released by `stack`. ObjectStorageUnusable when it cannot be."""
    endpoint: str | None = settings.endpoint_url or None
    settle = 0.0
    if endpoint == "embedded":
        embedded = SeaweedProcess(
            settings.embedded_dir,
            access_key_id=settings.access_key_id,
            secret_access_key=settings.secret_access_key,
            s3_port=settings.embedded_port,
        )
        stack.push_async_callback(asyncio.to_thread, embedded.stop)
        embedded.spawn()  # on the loop's thread, which lives as long as the server
        await asyncio.to_thread(embedded.wait_ready)
        endpoint, settle = embedded.endpoint_url, _EMBEDDED_SETTLE_SECONDS
    config = AioConfig(
        max_pool_connections=max(1, settings.max_connections),
        retries={"mode": "standard", "max_attempts": max(1, settings.max_attempts)},
        connect_timeout=settings.connect_timeout_seconds,
        read_timeout=settings.read_timeout_seconds,
        # Path-style keys work on every S3-compatible store; AWS itself takes virtual hosts.
        s3={"addressing_style": "path" if endpoint else "auto"},
    )
    client = await stack.enter_async_context(
        get_session().create_client(
            "s3",
            endpoint_url=endpoint,
            region_name=settings.region or None,
            aws_access_key_id=settings.access_key_id or None,
            aws_secret_access_key=settings.secret_access_key or None,
            config=config,
        )
    )
    storage = ObjectStorage(client, settings.bucket, settings.prefix, settings.public_base_url.rstrip("/"))
    where = f"bucket {settings.bucket!r} at {endpoint or 'AWS S3'}"
    deadline = time.monotonic() + settle
    while True:
        try:
            await _ensure_writable(storage, settings.region)
            return storage
        except ObjectStorageUnusable as exc:
            if time.monotonic() >= deadline:
                raise ObjectStorageUnusable(f"cannot use the {where}: {exc}") from None
            await asyncio.sleep(0.2)


async def _ensure_writable(storage: ObjectStorage, region: str) -> None:
    client, bucket = storage.client, storage.bucket
    try:
        try:
            await client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            if _code(exc) not in {"404", "NoSuchBucket", "NotFound"}:
                raise
            extra: dict[str, Any] = {}
            if region and region != "us-east-1":
                extra["CreateBucketConfiguration"] = {"LocationConstraint": region}
            with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                await client.create_bucket(Bucket=bucket, **extra)
            log.info("created the bucket %r", bucket)
        probe = f"{storage.prefix}.write-probe-{secrets.token_hex(6)}"
        await client.put_object(Bucket=bucket, Key=probe, Body=b"")
        await client.delete_object(Bucket=bucket, Key=probe)
    except EndpointConnectionError:
        raise ObjectStorageUnusable("the endpoint cannot be reached") from None
    except ClientError as exc:
        code = _code(exc)
        if code in _BAD_CREDENTIALS:
            raise ObjectStorageUnusable(f"the access key or secret is wrong ({code})") from None
        if code in {"403", "AccessDenied", "Forbidden"}:
            raise ObjectStorageUnusable("these credentials may not create, write or delete in it (403)") from None
        raise ObjectStorageUnusable(f"it answered {code}: {exc}") from None
    except (BotoCoreError, OSError) as exc:
        raise ObjectStorageUnusable(f"{type(exc).__name__}: {exc}") from None


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
