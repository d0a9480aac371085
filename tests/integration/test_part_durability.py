"""How the local chunk store makes a JSON-API chunk's part durable (chunks/local_store.py
`LocalChunkStore._put_part`), on a real filesystem.

A power cut cannot be made here, so the first test spies on the three system calls that make a
new part survive one (calling through to the real ones) and checks their order: the data synced,
then the name given, then the directory synced. The second is what a crash can leave behind."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from chunks.local_store import LocalChunkStore
from chunks.session import new_upload_id


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_a_part_is_synced_then_named_then_its_directory_synced_before_put_part_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    store, upload_id, data = LocalChunkStore(tmp_path), new_upload_id(), os.urandom(300_000)
    calls: list[tuple[str, str]] = []

    def spy(name: str, real):  # records what each call was made on, then makes it
        def call(*args):
            if name == "replace":
                calls.append((name, Path(args[1]).name))
            else:
                kind = "dir" if stat.S_ISDIR(os.fstat(args[0]).st_mode) else "file"
                calls.append((name, kind))
            return real(*args)

        return call

    for name in ("fdatasync", "fsync", "replace"):
        monkeypatch.setattr(os, name, spy(name, getattr(os, name)))
    await store.put_part(upload_id, 3, data, sha256(data))
    monkeypatch.undo()

    part = f"part-000003-{sha256(data)}"
    assert calls == [("fdatasync", "file"), ("replace", part), ("fsync", "dir")]
    assert (tmp_path / "uploads" / upload_id / part).read_bytes() == data


async def test_leftovers_of_a_crash_never_stand_for_a_part(tmp_path: Path):
    store, upload_id, data = LocalChunkStore(tmp_path), new_upload_id(), os.urandom(200_000)
    directory = tmp_path / "uploads" / upload_id
    directory.mkdir(parents=True)
    # A temp file cut short, and a short file under the part's own name (what writing in place
    # would leave): the part stored now is whole, and it is what the upload is assembled from.
    (directory / ".tmp-000000-0123456789abcdef").write_bytes(data[:1000])
    (directory / f"part-000000-{sha256(data)}").write_bytes(data[:4096])

    await store.put_part(upload_id, 0, data, sha256(data))

    async with store.local_copy(upload_id, [(0, sha256(data))]) as path:
        assert path.read_bytes() == data
