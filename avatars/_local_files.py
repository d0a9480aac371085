"""The local avatar store's durable writes (avatars/store.py): whole files, synced before anything
names them."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from avatars._fallback import make_deferred


def make_kept(path: Path, entry: dict) -> int:
    """Make a rendition first asked for (a smaller WebP or a fallback) and keep it beside the
    version's other files; its length.

    Written to a temporary name and fsynced, then linked into place: a reader sees the whole file
    or none, and of concurrent first requests (threads or processes) the first link wins and the
    others serve it (they made the same bytes). The directory is not fsynced: a crash may forget
    the name, and the next request makes the file again.
    """
    data = make_deferred((path.parent / entry["deferred"]["from"]).read_bytes(), entry)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    write_durably(tmp, data)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.stat().st_size


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_durably(path: Path, data: bytes) -> None:
    with open(path, "xb") as fp:
        fp.write(data)
        fp.flush()
        os.fsync(fp.fileno())


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
