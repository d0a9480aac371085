"""The protocol-free upload core: sessions in Redis, bytes in a ChunkStore, completion, expiry."""

from .chunk_records import ChunkRead
from .completion import Completion, Finisher
from .errors import (
    ChecksumMismatch,
    ChunkConflict,
    DigestUnavailable,
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
    UploadRejected,
    UploadTooLarge,
)
from .keys import Keys
from .limits import UploadLimits
from .local_store import LocalChunkStore
from .locks import LockObserver, UploadLocks
from .locks import holder_token as claim_token
from .outbox import Outbox
from .quotas import NoQuotas, QuotaLimits, Quotas, RedisQuotas
from .running_digest import NAMES as RUNNING_DIGESTS
from .running_digest import digests_of as stored_digests
from .session import UploadKind, UploadSession, UploadState, looks_like_upload_id
from .session_store import SessionStore
from .storage import ChunkStore, PartRef, StoreFeature
from .streams import Checksum
from .uploads import Uploads

__all__ = [
    "RUNNING_DIGESTS",
    "Checksum",
    "ChecksumMismatch",
    "ChunkConflict",
    "ChunkRead",
    "ChunkStore",
    "Completion",
    "DigestUnavailable",
    "Finisher",
    "InvalidRequest",
    "Keys",
    "LocalChunkStore",
    "LockObserver",
    "NoQuotas",
    "OffsetMismatch",
    "Outbox",
    "PartRef",
    "QuotaExceeded",
    "QuotaLimits",
    "Quotas",
    "RedisQuotas",
    "SessionConflict",
    "SessionStore",
    "StorageFull",
    "StoreFeature",
    "StoreUnavailable",
    "UploadBusy",
    "UploadError",
    "UploadGone",
    "UploadKind",
    "UploadLimits",
    "UploadLocks",
    "UploadNotFound",
    "UploadRejected",
    "UploadSession",
    "UploadState",
    "UploadTooLarge",
    "Uploads",
    "claim_token",
    "looks_like_upload_id",
    "stored_digests",
]
