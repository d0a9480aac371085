"""Request bodies, streamed: counted against a limit and bounded in time, never buffered whole."""

from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator

from starlette.requests import ClientDisconnect, Request


class BodyError(Exception):
    code = "invalid-body"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BodyTooLarge(BodyError):
    code = "body-too-large"


class BodyTimeout(BodyError):
    """uvicorn has no request-body timeout: a body that trickles in is ended here."""

    code = "body-timeout"


class Disconnected(BodyError):
    code = "client-disconnected"


def declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit() or len(value) > 18:
        raise BodyError("Content-Length is not a valid number")
    return int(value)


async def stream(request: Request, limit: int, timeout: float) -> AsyncIterator[bytes]:
    """Yield the body's blocks; BodyTooLarge past `limit`, BodyTimeout past `timeout` seconds."""
    length = declared_length(request)
    if length is not None and length > limit:
        raise BodyTooLarge(f"the body is larger than {limit} bytes")
    deadline = time.monotonic() + timeout
    received = 0
    blocks = request.stream().__aiter__()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BodyTimeout(f"the body did not arrive within {timeout:g} seconds")
        try:
            block = await asyncio.wait_for(blocks.__anext__(), remaining)
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            raise BodyTimeout(f"the body did not arrive within {timeout:g} seconds") from None
        except ClientDisconnect:
            raise Disconnected("the client went away before sending the whole body") from None
        received += len(block)
        if received > limit:
            raise BodyTooLarge(f"the body is larger than {limit} bytes")
        if block:
            yield block


async def read(request: Request, limit: int, timeout: float) -> bytes:
    """The whole body, for protocols that make it one small document (a JSON chunk)."""
    parts = [block async for block in stream(request, limit, timeout)]
    return b"".join(parts)
