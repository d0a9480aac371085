"""Properties of the upload core, against the real core, a real redis-server and real files.

For any split of an upload into chunks, sent in any order, any number of times, with some
resends carrying other bytes: the assembled file is the first bytes acknowledged for each
index (the original, when those were right), and every contradicting resend is refused with a
clear ChunkConflict; nothing is silently replaced, lost or counted twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chunks
from tests.support.core import digest_of, open_core


@st.composite
def scenarios(draw):
    data = draw(st.binary(min_size=1, max_size=4000))
    total = draw(st.integers(min_value=1, max_value=min(12, len(data))))
    cuts = (
        sorted(draw(st.sets(st.integers(1, len(data) - 1), min_size=total - 1, max_size=total - 1)))
        if total > 1
        else []
    )
    bounds = [0, *cuts, len(data)]
    parts = [data[bounds[i] : bounds[i + 1]] for i in range(total)]
    # Every index at least once, some more than once, in any order; some sends carry other bytes.
    sends = draw(st.lists(st.integers(0, total - 1), max_size=3 * total)) + list(range(total))
    order = draw(st.permutations(sends))
    corrupt = draw(st.lists(st.booleans(), min_size=len(order), max_size=len(order)))
    return data, parts, list(zip(order, corrupt))


def _other(part: bytes) -> bytes:
    return bytes([part[0] ^ 0xFF]) + part[1:]


async def _run(redis_url: str, root, parts: list[bytes], sends: list[tuple[int, bool]]):
    async with open_core(redis_url, root) as built:
        core = built.uploads
        alias = f"name:{secrets.token_hex(4)}"
        session = await core.open_chunked(
            "prop", file_name="p.bin", content_type="image/png", total_chunks=len(parts), alias=alias
        )
        first: dict[int, bytes] = {}
        for index, corrupt in sends:
            body = _other(parts[index]) if corrupt else parts[index]
            try:
                session, duplicate = await core.put_chunk(session, index, body)
            except chunks.ChunkConflict:
                assert first[index] != body  # refused only because other bytes were acknowledged
                continue
            except chunks.SessionConflict as exc:
                assert exc.code == "upload-not-open"
                continue
            assert duplicate == (index in first)
            first.setdefault(index, body)
            assert first[index] == body
        session = await core.get(session.id, "prop")
        assert session.received_bytes == sum(len(b) for b in first.values())
        assert session.all_received
        done = await built.completion.complete(session)
        assert done.state == chunks.UploadState.DONE
        return first, done.result


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenario=scenarios())
def test_any_split_order_and_repetition_assembles_the_acknowledged_bytes(redis_url, tmp_path, scenario):
    data, parts, sends = scenario
    first, assembled = asyncio.run(_run(redis_url, tmp_path, parts, sends))
    assert assembled == digest_of(b"".join(first[i] for i in range(len(parts))))
    if all(first[i] == parts[i] for i in range(len(parts))):
        assert assembled["sha256"] == hashlib.sha256(data).hexdigest()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=1, max_size=2000), index=st.one_of(st.integers(max_value=-1), st.integers(min_value=3)))
def test_an_index_outside_the_upload_is_refused_clearly(redis_url, tmp_path, data, index):
    async def run() -> None:
        async with open_core(redis_url, tmp_path, limits=chunks.UploadLimits()) as built:
            core = built.uploads
            session = await core.open_chunked(
                "prop", file_name="p", content_type="image/png", total_chunks=3, alias="x"
            )
            try:
                await core.put_chunk(session, index, data)
            except chunks.InvalidRequest as exc:
                assert exc.code == "invalid-chunk-index"
            else:
                raise AssertionError("an index outside the upload was accepted")
            assert await core.chunk_records.indices(await core.get(session.id, "prop")) == []

    asyncio.run(run())
