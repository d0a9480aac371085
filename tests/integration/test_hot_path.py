"""The two-round-trip append (chunks/hot_path.py) against a real redis-server: what it records is
what the general path would, a change made by someone else meanwhile is never overwritten, and
the lock is free again when the append answers."""

from __future__ import annotations

import chunks


async def body_of(*blocks: bytes):
    for block in blocks:
        yield block


def _calls(info: dict, command: str) -> int:
    return int(info.get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_a_steady_append_takes_two_scripts_and_no_transaction(core):
    session = await core.uploads.open_stream("alice", length=30)
    await core.uploads.append(session.id, "alice", 0, body_of(b"a" * 10))
    before = await core.redis.info("commandstats")
    done = await core.uploads.append(session.id, "alice", 10, body_of(b"b" * 10))
    after = await core.redis.info("commandstats")
    assert done.offset == 20
    assert _calls(after, "evalsha") - _calls(before, "evalsha") == 2
    for command in ("watch", "multi", "exec"):
        assert _calls(after, command) == _calls(before, command), command
    assert (await core.uploads.get(session.id, "alice")).offset == 20
    assert await core.redis.get(core.keys.lock(session.id)) is None


async def test_a_change_made_while_an_append_holds_the_lock_is_kept(core):
    session = await core.uploads.open_stream("alice", length=20)

    async def body():
        yield b"x" * 5

        # Another process changes the record (as a completion sweeper or an operator would)
        # while this append holds the upload: the append must not write its stale copy back.
        def mark(current: chunks.UploadSession) -> None:
            current.metadata["changed"] = "meanwhile"

        await core.uploads.sessions.update(session.id, mark)
        yield b"y" * 5

    done = await core.uploads.append(session.id, "alice", 0, body())
    stored = await core.uploads.get(session.id, "alice")
    assert done.offset == stored.offset == 10
    assert stored.metadata == {"changed": "meanwhile"}
    assert await core.redis.get(core.keys.lock(session.id)) is None


async def test_a_foreign_or_unknown_id_is_refused_as_before(core):
    session = await core.uploads.open_stream("alice", length=10)
    for owner, upload_id in (("mallory", session.id), ("alice", "A" * 32)):
        try:
            await core.uploads.append(upload_id, owner, 0, body_of(b"z" * 10), lock_wait=0.2)
        except chunks.UploadNotFound:
            pass
        else:
            raise AssertionError(f"{owner} appended to {upload_id}")
    assert (await core.uploads.get(session.id, "alice")).offset == 0
    assert await core.redis.get(core.keys.lock(session.id)) is None


async def test_the_append_that_completes_an_upload_claims_it_in_its_own_record(core):
    # One upload completed first, so every script is loaded before the one counted below.
    first = await core.uploads.open_stream("alice", length=1)
    await core.completion.complete(await core.uploads.append(first.id, "alice", 0, body_of(b"z")))
    session = await core.uploads.open_stream("alice", length=20)
    await core.uploads.append(session.id, "alice", 0, body_of(b"a" * 10))
    token = chunks.claim_token()
    before = await core.redis.info("commandstats")
    last = await core.uploads.append(session.id, "alice", 10, body_of(b"b" * 10), claim_as=token)
    assert last.state == chunks.UploadState.ASSEMBLING and last.claimed_by == token
    stored = await core.uploads.get(session.id, "alice")
    assert (stored.state, stored.claimed_by) == (chunks.UploadState.ASSEMBLING, token)
    done = await core.completion.complete(last, claimed_as=token)
    after = await core.redis.info("commandstats")
    assert done.state == chunks.UploadState.DONE
    # The append's two scripts, then the settle's compare-and-set (no read: it assumes the record
    # its claim wrote) and the settled set's script; no claim transaction of its own.
    assert _calls(after, "evalsha") - _calls(before, "evalsha") == 4
    for command in ("watch", "multi", "exec"):
        assert _calls(after, command) == _calls(before, command), command
    assert await core.uploads.sessions.completable(10) == []


async def test_only_the_holder_of_the_token_completes_a_claimed_upload(core):
    session = await core.uploads.open_stream("alice", length=4)
    last = await core.uploads.append(session.id, "alice", 0, body_of(b"abcd"), claim_as=chunks.claim_token())
    # Someone else's token (or none) finds a live claim: it waits for the holder, which here
    # never comes, and gets the upload as it stands instead of completing it a second time.
    core.completion._wait_seconds = 0.2
    for other in ("", chunks.claim_token()):
        assert (await core.completion.complete(last, claimed_as=other)).state == chunks.UploadState.ASSEMBLING


async def test_an_append_that_does_not_finish_the_upload_claims_nothing(core):
    session = await core.uploads.open_stream("alice", length=20)
    half = await core.uploads.append(session.id, "alice", 0, body_of(b"a" * 10), claim_as=chunks.claim_token())
    assert (half.state, half.claimed_by) == (chunks.UploadState.OPEN, "")

    async def cut_after_the_last_byte():
        yield b"b" * 10
        raise ConnectionResetError("the client went away")

    try:
        await core.uploads.append(session.id, "alice", 10, cut_after_the_last_byte(), claim_as=chunks.claim_token())
    except ConnectionResetError:
        pass
    else:
        raise AssertionError("the interruption was swallowed")
    # Every byte is in, but the request failed: left for the sweeper, not claimed by a request
    # that will never complete it.
    stored = await core.uploads.get(session.id, "alice")
    assert (stored.offset, stored.state, stored.claimed_by) == (20, chunks.UploadState.OPEN, "")
    assert await core.uploads.sessions.completable(10) == [session.id]


async def test_a_stale_assumed_record_costs_a_read_never_a_change(core):
    session = await core.uploads.open_stream("alice", length=20)

    def mark(key: str):
        def change(current: chunks.UploadSession) -> None:
            current.metadata[key] = "set"

        return change

    await core.uploads.sessions.update(session.id, mark("first"))
    # `session` is the record from before that change: assuming it must not write it back.
    updated, _ = await core.uploads.sessions.update(session.id, mark("second"), assume=session)
    stored = await core.uploads.get(session.id, "alice")
    assert updated.metadata == stored.metadata == {"first": "set", "second": "set"}
