"""S3 failures as the upload core's errors: a 503 with Retry-After, never a 500."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError

from .errors import StoreUnavailable

_MISSING = {"NoSuchKey", "404", "NotFound", "NoSuchUpload"}
_FAILURES = (BotoCoreError, ClientError, aiohttp.ClientError, TimeoutError)


def missing(exc: BaseException) -> bool:
    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in _MISSING


@contextlib.contextmanager
def unavailable_on_failure() -> Iterator[None]:
    """S3 failures become StoreUnavailable (503 with Retry-After), never a 500."""
    try:
        yield
    except _FAILURES as exc:
        raise StoreUnavailable("the object storage did not answer", code="storage-unavailable") from exc
