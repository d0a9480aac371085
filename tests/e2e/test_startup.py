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


def test_redis_connections_and_scripts_are_ready_before_the_first_request(tmp_path):
    import httpx
    import redis

    from tests.support.config import API_KEY

    config = server_config(tmp_path, "embedded")
    config["redis"]["embedded_dir"] = str(tmp_path / "redis")
    server = ServerProcess(tmp_path, config).start(timeout=30)
    try:
        admin = redis.Redis(unix_socket_path=str(tmp_path / "redis" / "redis.sock"))
        assert admin.info("clients")["connected_clients"] >= 32  # opened at start, not by the first burst
        created = httpx.post(
            f"{server.url}/files/",
            headers={"Tus-Resumable": "1.0.0", "Upload-Length": "3", "X-Api-Key": API_KEY},
        )
        assert created.status_code == 201
        patched = httpx.patch(
            created.headers["location"],
            headers={
                "Tus-Resumable": "1.0.0",
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
                "X-Api-Key": API_KEY,
            },
            content=b"abc",
        )
        assert patched.status_code in (415, 422)  # not an image, but every byte taken
        # Every script the upload ran was loaded at start: none met NOSCRIPT on the way.
        assert "errorstat_NOSCRIPT" not in admin.info("errorstats")
        admin.close()
    finally:
        server.stop()
