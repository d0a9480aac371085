"""The running SHA-256/SHA-512 states kept in upload sessions (chunks/running_digest.py): a state
saved as bytes after any prefix and resumed gives exactly hashlib's digest of the whole."""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
import sys
import time

import pytest

from chunks import running_digest
from chunks.errors import DigestUnavailable, UploadRejected
from chunks.session import UploadKind, UploadSession, decode, encode
from chunks.streams import Checksum

pytestmark = pytest.mark.skipif(not running_digest.AVAILABLE, reason="libcrypto could not be loaded")

DATA = os.urandom(5000) + bytes(range(256)) * 40


@pytest.mark.parametrize("name", ["sha256", "sha512"])
@pytest.mark.parametrize("split", [0, 1, 55, 56, 63, 64, 65, 111, 112, 127, 128, 129, 4999, len(DATA)])
def test_a_state_saved_at_any_split_and_resumed_equals_hashlib_of_the_whole(name, split):
    first = running_digest.RunningDigest(name)
    first.update(DATA[:split])
    saved = first.state
    assert len(saved) == {"sha256": 112, "sha512": 216}[name]
    resumed = running_digest.RunningDigest(name, saved)
    resumed.update(DATA[split:])
    assert resumed.digest() == hashlib.new(name, DATA).digest()


@pytest.mark.parametrize("name", ["sha256", "sha512"])
def test_many_saves_and_the_running_digest_of_each_prefix(name):
    state = running_digest.initial_states()[name]
    cuts = [0, 3, 700, 701, 2048, 4096, len(DATA)]
    for start, end in itertools.pairwise(cuts):
        running = running_digest.RunningDigest(name, state)
        running.update(DATA[start:end])
        # Asking for the digest so far does not disturb the running state.
        assert running.digest() == hashlib.new(name, DATA[:end]).digest()
        state = running.state
    assert running_digest.RunningDigest(name, state).digest() == hashlib.new(name, DATA).digest()


def test_a_state_of_the_wrong_size_is_refused():
    with pytest.raises(ValueError):
        running_digest.RunningDigest("sha256", b"\0" * 50)


def session(offset: int = 0, **fields) -> UploadSession:
    now = time.time()
    return UploadSession(
        id="x" * 32, owner="u", kind=UploadKind.STREAM, created_at=now, expires_at=now + 60, offset=offset, **fields
    )


async def blocks(*parts: bytes):
    for part in parts:
        yield part


async def test_append_digests_give_the_state_of_each_offset_the_store_passed():
    tracker = running_digest.AppendDigests(0, running_digest.initial_states())
    consumed = [block async for block in tracker.through(blocks(DATA[:100], DATA[100:300], DATA[300:1000]))]
    assert b"".join(consumed) == DATA[:1000]
    assert tracker.states_at(0) == running_digest.initial_states()
    assert tracker.states_at(999) is None  # not a point between blocks: unknown, not guessed
    states = tracker.states_at(1000)
    assert states is not None
    done = session(1000, digest_offset=1000, digest_states=states)
    assert running_digest.digests_of(done) == {n: hashlib.new(n, DATA[:1000]).digest() for n in ("sha256", "sha512")}


def test_a_state_for_another_offset_or_none_at_all_is_unknown():
    states = running_digest.initial_states()
    assert running_digest.digests_of(session(0, digest_offset=0, digest_states=states)) is not None
    assert running_digest.digests_of(session(10, digest_offset=0, digest_states=states)) is None
    # A session stored before running digests existed decodes without any.
    raw = encode(session(10))
    assert running_digest.digests_of(decode(raw)) is None


async def test_check_representation_tells_match_mismatch_and_unknown():
    tracker = running_digest.AppendDigests(0, running_digest.initial_states())
    assert [block async for block in tracker.through(blocks(DATA))] == [DATA]
    states = tracker.states_at(len(DATA))
    assert states is not None
    whole = session(len(DATA), digest_offset=len(DATA), digest_states=states)
    running_digest.check_representation(whole, Checksum("sha512", hashlib.sha512(DATA).digest()))
    with pytest.raises(UploadRejected) as wrong:
        running_digest.check_representation(whole, Checksum("sha256", hashlib.sha256(b"other").digest()))
    assert wrong.value.code == "repr-digest-mismatch"
    with pytest.raises(DigestUnavailable) as unknown:
        running_digest.check_representation(session(len(DATA)), Checksum("sha256", hashlib.sha256(DATA).digest()))
    assert unknown.value.code == "repr-digest-unavailable"


def test_without_libcrypto_the_feature_is_off_and_nothing_crashes():
    """libcrypto cannot be made to vanish in this process, so a child process hides it (the one
    stand-in in this file): every ctypes.CDLL load fails, as on a system without OpenSSL."""
    script = """
import ctypes
def refuse(*args, **kwargs):
    raise OSError("no libcrypto here")
ctypes.CDLL = refuse
import time
from chunks import running_digest
from chunks.session import UploadKind, UploadSession
assert running_digest.AVAILABLE is False and running_digest.NAMES == ()
assert running_digest.initial_states() == {}
now = time.time()
s = UploadSession(id="x" * 32, owner="u", kind=UploadKind.STREAM, created_at=now, expires_at=now + 9)
assert running_digest.digests_of(s) is None
assert running_digest.AppendDigests.for_session(s) is None
print("off")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "off"
