"""The protocol-free upload core: sessions in Redis, chunk bytes on disk, assembly, expiry."""

from .errors import (
    ChecksumMismatch,
    ChunkConflict,
    InvalidRequest,
    OffsetMismatch,
    QuotaExceeded,
    SessionConflict,
    StorageFull,
    StoreUnavailable,
    UploadBusy,
    UploadError,
    UploadGone,
    UploadNotFound,
    UploadTooLarge,
)
from .locks import UploadLocks
from .quotas import QuotaLimits, Quotas
from .session import UploadKind, UploadSession, UploadState, looks_like_upload_id
from .sessions import SessionStore
from .storage import ChunkStore, LocalChunkStore
from .streams import Checksum
from .uploads import Claim, UploadLimits, Uploads

__all__ = [
    "Checksum",
    "ChecksumMismatch",
    "ChunkConflict",
    "ChunkStore",
    "Claim",
    "InvalidRequest",
    "LocalChunkStore",
    "OffsetMismatch",
    "QuotaExceeded",
    "QuotaLimits",
    "Quotas",
    "SessionConflict",
    "SessionStore",
    "StorageFull",
    "StoreUnavailable",
    "UploadBusy",
    "UploadError",
    "UploadGone",
    "UploadKind",
    "UploadLimits",
    "UploadLocks",
    "UploadNotFound",
    "UploadSession",
    "UploadState",
    "UploadTooLarge",
    "Uploads",
    "looks_like_upload_id",
]
