"""Running SHA-256 and SHA-512 digests of a stream upload's stored bytes, resumable after a crash.

hashlib cannot save a hash in progress, and an upload's bytes arrive over many requests and
server processes. libcrypto's low-level SHA256_* / SHA512_* functions keep their state in a
plain C struct (no pointers), so its bytes can be kept in the upload session and a later
request, on any process of the same architecture, carries on from them. The state is saved in
the same session update as the offset it covers (Uploads._record_offset), so the two never
disagree; an upload whose state is missing or covers another offset has no known digest.

If libcrypto cannot be loaded, or its structs are not what this module expects (checked once
against hashlib), `AVAILABLE` is False and uploads simply carry no digest state.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import hashlib
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from .errors import DigestUnavailable, UploadRejected
from .session import UploadSession
from .streams import Checksum

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Algorithm:
    name: str  # the hashlib name
    ctx_size: int  # sizeof(SHA256_CTX) / sizeof(SHA512_CTX), the same in OpenSSL 1.1 and 3
    digest_size: int
    init: Any
    update: Any
    final: Any


def _library() -> ctypes.CDLL | None:
    """libcrypto: the one hashlib links to, else whatever the linker finds."""
    candidates = []
    try:
        import _hashlib  # only to find the libcrypto it was linked with

        candidates.append(_hashlib.__file__)
    except (ImportError, AttributeError):
        pass
    found = ctypes.util.find_library("crypto")
    if found:
        candidates.append(found)
    for candidate in candidates:
        try:
            lib = ctypes.CDLL(candidate)
            lib.SHA256_Init  # noqa: B018 - a module without the symbol is not libcrypto
            return lib
        except (OSError, AttributeError):
            continue
    return None


def _bind(lib: ctypes.CDLL, prefix: str, name: str, ctx_size: int, digest_size: int) -> _Algorithm:
    init, update, final = (getattr(lib, f"{prefix}_{part}") for part in ("Init", "Update", "Final"))
    init.argtypes, init.restype = [ctypes.c_void_p], ctypes.c_int
    update.argtypes, update.restype = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t], ctypes.c_int
    final.argtypes, final.restype = [ctypes.c_char_p, ctypes.c_void_p], ctypes.c_int
    return _Algorithm(name, ctx_size, digest_size, init, update, final)


def _load() -> dict[str, _Algorithm]:
    lib = _library()
    if lib is None:
        log.warning("libcrypto not found: uploads get no running digests (no Repr-Digest)")
        return {}
    try:
        found = {
            "sha256": _bind(lib, "SHA256", "sha256", 112, 32),
            "sha512": _bind(lib, "SHA512", "sha512", 216, 64),
        }
    except AttributeError:
        log.warning("libcrypto lacks SHA256_*/SHA512_*: uploads get no running digests")
        return {}
    return found


_ALGORITHMS: dict[str, _Algorithm] = _load()


class RunningDigest:
    """One algorithm's digest over bytes fed so far; `state` is its C struct, as bytes."""

    def __init__(self, name: str, state: bytes | None = None) -> None:
        self._algorithm = _ALGORITHMS[name]
        size = self._algorithm.ctx_size
        if state is None:
            self._ctx = ctypes.create_string_buffer(size)
            if self._algorithm.init(self._ctx) != 1:
                raise RuntimeError(f"{name} init failed")
        else:
            if len(state) != size:
                raise ValueError(f"a {name} state is {size} bytes, not {len(state)}")
            self._ctx = ctypes.create_string_buffer(state, size)

    def update(self, data: bytes) -> None:
        if data and self._algorithm.update(self._ctx, bytes(data), len(data)) != 1:
            raise RuntimeError(f"{self._algorithm.name} update failed")

    @property
    def state(self) -> bytes:
        return self._ctx.raw

    def digest(self) -> bytes:
        """The digest of the bytes so far; this object can go on being fed."""
        copy = ctypes.create_string_buffer(self._ctx.raw, self._algorithm.ctx_size)
        out = ctypes.create_string_buffer(self._algorithm.digest_size)
        if self._algorithm.final(out, copy) != 1:
            raise RuntimeError(f"{self._algorithm.name} final failed")
        return out.raw


def _self_test() -> bool:
    """Whether a state saved mid-way and resumed gives hashlib's answer (struct sizes, ABI)."""
    data = bytes(range(256)) * 5
    for name in list(_ALGORITHMS):
        first = RunningDigest(name)
        first.update(data[:333])
        resumed = RunningDigest(name, first.state)
        resumed.update(data[333:])
        if resumed.digest() != hashlib.new(name, data).digest():
            return False
    return True


if _ALGORITHMS and not _self_test():
    log.warning("libcrypto's SHA structs are not as expected: uploads get no running digests")
    _ALGORITHMS = {}

AVAILABLE = bool(_ALGORITHMS)
NAMES = tuple(_ALGORITHMS)  # the hashlib names this server keeps running digests for


def initial_states() -> dict[str, bytes]:
    """The states of every supported algorithm over no bytes (empty when the feature is off)."""
    return {name: RunningDigest(name).state for name in _ALGORITHMS}


def digests_of(session: UploadSession) -> dict[str, bytes] | None:
    """hashlib name -> digest of the upload's stored bytes; None if the server does not know them.

    Unknown means: no state saved (an upload from before running digests, a concatenated or
    chunked upload, libcrypto missing) or a state for another offset (the store lost bytes)."""
    if not AVAILABLE or session.digest_offset != session.offset or not session.digest_states:
        return None
    try:
        return {
            name: RunningDigest(name, state).digest()
            for name, state in session.digest_states.items()
            if name in _ALGORITHMS
        }
    except ValueError:
        return None


def check_representation(session: UploadSession, expected: Checksum) -> None:
    """Raise unless the upload's stored bytes have the digest `expected` names.

    DigestUnavailable when the server cannot tell; UploadRejected (code repr-digest-mismatch)
    when they differ."""
    digests = digests_of(session)
    if digests is None or expected.algorithm not in digests:
        raise DigestUnavailable(
            f"the server has no {expected.algorithm} digest of this upload's bytes to check against",
            code="repr-digest-unavailable",
        )
    if digests[expected.algorithm] != expected.digest:
        raise UploadRejected(
            f"the upload's bytes do not match the {expected.algorithm} representation digest sent",
            code="repr-digest-mismatch",
        )


class AppendDigests:
    """The running digests through one append, from the state that covers its start offset.

    `through` notes each block as the store takes it; `fold_to(offset)` hashes the noted blocks
    up to `offset`, and is meant to run in the worker thread that makes those bytes durable
    (ChunkStore.append's `on_sync`), so hashing, which costs about as much CPU as the rest of a
    64 KiB PATCH, stays off the event loop. `states_at(offset)` is the state that covers exactly
    `offset` stored bytes (folding whatever is left), or None if that is not a point it passed
    (the store kept fewer bytes than it was handed, for example a block past the upload's length)."""

    def __init__(self, offset: int, states: dict[str, bytes]) -> None:
        self._start = offset
        self._start_states = dict(states)
        self._running = {name: RunningDigest(name, state) for name, state in states.items()}
        self._count = offset  # bytes folded into _running
        self._pending: collections.deque[bytes] = collections.deque()  # handed out, not yet folded
        self._lock = threading.Lock()  # fold_to runs in a worker thread, states_at in the loop

    @classmethod
    def for_session(cls, session: UploadSession) -> AppendDigests | None:
        if not AVAILABLE or session.digest_offset != session.offset or not session.digest_states:
            return None
        try:
            return cls(session.offset, session.digest_states)
        except (KeyError, ValueError):
            return None

    def fold_to(self, offset: int) -> None:
        """Hash the blocks handed out that end at or before `offset` (thread-safe)."""
        with self._lock:
            while self._pending and self._count + len(self._pending[0]) <= offset:
                block = self._pending.popleft()
                for running in self._running.values():
                    running.update(block)
                self._count += len(block)

    async def through(self, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for block in body:
            self._pending.append(block)
            yield block

    def states_at(self, offset: int) -> dict[str, bytes] | None:
        if offset == self._start:
            return self._start_states
        self.fold_to(offset)
        if offset == self._count:
            return {name: running.state for name, running in self._running.items()}
        return None
