"""Request bodies, streamed: counted against a limit and bounded in time, never buffered whole."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect, Request

from .settings import LimitSettings


class BodyError(Exception):
    """A request body that cannot be taken (400, or the subclass's status in `server.errors`)."""

    code = "invalid-body"

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


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
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise BodyError("Content-Length is not a valid number")
    return int(value)


@dataclass(frozen=True)
class BodyPace:
    """How long a body may take: `timeout` seconds in all, and (when `min_rate` is set) at least
    `min_rate` bytes per second on average once `grace` seconds have passed."""

    timeout: float
    min_rate: float = 0.0
    grace: float = 0.0

    @classmethod
    def of(cls, limits: LimitSettings) -> BodyPace:
        return cls(limits.body_timeout_seconds, float(limits.min_body_bytes_per_second), limits.body_rate_grace_seconds)


async def stream(request: Request, limit: int, pace: BodyPace) -> AsyncIterator[bytes]:
    """Yield the body's blocks; BodyTooLarge past `limit`, BodyTimeout when it is slower than `pace`."""
    length = declared_length(request)
    if length is not None and length > limit:
        raise BodyTooLarge(f"the body is larger than {limit} bytes")
    timeout, min_rate, grace = pace.timeout, pace.min_rate, pace.grace
    started = time.monotonic()
    deadline = started + timeout
    received = 0
    blocks = request.stream().__aiter__()
    while True:
        # The next block must come before the total deadline, and soon enough that the average
        # rate so far stays above the minimum (a slow-loris body holds a worker and a lock).
        due = deadline if min_rate <= 0 else min(deadline, started + grace + received / min_rate)
        remaining = due - time.monotonic()
        if remaining <= 0:
            raise _timeout(timeout, min_rate, due < deadline)
        try:
            block = await asyncio.wait_for(blocks.__anext__(), remaining)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise _timeout(timeout, min_rate, due < deadline) from None
        except ClientDisconnect:
            raise Disconnected("the client went away before sending the whole body") from None
        received += len(block)
        if received > limit:
            raise BodyTooLarge(f"the body is larger than {limit} bytes")
        if block:
            yield block


def _timeout(timeout: float, min_rate: float, too_slow: bool) -> BodyTimeout:
    if too_slow:
        return BodyTimeout(f"the body arrived slower than {min_rate:g} bytes per second")
    return BodyTimeout(f"the body did not arrive within {timeout:g} seconds")


async def read(request: Request, limit: int, pace: BodyPace) -> bytes:
    """The whole body, for protocols that make it one small document (a JSON chunk)."""
    parts = [block async for block in stream(request, limit, pace)]
    return b"".join(parts)


class InvalidJson(BodyError):
    code = "invalid-json"


# Room for the JSON around a base64 payload: field names, a file name, numbers.
_JSON_OVERHEAD = 64 * 1024


async def read_json_object(request: Request, payload_limit: int, pace: BodyPace) -> dict[str, Any]:
    """A JSON object body carrying at most `payload_limit` bytes as base64 (one small document).

    NaN and Infinity are refused; so is anything `json.loads` cannot take, which includes
    bad UTF-8 and integers too long to convert (a ValueError, not a JSONDecodeError)."""
    raw = await read(request, (payload_limit + 2) // 3 * 4 + _JSON_OVERHEAD, pace)
    try:
        document = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise InvalidJson("the body must be a JSON object") from None
    if not isinstance(document, dict):
        raise InvalidJson("the body must be a JSON object")
    return document


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")
