"""The upload session: a small typed record, encoded with msgpack, kept in Redis."""

from __future__ import annotations

import dataclasses
import secrets
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import msgpack


class UploadState(StrEnum):
    """Where an upload stands. Only OPEN accepts bytes; DONE and FAILED are final."""

    OPEN = "open"
    ASSEMBLING = "assembling"  # claimed by one request, which is turning it into an avatar
    DONE = "done"
    FAILED = "failed"


class UploadKind(StrEnum):
    CHUNKED = "chunked"  # numbered chunks, each kept as its own part (the JSON chunk API)
    STREAM = "stream"  # bytes appended at an offset (tus, IETF draft, raw bodies)


ID_BYTES = 24  # 192 bits: upload ids are unguessable


def new_upload_id() -> str:
    return secrets.token_urlsafe(ID_BYTES)


def looks_like_upload_id(value: str) -> bool:
    return len(value) == 32 and all(c.isalnum() or c in "-_" for c in value)


@dataclass
class UploadSession:
    id: str
    owner: str
    kind: UploadKind
    created_at: float
    expires_at: float
    file_name: str = ""
    content_type: str = ""
    state: UploadState = UploadState.OPEN
    # CHUNKED: index -> [size, sha256 hex]
    total_chunks: int | None = None
    received_chunks: dict[int, list[Any]] = field(default_factory=dict)
    # STREAM: bytes safely stored, and the declared length (None while deferred)
    offset: int = 0
    length: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    # STREAM: running digest states (hashlib name -> libcrypto struct bytes, running_digest.py)
    # over the first `digest_offset` bytes; they count only while digest_offset == offset.
    digest_offset: int = -1
    digest_states: dict[str, bytes] = field(default_factory=dict)
    # A digest of the whole upload the client sent when creating it ([hashlib name, digest]).
    expected_digest: list[Any] = field(default_factory=list)
    partial: bool = False
    parts: list[str] = field(default_factory=list)
    # A partial upload that a final upload was created from before it finished: that final's id.
    final_id: str = ""
    # Set while an assembler holds the upload, so a crashed one can be taken over.
    claimed_until: float = 0.0
    alias: str = ""
    error_code: str = ""
    error_message: str = ""
    result: dict[str, Any] | None = None

    @property
    def received_bytes(self) -> int:
        if self.kind == UploadKind.CHUNKED:
            return sum(int(size) for size, _ in self.received_chunks.values())
        return self.offset

    def missing_chunks(self) -> list[int]:
        if self.total_chunks is None:
            return []
        return [i for i in range(self.total_chunks) if i not in self.received_chunks]

    @property
    def all_received(self) -> bool:
        if self.kind == UploadKind.CHUNKED:
            return self.total_chunks is not None and len(self.received_chunks) == self.total_chunks
        return self.length is not None and self.offset == self.length

    def expired(self, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) >= self.expires_at


_FIELDS = {f.name for f in dataclasses.fields(UploadSession)}


def encode(session: UploadSession) -> bytes:
    return msgpack.packb(dataclasses.asdict(session), use_bin_type=True)


def decode(blob: bytes) -> UploadSession:
    raw = msgpack.unpackb(blob, raw=False, strict_map_key=False)
    # Unknown fields from a newer server version are ignored rather than fatal.
    session = UploadSession(**{k: v for k, v in raw.items() if k in _FIELDS})
    session.kind = UploadKind(session.kind)
    session.state = UploadState(session.state)
    return session
