"""What each failure means over HTTP: one table, rendered by each protocol in its own shape."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError
from starlette.responses import JSONResponse

import chunks
from avatars import ImageRejected, ImageTooLarge, UnsupportedFormat

from .auth import AuthError
from .bodies import BodyError, BodyTimeout, BodyTooLarge

log = logging.getLogger(__name__)


class BadRequest(Exception):
    """A protocol module's own rejection of a request it could not parse or accept."""

    def __init__(self, message: str, code: str, status: int = 400):
        super().__init__(message)
        self.message, self.code, self.status = message, code, status


@dataclass(frozen=True)
class Problem:
    status: int
    code: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)


_CORE_STATUS: list[tuple[type[chunks.UploadError], int]] = [
    (chunks.UploadNotFound, 404),
    (chunks.UploadGone, 410),
    (chunks.OffsetMismatch, 409),
    (chunks.ChecksumMismatch, 460),  # tus checksum extension: "460 Checksum Mismatch"
    (chunks.ChunkConflict, 409),
    (chunks.SessionConflict, 409),
    (chunks.UploadTooLarge, 413),
    (chunks.InvalidRequest, 400),
    (chunks.UploadBusy, 423),
    (chunks.StorageFull, 507),
    (chunks.StoreUnavailable, 503),
]


def problem_for(exc: BaseException, retry_after: int = 2) -> Problem | None:
    """The HTTP meaning of a known failure, or None for a bug (which becomes a logged 500)."""
    if isinstance(exc, BadRequest):
        return Problem(exc.status, exc.code, exc.message)
    if isinstance(exc, AuthError):
        return Problem(401, exc.code, exc.message, {"WWW-Authenticate": 'Bearer realm="avatars"'})
    if isinstance(exc, BodyTooLarge):
        return Problem(413, exc.code, exc.message)
    if isinstance(exc, BodyTimeout):
        return Problem(408, exc.code, exc.message, {"Connection": "close"})
    if isinstance(exc, BodyError):
        return Problem(400, exc.code, exc.message)
    if isinstance(exc, ImageRejected):
        status = 415 if isinstance(exc, UnsupportedFormat) else 413 if isinstance(exc, ImageTooLarge) else 422
        return Problem(status, exc.code, exc.message)
    if isinstance(exc, RedisError):
        return Problem(
            503,
            "store-unavailable",
            "the session store is unavailable; try again shortly",
            {"Retry-After": str(retry_after)},
        )
    if isinstance(exc, chunks.QuotaExceeded):
        return Problem(429, exc.code, exc.message, {"Retry-After": str(exc.retry_after)})
    if isinstance(exc, chunks.UploadError):
        for kind, status in _CORE_STATUS:
            if isinstance(exc, kind):
                headers = {"Retry-After": str(retry_after)} if status in (423, 503) else {}
                return Problem(status, exc.code, exc.message, headers)
        return Problem(400, exc.code, exc.message)
    return None


def image_status(code: str) -> int:
    """The status for an upload that failed image validation, known only by its stored code."""
    if code == "unsupported-format":
        return 415
    if code in {"too-many-pixels", "image-too-large", "too-many-frames"}:
        return 413
    return 422


def json_error(exc: BaseException, retry_after: int = 2, **extra: Any) -> JSONResponse:
    """`{"error": message, "code": code}` with the failure's status; a bug is re-raised."""
    problem = problem_for(exc, retry_after)
    if problem is None:
        raise exc
    return JSONResponse(
        {"error": problem.message, "code": problem.code, **extra}, problem.status, headers=problem.headers
    )
