"""The upload core's failures. Each protocol module renders them in its own wire shape."""

from __future__ import annotations


class UploadError(Exception):
    """Base class. `code` is a stable machine-readable string; the message names no path.

    Every subclass takes `(message, *, code=None)`, plus keyword data of its own after that."""

    code = "upload-error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class UploadNotFound(UploadError):
    code = "upload-not-found"


class UploadGone(UploadError):
    """The upload existed but expired or was abandoned."""

    code = "upload-expired"


class SessionConflict(UploadError):
    """The request contradicts what the session already recorded (total, type, length, state)."""

    code = "session-conflict"


class ChunkConflict(UploadError):
    code = "chunk-conflict"


class OffsetMismatch(UploadError):
    code = "offset-mismatch"

    def __init__(self, message: str, *, code: str | None = None, expected: int) -> None:
        super().__init__(message, code=code)
        self.expected = expected


class ChecksumMismatch(UploadError):
    """The appended bytes did not match the digest the client sent; none of them were kept."""

    code = "checksum-mismatch"


class DigestUnavailable(UploadError):
    """The server keeps no digest of the upload's bytes to check a client's against (see running_digest.py)."""

    code = "digest-unavailable"


class UploadTooLarge(UploadError):
    code = "upload-too-large"


class InvalidRequest(UploadError):
    code = "invalid-request"


class UploadBusy(UploadError):
    """Another request holds the upload and did not let go in time."""

    code = "upload-locked"


class StorageFull(UploadError):
    code = "insufficient-storage"


class QuotaExceeded(UploadError):
    """The user is past a per-user limit; `retry_after` says when trying again may help."""

    code = "quota-exceeded"

    def __init__(self, message: str, *, code: str | None = None, retry_after: int = 30) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class UploadRejected(UploadError):
    """A finisher refused the assembled bytes; the upload becomes FAILED with this message and code."""

    code = "upload-rejected"


class StoreUnavailable(UploadError):
    """Redis did not answer: the state of the upload is unknown, try again later."""

    code = "store-unavailable"
