"""The upload session: a small typed record, encoded with msgpack, kept in Redis."""

from __future__ import annotations

import dataclasses
import re
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


_UPLOAD_ID = re.compile(r"[A-Za-z0-9_-]{32}")  # what new_upload_id makes: 24 bytes, urlsafe base64


def looks_like_upload_id(value: str) -> bool:
    return _UPLOAD_ID.fullmatch(value) is not None


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
    # CHUNKED: how many chunks and bytes are recorded. Which ones (index -> size, sha256) live in
    # their own Redis hash (keys.py `chunks`), so a chunk does not rewrite a list in this record.
    total_chunks: int | None = None
    chunk_count: int = 0
    chunk_bytes: int = 0
    # Records written before that hash existed hold the chunks here (index -> [size, sha256 hex]);
    # SessionStore reads them as if they were in the hash and moves them there on the next chunk.
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
    # Set while a completer holds the upload: a lease it renews while it works, so a crashed
    # one is taken over once `claimed_until` has passed. `claimed_by` tells the holder apart.
    claimed_until: float = 0.0
    claimed_by: str = ""
    alias: str = ""
    error_code: str = ""
    error_message: str = ""
    result: dict[str, Any] | None = None

    def claim(self, token: str, until: float) -> None:
        """Mark the upload as being completed by the holder of `token`, whose lease runs to `until`."""
        self.state = UploadState.ASSEMBLING
        self.claimed_until, self.claimed_by = until, token

    @property
    def received_bytes(self) -> int:
        if self.kind == UploadKind.CHUNKED:
            return self.chunk_bytes
        return self.offset

    @property
    def all_received(self) -> bool:
        if self.kind == UploadKind.CHUNKED:
            return self.total_chunks is not None and self.chunk_count == self.total_chunks
        return self.length is not None and self.offset == self.length

    @property
    def settled(self) -> bool:
        return self.state in (UploadState.DONE, UploadState.FAILED)

    @property
    def awaiting_completion(self) -> bool:
        """Every byte is in but no outcome is recorded: someone must still complete it."""
        return self.all_received and not self.partial and not self.settled

    def expired(self, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) >= self.expires_at


_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(UploadSession))
_FIELDS = frozenset(_FIELD_NAMES)


def encode(session: UploadSession) -> bytes:
    # The fields in their declared order (hot_path.py's owner check relies on id, then owner);
    # a plain comprehension, not dataclasses.asdict, whose deep copies were the larger part of
    # encoding a record on every PATCH. Field values are msgpack types already.
    return msgpack.packb({name: getattr(session, name) for name in _FIELD_NAMES}, use_bin_type=True)


def decode(blob: bytes) -> UploadSession:
    raw = msgpack.unpackb(blob, raw=False, strict_map_key=False)
    # Unknown fields from a newer server version are ignored rather than fatal.
    session = UploadSession(**{k: v for k, v in raw.items() if k in _FIELDS})
    session.kind = UploadKind(session.kind)
    session.state = UploadState(session.state)
    if session.received_chunks and not session.chunk_count:
        # An older record: its counts are those of the chunks it lists.
        session.chunk_count = len(session.received_chunks)
        session.chunk_bytes = sum(int(size) for size, _ in session.received_chunks.values())
    return session
