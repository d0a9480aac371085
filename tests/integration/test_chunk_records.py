"""A JSON-API chunk in two Redis round trips (chunks/chunk_records.py) against a real redis-server:
one script reads the session and the chunk's entry, one records the chunk only if the session is
still the one read; a change made in between is kept, a twin chunk is still a duplicate or a
conflict, and a live upload is not reaped for the expiry index it no longer refreshes."""

from __future__ import annotations

import hashlib
import os
import time

import pytest
from redis.asyncio import connection as redis_connection

import chunks
from chunks.numbered_chunks import part_digest
from tests.support.core import digest_of, open_core


def _calls(info: dict, command: str) -> int:
    return int(info.get(f"cmdstat_{command}", {}).get("calls", 0))


async def _opened(core, total: int = 4) -> chunks.UploadSession:
    return await core.uploads.open_chunked(
        "alice", file_name="a.jpg", content_type="image/jpeg", total_chunks=total, alias="name:a.jpg"
    )


async def _open_chunk(core, session: chunks.UploadSession, index: int):
    return await core.uploads.open_chunk(
        "alice", session.id, index, total_chunks=session.total_chunks, content_type="image/jpeg"
    )


async def test_a_steady_chunk_takes_two_scripts_and_no_transaction(core):
    session = await _opened(core)
    await core.uploads.put_chunk(session, 0, b"a" * 1000)
    before = await core.redis.info("commandstats")
    read = await _open_chunk(core, session, 1)
    stored = await core.uploads.store_chunk(read.session, 1, b"b" * 1000, read)
    after = await core.redis.info("commandstats")
    assert (stored.duplicate, stored.received, stored.session.received_bytes) == (False, [0, 1], 2000)
    assert _calls(after, "evalsha") - _calls(before, "evalsha") == 2
    for command in ("watch", "multi", "exec", "zadd"):
        assert _calls(after, command) == _calls(before, command), command
    # Every GET and HGET ran inside the two scripts (one each reads the record).
    assert _calls(after, "get") - _calls(before, "get") == 2
    assert _calls(after, "hget") - _calls(before, "hget") == 1
    assert await core.uploads.chunk_records.indices(await core.uploads.get(session.id, "alice")) == [0, 1]


async def test_a_change_made_between_the_read_and_the_record_is_kept(core):
    session = await _opened(core)
    read = await _open_chunk(core, session, 2)

    # Another request changes the record (as the completion sweeper or an operator would) after
    # this chunk's read: the record script must not write the stale copy back.
    def mark(current: chunks.UploadSession) -> None:
        current.metadata["changed"] = "meanwhile"

    await core.uploads.sessions.update(session.id, mark)
    stored = await core.uploads.store_chunk(read.session, 2, b"c" * 500, read)
    current = await core.uploads.get(session.id, "alice")
    assert current.metadata == {"changed": "meanwhile"}
    assert (stored.received, current.received_bytes, current.chunk_count) == ([2], 500, 1)


async def test_a_twin_recorded_between_the_read_and_the_record_is_a_duplicate_or_a_conflict(core):
    session = await _opened(core)
    same, other = await _open_chunk(core, session, 0), await _open_chunk(core, session, 0)
    await core.uploads.put_chunk(session, 0, b"x" * 100)
    twin = await core.uploads.store_chunk(same.session, 0, b"x" * 100, same)
    assert twin.duplicate
    with pytest.raises(chunks.ChunkConflict):
        await core.uploads.store_chunk(other.session, 0, b"y" * 100, other)
    current = await core.uploads.get(session.id, "alice")
    assert (current.received_bytes, current.chunk_count) == (100, 1)
    (size, digest, place), *more = (await core.uploads.chunk_records.entries(current)).values()
    assert (size, digest, more) == (100, part_digest(b"x" * 100), [])
    async with core.uploads.store.local_copy(session.id, [chunks.PartRef(0, digest, size, place)]) as path:
        assert path.read_bytes() == b"x" * 100  # the place recorded is the first request's bytes


async def test_an_upload_kept_alive_by_its_chunks_is_not_reaped_at_its_first_expiry(core):
    session = await _opened(core, total=3)
    indexed = session.expires_at  # where creating it put it in the expiry index
    # The chunk scripts do not move the expiry index; each chunk extends the session itself.
    await core.uploads.put_chunk(session, 0, os.urandom(100))
    read = await _open_chunk(core, session, 1)
    extended = (await core.uploads.store_chunk(read.session, 1, os.urandom(100), read)).session.expires_at
    assert extended > indexed
    # Past the index's time but before the session's: the reaper re-indexes, removes nothing.
    assert await core.uploads.reap(now=(indexed + extended) / 2) == 0
    assert (await core.uploads.get(session.id, "alice")).received_bytes == 200
    assert await core.uploads.reap(now=time.time() + 7 * 24 * 3600) == 1


async def test_the_chunk_that_completes_an_upload_claims_it_in_its_own_record(core):
    session = await _opened(core, total=2)
    token = chunks.claim_token()
    first = await _open_chunk(core, session, 0)
    half = await core.uploads.store_chunk(first.session, 0, b"a" * 100, first, claim_as=token)
    assert (half.session.state, half.session.claimed_by) == (chunks.UploadState.OPEN, "")  # not the last

    read = await _open_chunk(core, session, 1)
    last = await core.uploads.store_chunk(read.session, 1, b"b" * 100, read, claim_as=token)
    stored = await core.uploads.get(session.id, "alice")
    assert (stored.state, stored.claimed_by) == (chunks.UploadState.ASSEMBLING, token)
    assert await core.uploads.sessions.completable(10) == [session.id]  # listed before it said so

    # A twin of the last chunk is a duplicate and claims nothing: it waits for the holder, which
    # has not come yet, and gets the upload as it stands.
    core.completion._wait_seconds = 0.2
    twin = await core.uploads.store_chunk(session, 1, b"b" * 100, None, claim_as=chunks.claim_token())
    assert twin.duplicate and twin.session.claimed_by == token
    waited = await core.completion.complete(twin.session, claimed_as=chunks.claim_token())
    assert waited.state == chunks.UploadState.ASSEMBLING

    done = await core.completion.complete(last.session, claimed_as=token)
    assert done.state == chunks.UploadState.DONE and done.result == digest_of(b"a" * 100 + b"b" * 100)


async def test_a_chunk_recorded_under_its_sha256_by_an_earlier_version_still_matches_a_resend(core):
    # Records written before BLAKE3 named chunks carry a bare sha256 hex ("size:sha256:place"):
    # after an upgrade, a client resending such a chunk must get a duplicate, not a conflict.
    session = await _opened(core, total=2)
    first = b"first-chunk" * 50
    stored, _ = await core.uploads.put_chunk(session, 0, first)
    (size, digest, place), *_ = (await core.uploads.chunk_records.entries(stored)).values()
    assert digest == part_digest(first) and digest.startswith("b3-")
    await core.redis.hset(core.keys.chunks(session.id), "0", f"{size}:{hashlib.sha256(first).hexdigest()}:{place}")

    assert (await core.uploads.put_chunk(stored, 0, first))[1]  # a duplicate
    with pytest.raises(chunks.ChunkConflict):
        await core.uploads.put_chunk(stored, 0, b"other-bytes" * 50)
    done, duplicate = await core.uploads.put_chunk(stored, 1, b"second")
    assert not duplicate and done.all_received
    assert (await core.completion.complete(done)).result == digest_of(first + b"second")


async def test_a_large_chunk_written_while_it_is_hashed_is_recorded_with_its_digest(redis_url, tmp_path):
    # Past the size hashed in the event loop: the store writes it while a worker thread hashes it.
    limits = chunks.UploadLimits(max_upload_bytes=1_000_000, max_chunk_bytes=400_000, expire_seconds=3600)
    async with open_core(redis_url, tmp_path, limits=limits) as core:
        await _a_large_chunk(core)


async def _a_large_chunk(core) -> None:
    session = await _opened(core, total=2)
    big, other = os.urandom(300_000), os.urandom(300_000)
    stored, _ = await core.uploads.put_chunk(session, 0, big)
    (size, digest, _place), *_ = (await core.uploads.chunk_records.entries(stored)).values()
    assert (size, digest) == (len(big), part_digest(big))
    assert (await core.uploads.put_chunk(stored, 0, big))[1]  # the same bytes: a duplicate
    with pytest.raises(chunks.ChunkConflict):
        await core.uploads.put_chunk(stored, 0, other)
    done, _ = await core.uploads.put_chunk(stored, 1, other)
    assert (await core.completion.complete(done)).result == digest_of(big + other)


async def test_a_part_written_while_its_upload_was_abandoned_leaves_no_directory(core):
    session = await _opened(core, total=2)
    await core.uploads.put_chunk(session, 0, b"a" * 100)
    read = await _open_chunk(core, session, 1)  # read before the upload goes, written after
    await core.uploads.abandon(session.id, "alice")
    directory = core.store.root / session.id
    assert not directory.exists()
    with pytest.raises(chunks.UploadNotFound):
        await core.uploads.store_chunk(read.session, 1, b"b" * 100, read)
    assert not directory.exists()  # the write made it again; nothing else would remove it


async def test_a_twin_written_at_a_place_of_its_own_gives_its_copy_back_and_keeps_the_first(core):
    session = await _opened(core, total=2)
    big = os.urandom(64 * 1024)
    same = await _open_chunk(core, session, 0)
    first = await core.uploads.store_chunk(session, 0, big)  # recorded between the twin's read and write
    twin = await core.uploads.store_chunk(same.session, 0, big, same)
    assert twin.duplicate and twin.place == first.place
    log = core.store.root / session.id / first.place.partition("@")[0]
    # The twin's copy was written after the first and then given back: the file is as long as
    # both, and holds the blocks of one.
    assert os.stat(log).st_size == 2 * len(big) and os.stat(log).st_blocks * 512 <= len(big) + 4096
    done, _ = await core.uploads.put_chunk(first.session, 1, b"end")
    assert (await core.completion.complete(done)).result == digest_of(big + b"end")


# -- a byte quota counted in the read's round trip (open_chunk's `size`) ----------------------


def _count_round_trips(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every write to a Redis connection from now on, each a round trip (a pipeline sends all its
    commands in one). Counts, then calls through to redis-py's own method."""
    sent = [0]
    real = redis_connection.AbstractConnection.send_packed_command

    async def send(self, command, check_health=True):
        sent[0] += 1
        return await real(self, command, check_health)

    monkeypatch.setattr(redis_connection.AbstractConnection, "send_packed_command", send)
    return sent


async def _held(core, owner: str, session: chunks.UploadSession) -> int:
    return int(await core.redis.hget(core.keys.quota_bytes(owner), session.id) or 0)


async def _chunk(core, session, index: int, data: bytes, *, owner: str = "alice", total: int | None = None):
    read = await core.uploads.open_chunk(
        owner, session.id, index, total_chunks=total or session.total_chunks, content_type="image/jpeg", size=len(data)
    )
    return await core.uploads.store_chunk(read.session, index, data, read)


@pytest.fixture(params=["redis", "cluster"])
async def quota_core(request, redis_url, tmp_path):
    # On a Cluster the read and the count go at once (redis-py runs no scripts in a cluster's
    # pipeline): the same accounting must come out.
    url = request.getfixturevalue("redis_cluster").url if request.param == "cluster" else redis_url
    quotas = chunks.QuotaLimits(max_open_uploads=5, max_bytes_in_flight=3000)
    async with open_core(url, tmp_path, quota_limits=quotas, cluster=request.param == "cluster") as core:
        yield core


async def test_with_a_byte_quota_a_steady_chunk_still_takes_two_round_trips(redis_url, tmp_path, monkeypatch):
    # (On a Cluster the read and the count go at once, each on its node's connection.)
    quotas = chunks.QuotaLimits(max_open_uploads=5, max_bytes_in_flight=3000)
    async with open_core(redis_url, tmp_path, quota_limits=quotas) as core:
        session = await _opened(core)
        await core.uploads.put_chunk(session, 0, b"a" * 1000)
        sent = _count_round_trips(monkeypatch)
        stored = await _chunk(core, session, 1, b"b" * 1000)
        assert sent[0] == 2  # the read with the quota's count, then the record
        assert (stored.duplicate, stored.received) == (False, [0, 1])
        assert await _held(core, "alice", session) == 2000


async def test_a_chunk_counted_in_the_read_is_counted_once_and_given_back_when_not_stored(quota_core):
    core = quota_core
    session = await _opened(core)
    await _chunk(core, session, 0, b"a" * 1000)
    assert await _held(core, "alice", session) == 1000
    # The same bytes again: a duplicate, counted once.
    assert (await _chunk(core, session, 0, b"a" * 1000)).duplicate
    # Other bytes for it: a conflict, nothing more counted.
    with pytest.raises(chunks.ChunkConflict):
        await _chunk(core, session, 0, b"z" * 1000)
    # Another upload's shape, another user, an upload too large for the chunk: refused, given back.
    with pytest.raises(chunks.SessionConflict):
        await _chunk(core, session, 1, b"b" * 1000, total=5)
    with pytest.raises(chunks.UploadNotFound):
        await _chunk(core, session, 1, b"b" * 1000, owner="bob")
    assert int(await core.redis.hget(core.keys.quota_bytes("bob"), session.id) or 0) == 0
    assert await _held(core, "alice", session) == 1000
    # Past the quota: refused, nothing counted or stored; the bytes that fit still go.
    with pytest.raises(chunks.QuotaExceeded) as refused:
        await _chunk(core, session, 1, b"b" * 2500)
    assert refused.value.code == "too-many-bytes-in-flight"
    assert await _held(core, "alice", session) == 1000
    assert await core.uploads.chunk_records.indices(await core.uploads.get(session.id, "alice")) == [0]
    await _chunk(core, session, 1, b"b" * 2000)
    assert await _held(core, "alice", session) == 3000
    # At the quota, a resend of a stored chunk is still a duplicate, not a refusal.
    assert (await _chunk(core, session, 1, b"b" * 2000)).duplicate
    assert await _held(core, "alice", session) == 3000


async def test_a_chunk_the_upload_has_no_room_for_gives_its_count_back(redis_url, tmp_path):
    limits = chunks.UploadLimits(max_upload_bytes=1500, max_chunk_bytes=1000, expire_seconds=3600)
    quotas = chunks.QuotaLimits(max_open_uploads=5, max_bytes_in_flight=10_000)
    async with open_core(redis_url, tmp_path, limits=limits, quota_limits=quotas) as core:
        session = await _opened(core)
        await _chunk(core, session, 0, b"a" * 1000)
        with pytest.raises(chunks.UploadTooLarge):
            await _chunk(core, session, 1, b"b" * 1000)
        assert await _held(core, "alice", session) == 1000
