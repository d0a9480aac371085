"""Start-up that fails half-way leaves nothing running behind it."""

from __future__ import annotations

import psutil
import pytest

from tests.support.config import server_config
from tests.support.server import ServerProcess


def test_failed_startup_stops_the_embedded_redis_it_started(tmp_path):
    blocker = tmp_path / "storage-is-a-file"
    blocker.write_text("not a directory")
    config = server_config(tmp_path, "embedded")
    config["redis"]["embedded_dir"] = str(tmp_path / "redis")
    config["storage"]["root"] = str(blocker)  # building the storage fails after Redis is up
    server = ServerProcess(tmp_path, config)
    with pytest.raises(RuntimeError, match="server exited"):
        server.start(timeout=20)
    assert (tmp_path / "redis" / "redis.log").exists(), "the embedded Redis never started"
    leftovers = [
        p for p in psutil.process_iter(["cmdline"]) if str(tmp_path / "redis") in " ".join(p.info["cmdline"] or [])
    ]
    assert leftovers == []
