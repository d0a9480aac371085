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
