"""How the local chunk store makes a JSON-API chunk's part durable (chunks/part_log.py, through
`LocalChunkStore.put_part`), on a real filesystem.

A power cut cannot be made here, so the first test spies on the system calls that make a part
survive one (calling through to the real ones) and checks which ran before put_part returned.
The others check what a crash, a full disk or racing requests can leave behind."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import threading
from pathlib import Path

import pytest

import chunks
from chunks.local_store import LocalChunkStore
from chunks.part_log import parse_place
from chunks.session import new_upload_id


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest(data: bytes) -> asyncio.Future[str]:  # what put_part is handed: a digest it may await
    done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    done.set_result(sha256(data))
    return done


async def put(store: LocalChunkStore, upload_id: str, index: int, data: bytes) -> chunks.PartRef:
    return chunks.PartRef(index, sha256(data), len(data), await store.put_part(upload_id, index, data, digest(data)))


async def assembled(store: LocalChunkStore, upload_id: str, parts: list[chunks.PartRef]) -> bytes:
    async with store.local_copy(upload_id, parts) as path:
        return path.read_bytes()


async def test_a_part_is_synced_and_a_new_logs_name_too_before_put_part_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    store, upload_id = LocalChunkStore(tmp_path), new_upload_id()
    first, second = os.urandom(300_000), os.urandom(70_000)
    calls: list[tuple[str, str]] = []

    def spy(name: str, real):  # records what each call was made on, then makes it
        def call(fd: int):
            mode = os.fstat(fd).st_mode
            calls.append((name, "dir" if stat.S_ISDIR(mode) else "file"))
            return real(fd)

        return call

    for name in ("fdatasync", "fsync"):
        monkeypatch.setattr(os, name, spy(name, getattr(os, name)))
    one = await put(store, upload_id, 3, first)
    made = list(calls)
    calls.clear()
    two = await put(store, upload_id, 4, second)
    monkeypatch.undo()

    # The upload's directory and the log are new: both names synced (the uploads directory,
    # then the upload's), then the bytes. The next part in the same log syncs its bytes only.
    assert made == [("fsync", "dir"), ("fsync", "dir"), ("fdatasync", "file")]
    assert calls == [("fdatasync", "file")]
    log, offset = parse_place(two.place)
    assert parse_place(one.place) == (log, 0) and offset == len(first)
    assert (tmp_path / "uploads" / upload_id / log).read_bytes() == first + second
    assert await assembled(store, upload_id, [two, one]) == second + first


async def test_leftovers_of_a_crash_never_stand_for_a_part(tmp_path: Path):
    store, upload_id, data = LocalChunkStore(tmp_path), new_upload_id(), os.urandom(200_000)
    directory = tmp_path / "uploads" / upload_id
    directory.mkdir(parents=True)
    # What a killed process leaves: its own log with a torn write at the end, and a temp file of
    # the part files before logs. Neither is named by any record.
    (directory / "parts-0123456789ab-4242").write_bytes(data[:1000])
    (directory / ".tmp-000000-0123456789abcdef").write_bytes(data[:1000])

    kept = await put(store, upload_id, 0, data)
    log, offset = parse_place(kept.place)
    # A torn tail of this process's log after an acknowledged part (a write cut by the crash).
    with open(directory / log, "ab") as torn:
        torn.write(b"\0" * 777)
    after = await put(store, upload_id, 1, b"after the torn tail")

    assert log != "parts-0123456789ab-4242" and offset == 0
    assert parse_place(after.place) == (log, len(data) + 777)
    assert await assembled(store, upload_id, [kept, after]) == data + b"after the torn tail"


async def test_a_part_recorded_before_logs_is_read_from_its_own_file(tmp_path: Path):
    store, upload_id, data = LocalChunkStore(tmp_path), new_upload_id(), os.urandom(5000)
    directory = tmp_path / "uploads" / upload_id
    directory.mkdir(parents=True)
    (directory / f"part-000000-{sha256(data)}").write_bytes(data)  # as the earlier store wrote it
    new = await put(store, upload_id, 1, b"new")

    assert await assembled(store, upload_id, [chunks.PartRef(0, sha256(data), len(data)), new]) == data + b"new"


async def test_a_write_refused_by_a_full_disk_leaves_the_log_as_it_was(tmp_path: Path):
    flag = tmp_path / "disk-full"
    store, upload_id = LocalChunkStore(tmp_path, fault_enospc_flag=flag), new_upload_id()
    kept = await put(store, upload_id, 0, b"acknowledged")
    log = tmp_path / "uploads" / upload_id / parse_place(kept.place)[0]

    flag.touch()
    with pytest.raises(chunks.StorageFull):
        await put(store, upload_id, 1, os.urandom(100_000))
    assert log.read_bytes() == b"acknowledged"  # the refused bytes went out, and were cut off again
    flag.unlink()
    retried = await put(store, upload_id, 1, b"retried")

    assert parse_place(retried.place)[1] == len(b"acknowledged")
    assert await assembled(store, upload_id, [kept, retried]) == b"acknowledgedretried"


async def test_parts_appended_at_once_each_land_whole_at_a_place_of_their_own(tmp_path: Path):
    store, upload_id = LocalChunkStore(tmp_path), new_upload_id()
    parts = [os.urandom(size) for size in range(40_000, 40_000 + 24 * 997, 997)]

    refs = await asyncio.gather(*(put(store, upload_id, i, data) for i, data in enumerate(parts)))

    places = sorted(parse_place(ref.place)[1] for ref in refs)
    assert places == sorted({*places}) and len(places) == len(parts)
    assert await assembled(store, upload_id, list(refs)) == b"".join(parts)


async def test_a_part_whose_log_a_worker_is_appending_to_waits_in_a_worker_not_in_the_event_loop(tmp_path: Path):
    store, upload_id = LocalChunkStore(tmp_path), new_upload_id()
    first = await put(store, upload_id, 0, b"first")
    log = tmp_path / "uploads" / upload_id / parse_place(first.place)[0]
    # Held as a worker thread appending a large part to the same log holds it. Were the small
    # part's write to wait for it in the event loop, which is this thread, nothing would run again.
    with store._parts._lock(log):
        pending = asyncio.ensure_future(put(store, upload_id, 1, b"second"))
        for _ in range(20):
            await asyncio.sleep(0)  # the loop goes on turning while the part waits in a worker
        assert not pending.done()
    second = await asyncio.wait_for(pending, 10)
    assert await assembled(store, upload_id, [first, second]) == b"firstsecond"


async def test_a_dropped_place_gives_its_blocks_back_and_spares_its_neighbours(tmp_path: Path):
    store, upload_id = LocalChunkStore(tmp_path), new_upload_id()
    parts = [os.urandom(256 * 1024) for _ in range(3)]
    refs = [await put(store, upload_id, i, data) for i, data in enumerate(parts)]
    log = tmp_path / "uploads" / upload_id / parse_place(refs[0].place)[0]
    before = os.stat(log).st_blocks

    await store.drop_part(upload_id, refs[1])  # a racing twin's copy, say: recorded nowhere

    assert os.stat(log).st_size == 3 * 256 * 1024  # the places after it stay where they are
    assert before - os.stat(log).st_blocks >= 256 * 1024 // 512  # st_blocks counts 512-byte units
    assert await assembled(store, upload_id, [refs[0], refs[2]]) == parts[0] + parts[2]


async def test_a_log_holding_exactly_the_upload_in_order_is_read_as_it_is_not_copied(tmp_path: Path):
    store, upload_id = LocalChunkStore(tmp_path), new_upload_id()
    parts = [os.urandom(300_000), os.urandom(70_000), os.urandom(5)]  # a large part and small ones
    refs = [await put(store, upload_id, i, data) for i, data in enumerate(parts)]
    directory = tmp_path / "uploads" / upload_id

    async with store.local_copy(upload_id, refs) as path:
        assert path == directory / parse_place(refs[0].place)[0]  # the log itself
        assert path.read_bytes() == b"".join(parts)
        assert sorted(p.name for p in directory.iterdir()) == [path.name]  # no second copy on disk


async def test_a_part_stored_while_its_log_is_read_as_the_upload_goes_to_another_log(tmp_path: Path):
    # A late twin of a recorded chunk, stored by this process while the completer reads the log:
    # the file the image pipeline reads must stay exactly the upload, for a small part written
    # from the event loop and for a large one written in a worker thread alike.
    store, upload_id = LocalChunkStore(tmp_path), new_upload_id()
    parts = [os.urandom(70_000), os.urandom(70_000)]
    refs = [await put(store, upload_id, i, data) for i, data in enumerate(parts)]
    log = parse_place(refs[0].place)[0]

    async with store.local_copy(upload_id, refs) as path:
        assert path.name == log
        small, large = await put(store, upload_id, 0, b"twin"), await put(store, upload_id, 1, os.urandom(300_000))
        assert {parse_place(small.place)[0], parse_place(large.place)[0]} == {other := parse_place(small.place)[0]}
        assert other != log
        assert path.read_bytes() == b"".join(parts)
        assert await assembled(store, upload_id, [small]) == b"twin"  # stored whole all the same
    after = await put(store, upload_id, 0, b"later")
    assert parse_place(after.place) == (log, 140_000)  # read no longer: the log takes parts again


async def test_a_part_whose_log_was_sealed_while_it_waited_for_the_lock_goes_to_another_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # The race the check under the lock is for: a worker took the log's name, then the completer
    # sealed that log before the worker could append. Held at that point with an event.
    store, upload_id = LocalChunkStore(tmp_path), new_upload_id()
    parts = [os.urandom(1000), os.urandom(1000)]
    refs = [await put(store, upload_id, i, data) for i, data in enumerate(parts)]
    log = parse_place(refs[0].place)[0]
    named, go = threading.Event(), threading.Event()
    real_lock = store._parts._lock

    def lock(path: Path) -> threading.Lock:
        if threading.current_thread() is not threading.main_thread() and not go.is_set():
            named.set()
            go.wait(10)
        return real_lock(path)

    monkeypatch.setattr(store._parts, "_lock", lock)
    pending = asyncio.ensure_future(put(store, upload_id, 1, os.urandom(300_000)))  # a worker's append
    assert await asyncio.to_thread(named.wait, 10)
    async with store.local_copy(upload_id, refs) as path:
        assert path.name == log
        go.set()
        late = await asyncio.wait_for(pending, 10)
        assert parse_place(late.place)[0] != log
        assert path.read_bytes() == b"".join(parts)
    assert (
        await assembled(store, upload_id, [late])
        == (tmp_path / "uploads" / upload_id / parse_place(late.place)[0]).read_bytes()
    )


async def test_parts_not_laid_out_as_the_upload_in_one_log_are_copied(tmp_path: Path):
    store = LocalChunkStore(tmp_path)
    # Out of order, with a twin's copy after them, and with a part recorded before logs.
    cases = []
    upload_id = new_upload_id()
    second, first = await put(store, upload_id, 1, b"second"), await put(store, upload_id, 0, b"first")
    cases.append((upload_id, [first, second], b"firstsecond"))
    upload_id = new_upload_id()
    first, second = await put(store, upload_id, 0, b"first"), await put(store, upload_id, 1, b"second")
    await put(store, upload_id, 1, b"twin")
    cases.append((upload_id, [first, second], b"firstsecond"))
    upload_id = new_upload_id()
    (tmp_path / "uploads" / upload_id).mkdir(parents=True)
    (tmp_path / "uploads" / upload_id / f"part-000000-{sha256(b'old')}").write_bytes(b"old")
    cases.append((upload_id, [chunks.PartRef(0, sha256(b"old"), 3), await put(store, upload_id, 1, b"new")], b"oldnew"))

    for upload_id, refs, whole in cases:
        async with store.local_copy(upload_id, refs) as path:
            assert not path.name.startswith("parts-")
            assert path.read_bytes() == whole
