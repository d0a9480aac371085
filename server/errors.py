"""What each failure means over HTTP: one table from error class to status (and headers).

A failure is looked up along its class's MRO, as Starlette looks up exception handlers, so a
subclass without a row of its own has its parent's meaning. Each protocol renders the found
`Problem` in its own wire shape (`server.endpoint`); a class in no row is a bug (a logged 500).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from redis.exceptions import RedisClusterException, RedisError

import chunks
from avatars import ImageRejected, ImageTooLarge, UnsupportedFormat
from avatars.errors import AvatarStorageUnavailable

from .auth import AuthError
from .bodies import BodyError, BodyTimeout, BodyTooLarge, ServerBusy
from .pending_fetches import FetchesBusy


class BadRequest(Exception):
    """A request a protocol module refuses (400); a subclass names another status."""

    def __init__(self, message: str, *, code: str):
        super().__init__(message)
        self.message, self.code = message, code


class Forbidden(BadRequest):
    """The caller may not act on this resource (403)."""


class NotFound(BadRequest):
    """There is nothing here for this caller (404)."""


class MethodNotAllowed(BadRequest):
    """The resource exists but does not take this method (405)."""


class PreconditionFailed(BadRequest):
    """The request asks for a protocol version this server does not speak (412)."""


class ContentTooLarge(BadRequest):
    """The request declares or sends more than a limit allows (413)."""


class UnsupportedMediaType(BadRequest):
    """The body's media type is not one this endpoint takes (415)."""


class HookUnavailable(BadRequest):
    """The blocking pre-create hook did not answer and may not be skipped (503; server/hooks.py)."""


@dataclass(frozen=True)
class Meaning:
    """The HTTP meaning of an error class. `retry_after`: answer `Retry-After` (the error's own
    `retry_after`, else the configured wait). `code`/`message`: fixed text for errors whose own
    text is not ours to show (a Redis error may name hosts and internals)."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    retry_after: bool = False
    code: str | None = None
    message: str | None = None


STATUS: dict[type[Exception], Meaning] = {
    BadRequest: Meaning(400),
    Forbidden: Meaning(403),
    NotFound: Meaning(404),
    MethodNotAllowed: Meaning(405),
    PreconditionFailed: Meaning(412),
    ContentTooLarge: Meaning(413),
    UnsupportedMediaType: Meaning(415),
    HookUnavailable: Meaning(503, retry_after=True),
    AuthError: Meaning(401, {"WWW-Authenticate": 'Bearer realm="avatars"'}),
    BodyError: Meaning(400),
    BodyTooLarge: Meaning(413),
    # The connection still holds the rest of a body nobody will read: close it.
    BodyTimeout: Meaning(408, {"Connection": "close"}),
    FetchesBusy: Meaning(503, retry_after=True),
    ServerBusy: Meaning(503, retry_after=True),
    ImageRejected: Meaning(422),
    UnsupportedFormat: Meaning(415),
    ImageTooLarge: Meaning(413),
    chunks.UploadError: Meaning(400),
    chunks.UploadNotFound: Meaning(404),
    chunks.UploadGone: Meaning(410),
    chunks.OffsetMismatch: Meaning(409),
    chunks.ChecksumMismatch: Meaning(460),  # tus checksum extension: "460 Checksum Mismatch"
    chunks.ChunkConflict: Meaning(409),
    chunks.SessionConflict: Meaning(409),
    chunks.UploadTooLarge: Meaning(413),
    chunks.InvalidRequest: Meaning(400),
    # The server cannot check a Repr-Digest (no running digest of the upload): the request is
    # understood but cannot be carried out; the upload fails with this code.
    chunks.DigestUnavailable: Meaning(422),
    chunks.UploadBusy: Meaning(423, retry_after=True),
    chunks.QuotaExceeded: Meaning(429, retry_after=True),
    chunks.StorageFull: Meaning(507),
    chunks.StoreUnavailable: Meaning(503, retry_after=True),
    # The avatar store's bucket did not answer (storage.backend: s3).
    AvatarStorageUnavailable: Meaning(503, retry_after=True),
    RedisError: Meaning(
        503,
        retry_after=True,
        code="store-unavailable",
        message="the session store is unavailable; try again shortly",
    ),
    # The cluster client's own failure when no node answers (not a RedisError).
    RedisClusterException: Meaning(
        503,
        retry_after=True,
        code="store-unavailable",
        message="the session store is unavailable; try again shortly",
    ),
}
# Every failure with a meaning: what an endpoint catches and renders. Anything else is a bug.
KNOWN: tuple[type[Exception], ...] = tuple(STATUS)

# The refusal class an upload was failed with, by the code stored on it: a failed upload is
# answered long after the exception is gone, with the status its class would have had.
_REFUSAL_OF_CODE: dict[str, type[Exception]] = {
    "unsupported-format": UnsupportedFormat,
    "too-many-pixels": ImageTooLarge,
    "image-too-large": ImageTooLarge,
    "too-many-frames": ImageTooLarge,
    # The whole upload did not match the client's RFC 9530 Repr-Digest (chunks/running_digest.py).
    "repr-digest-mismatch": BadRequest,
}


@dataclass(frozen=True)
class Problem:
    """A failure as HTTP sees it, before a protocol gives it its shape."""

    status: int
    code: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)


INTERNAL_ERROR = Problem(500, "internal-error", "internal server error")


def meaning_of(kind: type[BaseException]) -> Meaning | None:
    for cls in kind.__mro__:
        meaning = STATUS.get(cls)
        if meaning is not None:
            return meaning
    return None


def problem_for(exc: BaseException, retry_after: int) -> Problem | None:
    """The HTTP meaning of a known failure, or None for a bug. `retry_after` is the configured
    wait for failures that do not carry their own."""
    meaning = meaning_of(type(exc))
    if meaning is None:
        return None
    headers = dict(meaning.headers)
    if meaning.retry_after:
        own = getattr(exc, "retry_after", None)
        headers["Retry-After"] = str(own if isinstance(own, int) else retry_after)
    code = meaning.code or getattr(exc, "code", "") or "error"
    message = meaning.message or getattr(exc, "message", "") or str(exc)
    return Problem(meaning.status, code, message, headers)


def failed_upload(session: chunks.UploadSession) -> Problem:
    """The problem of an upload whose image was refused, from what the upload recorded."""
    meaning = meaning_of(_REFUSAL_OF_CODE.get(session.error_code, ImageRejected))
    assert meaning is not None
    return Problem(meaning.status, session.error_code, session.error_message)
