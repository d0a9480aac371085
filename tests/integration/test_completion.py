"""Completion against a real redis-server and real files: one finisher run per upload, its
outcome recorded, a refusal kept as a FAILED upload, any other failure leaving it to a retry."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

import chunks
from tests.support.core import digest_of, open_core


async def body_of(*blocks: bytes):
    for block in blocks:
        yield block


async def received_stream(core, data: bytes, **options) -> chunks.UploadSession:
    session = await core.uploads.open_stream("alice", length=len(data), **options)
    return await core.uploads.append(session.id, "alice", 0, body_of(data))


async def test_a_refused_upload_is_failed_with_the_finishers_message_and_code(redis_url, tmp_path):
    async def refuse(session, path):
        raise chunks.UploadRejected("not an image we take", code="unsupported-format")

    async with open_core(redis_url, tmp_path, finisher=refuse) as core:
        session = await core.uploads.open_chunked(
            "alice", file_name="a.jpg", content_type="image/jpeg", total_chunks=1, alias="name:a.jpg"
        )
        session, _ = await core.uploads.put_chunk(session, 0, b"not really a jpeg")
        failed = await core.completion.complete(session)

        assert failed.state == chunks.UploadState.FAILED
        assert (failed.error_code, failed.error_message) == ("unsupported-format", "not an image we take")
        assert (await core.uploads.get(session.id, "alice")).state == chunks.UploadState.FAILED
        assert not (tmp_path / "uploads" / session.id).exists()
        # A settled upload is answered as it stands, and its name is free for a new upload.
        assert (await core.completion.complete(failed)).error_code == "unsupported-format"
        again = await core.uploads.open_chunked(
            "alice", file_name="a.jpg", content_type="image/jpeg", total_chunks=1, alias="name:a.jpg"
        )
        assert again.id != session.id


async def test_a_finisher_crash_gives_the_claim_back_so_a_retry_completes(redis_url, tmp_path):
    attempts = []

    async def flaky(session, path):
        attempts.append(path.read_bytes())
        if len(attempts) == 1:
            raise OSError("the worker pool died")
        return {"version": "v2"}

    async with open_core(redis_url, tmp_path, finisher=flaky) as core:
        session = await received_stream(core, b"0123456789")
        with pytest.raises(OSError):
            await core.completion.complete(session)
        reopened = await core.uploads.get(session.id, "alice")
        assert reopened.state == chunks.UploadState.OPEN and reopened.all_received

        done = await core.completion.complete(reopened)
    assert done.state == chunks.UploadState.DONE and done.result == {"version": "v2"}
    assert attempts == [b"0123456789", b"0123456789"]


async def test_a_cancelled_completion_gives_the_claim_back(redis_url, tmp_path):
    started = asyncio.Event()

    async def stuck(session, path):
        started.set()
        await asyncio.Event().wait()  # the request is cancelled while the pipeline works
        return {}

    async with open_core(redis_url, tmp_path, finisher=stuck) as core:
        session = await received_stream(core, b"abc")
        task = asyncio.create_task(core.completion.complete(session))
        await asyncio.wait_for(started.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await core.uploads.get(session.id, "alice")).state == chunks.UploadState.OPEN


async def test_a_second_request_waits_for_the_first_ones_outcome(redis_url, tmp_path):
    release = asyncio.Event()
    calls = 0

    async def gated(session, path):
        nonlocal calls
        calls += 1
        await release.wait()
        return digest_of(path.read_bytes())

    async with open_core(redis_url, tmp_path, finisher=gated, wait_seconds=5) as core:
        session = await received_stream(core, b"payload")
        first = asyncio.create_task(core.completion.complete(session))
        second = asyncio.create_task(core.completion.complete(session))
        deadline = asyncio.get_running_loop().time() + 5
        while (await core.uploads.get(session.id, "alice")).state != chunks.UploadState.ASSEMBLING:
            assert asyncio.get_running_loop().time() < deadline, "nobody claimed the upload"
            await asyncio.sleep(0.01)
        assert not second.done()  # waiting for the outcome, not answering with a half-done upload
        release.set()
        outcomes = await asyncio.gather(first, second)
    assert calls == 1
    assert [o.result for o in outcomes] == [digest_of(b"payload")] * 2


async def test_a_waiter_gives_up_at_its_deadline_and_answers_the_upload_as_it_stands(redis_url, tmp_path):
    release = asyncio.Event()

    async def gated(session, path):
        await release.wait()
        return {}

    async with open_core(redis_url, tmp_path, finisher=gated, wait_seconds=0.2) as core:
        session = await received_stream(core, b"payload")
        first = asyncio.create_task(core.completion.complete(session))
        deadline = asyncio.get_running_loop().time() + 5
        while (await core.uploads.get(session.id, "alice")).state != chunks.UploadState.ASSEMBLING:
            assert asyncio.get_running_loop().time() < deadline, "nobody claimed the upload"
            await asyncio.sleep(0.01)
        waited = await asyncio.wait_for(core.completion.complete(session), 3)
        assert waited.state == chunks.UploadState.ASSEMBLING
        release.set()
        assert (await first).state == chunks.UploadState.DONE


async def test_unfinished_and_partial_uploads_are_returned_unchanged(core):
    unfinished = await core.uploads.open_stream("alice", length=10)
    unfinished = await core.uploads.append(unfinished.id, "alice", 0, body_of(b"01234"))
    partial = await received_stream(core, b"part", partial=True)

    for session in (unfinished, partial):
        assert (await core.completion.complete(session)).state == chunks.UploadState.OPEN
        assert (await core.uploads.get(session.id, "alice")).state == chunks.UploadState.OPEN


async def test_bytes_lost_from_storage_are_a_length_mismatch_and_the_upload_stays_open(core, tmp_path: Path):
    session = await received_stream(core, os.urandom(100))
    os.truncate(tmp_path / "uploads" / session.id / "data", 60)  # the disk lost the tail

    with pytest.raises(chunks.SessionConflict) as caught:
        await core.completion.complete(session)
    assert caught.value.code == "length-mismatch"
    assert (await core.uploads.get(session.id, "alice")).state == chunks.UploadState.OPEN


async def test_completing_a_concatenation_forgets_its_parts(core):
    ids = []
    for part in (b"one-", b"two"):
        ids.append((await received_stream(core, part, partial=True)).id)
    final = await core.uploads.concatenate("alice", ids)

    done = await core.completion.complete(final)

    assert done.result == digest_of(b"one-two")
    for part_id in ids:
        with pytest.raises(chunks.UploadGone):
            await core.uploads.get(part_id, "alice")


async def test_settling_releases_the_owners_quota(redis_url, tmp_path):
    limits = chunks.QuotaLimits(max_open_uploads=1)
    async with open_core(redis_url, tmp_path, quota_limits=limits) as core:
        session = await received_stream(core, b"first")
        with pytest.raises(chunks.QuotaExceeded):
            await core.uploads.open_stream("alice", length=5)
        await core.completion.complete(session)
        assert (await core.uploads.open_stream("alice", length=5)).state == chunks.UploadState.OPEN
