"""What every ChunkStore backend must do, run against each one in tests.support.core.BACKENDS.

Only the ChunkStore interface is used here, so a new backend (an object store) passes or fails
this same suite; what its bytes look like at rest is its own business.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import chunks
from chunks.session import new_upload_id
from tests.support.core import BACKENDS, chunk_store


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> chunks.ChunkStore:
    bucket = request.getfixturevalue("bucket") if request.param == "s3" else None
    return chunk_store(request.param, tmp_path, bucket)


@pytest.fixture()
def upload_id() -> str:
    return new_upload_id()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def blocks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def no_checkpoint(offset: int) -> None:
    return None


async def append(
    store: chunks.ChunkStore,
    upload_id: str,
    offset: int,
    body: AsyncIterator[bytes],
    *,
    limit: int = 1 << 30,
    checksum: chunks.Checksum | None = None,
) -> tuple[int, BaseException | None]:
    return await store.append(
        upload_id, offset, body, limit=limit, checksum=checksum, checkpoint=no_checkpoint, checkpoint_bytes=1 << 20
    )


async def copied(store: chunks.ChunkStore, upload_id: str, parts: list[chunks.PartRef] | None = None) -> bytes:
    async with store.local_copy(upload_id, parts) as path:
        return path.read_bytes()


async def put(store: chunks.ChunkStore, upload_id: str, index: int, data: bytes) -> chunks.PartRef:
    """Store a part as the core does: what to find it by, as its record in Redis would say."""
    digest = sha256(data)
    return chunks.PartRef(index, digest, len(data), await store.put_part(upload_id, index, data, ready(digest)))


def ready(digest: str) -> asyncio.Future[str]:  # what put_part is handed: a digest it may await
    done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    done.set_result(digest)
    return done


def sha1(data: bytes) -> chunks.Checksum:
    return chunks.Checksum("sha1", hashlib.sha1(data).digest())


# -- numbered parts ----------------------------------------------------------------------------


async def test_parts_are_joined_in_the_order_given(store, upload_id):
    parts = [os.urandom(3000) for _ in range(3)]
    refs = {index: await put(store, upload_id, index, parts[index]) for index in (2, 0, 1)}

    joined = await copied(store, upload_id, [refs[i] for i in range(3)])

    assert sha256(joined) == sha256(b"".join(parts))


async def test_parts_larger_than_a_copy_block_are_joined_byte_exact(store, upload_id):
    # Past the local store's 1 MiB copy block, with sizes that are no multiple of a page.
    parts = [os.urandom(n) for n in (1024 * 1024 + 4097, 1, 2 * 1024 * 1024 + 3)]
    refs = [await put(store, upload_id, index, part) for index, part in enumerate(parts)]

    joined = await copied(store, upload_id, refs)

    assert len(joined) == sum(map(len, parts)) and sha256(joined) == sha256(b"".join(parts))


async def test_a_part_with_another_digest_never_overwrites_the_first(store, upload_id):
    first, other = b"acknowledged bytes", b"a conflicting resend"
    kept = await put(store, upload_id, 0, first)
    resent = await put(store, upload_id, 0, other)

    assert await copied(store, upload_id, [kept]) == first
    assert await copied(store, upload_id, [resent]) == other


async def test_the_same_part_stored_twice_is_still_that_part(store, upload_id):
    once = await put(store, upload_id, 0, b"same")
    twice = await put(store, upload_id, 0, b"same")

    assert await copied(store, upload_id, [once]) == b"same"
    assert await copied(store, upload_id, [twice]) == b"same"


async def test_dropping_a_part_twice_is_fine_and_spares_the_others(store, upload_id):
    kept = await put(store, upload_id, 0, b"kept")
    dropped = await put(store, upload_id, 1, b"dropped")
    after = await put(store, upload_id, 2, b"after")

    await store.drop_part(upload_id, dropped)
    await store.drop_part(upload_id, dropped)

    assert await copied(store, upload_id, [kept, after]) == b"keptafter"


async def test_a_part_the_store_does_not_hold_is_file_not_found(store, upload_id):
    await put(store, upload_id, 0, b"kept")
    for missing in (chunks.PartRef(1, sha256(b"never"), 5), chunks.PartRef(1, sha256(b"never"), 5, "parts-ab-1@0")):
        with pytest.raises(FileNotFoundError):
            await copied(store, upload_id, [missing])


# -- streams -----------------------------------------------------------------------------------


async def test_a_new_stream_is_empty(store, upload_id):
    await store.create_stream(upload_id)

    assert await store.reconcile(upload_id, 0) == 0
    assert await copied(store, upload_id) == b""


async def test_appends_at_the_offset_build_up_the_stream(store, upload_id):
    data = os.urandom(50_000)
    await store.create_stream(upload_id)

    assert await append(store, upload_id, 0, blocks(data[:20_000])) == (20_000, None)
    assert await append(store, upload_id, 20_000, blocks(data[20_000:30_000], data[30_000:])) == (50_000, None)

    assert sha256(await copied(store, upload_id)) == sha256(data)


async def test_checkpoints_report_durable_offsets_as_the_body_arrives(store, upload_id):
    await store.create_stream(upload_id)
    seen: list[int] = []

    async def checkpoint(offset: int) -> None:
        seen.append(offset)

    written, _ = await store.append(
        upload_id,
        0,
        blocks(*[b"x" * 1000] * 10),
        limit=1 << 20,
        checksum=None,
        checkpoint=checkpoint,
        checkpoint_bytes=3000,
    )

    assert written == 10_000
    assert seen and seen == sorted(seen) and seen[-1] <= written
    assert all(b - a >= 3000 for a, b in zip([0, *seen], seen))


async def test_a_matching_checksum_appends(store, upload_id):
    await store.create_stream(upload_id)
    await append(store, upload_id, 0, blocks(b"first "))

    written, interrupted = await append(store, upload_id, 6, blocks(b"sec", b"ond"), checksum=sha1(b"second"))

    assert (written, interrupted) == (12, None)
    assert await copied(store, upload_id) == b"first second"


async def test_a_wrong_checksum_keeps_nothing_of_the_body(store, upload_id):
    await store.create_stream(upload_id)
    await append(store, upload_id, 0, blocks(b"first"))
    body = os.urandom(3 << 20)  # longer than any checkpoint interval

    with pytest.raises(chunks.ChecksumMismatch):
        await append(store, upload_id, 5, blocks(body[: 1 << 20], body[1 << 20 :]), checksum=sha1(b"other"))

    assert await store.reconcile(upload_id, 5) == 5
    assert await copied(store, upload_id) == b"first"


async def test_an_interrupted_body_keeps_what_arrived(store, upload_id):
    await store.create_stream(upload_id)

    async def dropped() -> AsyncIterator[bytes]:
        yield b"arrived"
        raise ConnectionResetError("client went away")

    written, interrupted = await append(store, upload_id, 0, dropped())

    assert written == 7 and isinstance(interrupted, ConnectionResetError)
    assert await copied(store, upload_id) == b"arrived"


async def test_an_interrupted_body_with_a_checksum_keeps_nothing(store, upload_id):
    await store.create_stream(upload_id)

    async def dropped() -> AsyncIterator[bytes]:
        yield b"hel"
        raise ConnectionResetError("client went away")

    written, interrupted = await append(store, upload_id, 0, dropped(), checksum=sha1(b"hello"))

    assert written == 0 and isinstance(interrupted, ConnectionResetError)
    assert await copied(store, upload_id) == b""


async def test_a_body_past_the_limit_stops_at_the_block_that_crosses_it(store, upload_id):
    await store.create_stream(upload_id)

    written, interrupted = await append(store, upload_id, 0, blocks(b"12345", b"67890"), limit=8)

    assert written == 5 and isinstance(interrupted, OverflowError)
    assert await copied(store, upload_id) == b"12345"


async def test_reconcile_cuts_bytes_past_the_recorded_offset(store, upload_id):
    await store.create_stream(upload_id)
    await append(store, upload_id, 0, blocks(b"0123456789"))

    assert await store.reconcile(upload_id, 6) == 6  # the last 4 bytes were never acknowledged

    assert await copied(store, upload_id) == b"012345"
    assert await append(store, upload_id, 6, blocks(b"ab")) == (8, None)
    assert await copied(store, upload_id) == b"012345ab"


async def test_reconcile_reports_a_shortfall_without_inventing_bytes(store, upload_id):
    await store.create_stream(upload_id)
    await append(store, upload_id, 0, blocks(b"short"))

    assert await store.reconcile(upload_id, 100) == 5
    assert await copied(store, upload_id) == b"short"


async def test_an_unknown_stream_holds_nothing(store, upload_id):
    assert await store.reconcile(upload_id, 10) == 0
    with pytest.raises(FileNotFoundError):
        await copied(store, upload_id)


async def test_concatenation_joins_streams_in_the_order_given(store):
    sources = {new_upload_id(): data for data in (b"one-", b"two-", b"three")}
    for source, data in sources.items():
        await store.create_stream(source)
        await append(store, source, 0, blocks(data))
    first, second, third = sources
    final = new_upload_id()

    assert await store.concatenate(final, [third, first, second]) == 13

    assert await copied(store, final) == b"threeone-two-"
    assert await copied(store, first) == b"one-"  # the sources stay until the final upload settles


# -- the rest ----------------------------------------------------------------------------------


async def test_discard_removes_every_byte_and_is_idempotent(store, upload_id):
    part = await put(store, upload_id, 0, b"part")
    await store.create_stream(upload_id)
    await append(store, upload_id, 0, blocks(b"stream"))

    await store.discard(upload_id)
    await store.discard(upload_id)
    await store.discard(new_upload_id())  # never stored anything

    assert await store.reconcile(upload_id, 6) == 0
    with pytest.raises(FileNotFoundError):
        await copied(store, upload_id, [part])


async def test_discarding_one_upload_leaves_the_others(store, upload_id):
    other = new_upload_id()
    for each in (upload_id, other):
        await store.create_stream(each)
        await append(store, each, 0, blocks(each.encode()))

    await store.discard(upload_id)

    assert await copied(store, other) == other.encode()


def test_features_are_store_features(store):
    assert isinstance(store.features, frozenset)
    assert all(isinstance(feature, chunks.StoreFeature) for feature in store.features)


async def test_a_discarded_upload_leaves_no_directory_on_local_disk(tmp_path, upload_id):
    store = chunks.LocalChunkStore(tmp_path)
    parted = new_upload_id()
    await put(store, parted, 0, b"part")
    await store.create_stream(upload_id)
    await append(store, upload_id, 0, blocks(b"stream"))

    for each in (upload_id, parted):
        await store.discard(each)

    assert os.listdir(tmp_path / "uploads") == []
