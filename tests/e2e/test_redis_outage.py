"""Redis unreachable: clear 503s with Retry-After, never a 500 or a hang; recovery without a restart."""

from __future__ import annotations

import time

import httpx

from server.redis_process import RedisProcess, free_port
from tests.support import images
from tests.support.encoding import b64

URL = "/accounts/profile-image"


def test_requests_answer_503_while_redis_is_down_and_succeed_after_it_returns(tmp_path_factory, start_server, token):
    root = tmp_path_factory.mktemp("outage")
    redis = RedisProcess(root / "redis", port=free_port())
    redis.start()
    server = start_server(root=root, redis_url=redis.url, redis={"socket_timeout": 1.0, "connect_timeout": 1.0})
    headers = {"Authorization": f"Bearer {token('outage-user')}"}
    body = {
        "file_name": "o.jpg",
        "file": b64(images.jpeg()),
        "content_type": "image/jpeg",
        "is_chunk": True,
        "chunk_index": 0,
        "total_chunks": 2,
    }
    try:
        with httpx.Client(base_url=server.url, headers=headers, timeout=10) as c:
            upload_id = c.post(URL, json=body).json()["upload_id"]
            redis.kill()
            started = time.monotonic()
            r = c.post(URL, json=body)
            assert r.status_code == 503 and r.json()["code"] == "store-unavailable"
            assert int(r.headers["retry-after"]) > 0
            assert time.monotonic() - started < 5
            assert c.get(f"{URL}/uploads/{upload_id}").status_code == 503
            assert c.get("/healthz").status_code == 503
            redis.start()  # the append-only file brings the session back
            deadline = time.monotonic() + 10
            while c.get("/healthz").status_code != 200:
                assert time.monotonic() < deadline, "server never reconnected to Redis"
                time.sleep(0.1)
            status = c.get(f"{URL}/uploads/{upload_id}").json()
            assert status["received_chunks"] == [0]
    finally:
        server.stop()  # before its Redis, as it always was
        redis.stop()


def test_embedded_redis_keeps_sessions_across_a_server_restart(tmp_path_factory, start_server, token):
    root = tmp_path_factory.mktemp("embedded")
    headers = {"Authorization": f"Bearer {token('embedded-user')}"}
    data = images.jpeg()
    half = len(data) // 2
    body = {"file_name": "e.jpg", "content_type": "image/jpeg", "is_chunk": True, "total_chunks": 2}
    server = start_server(root=root, redis_url="embedded", redis={"embedded_dir": str(root / "redis")})
    with httpx.Client(base_url=server.url, headers=headers) as c:
        upload_id = c.post(URL, json={**body, "file": b64(data[:half]), "chunk_index": 0}).json()["upload_id"]
    server.stop()  # SIGTERM: the app stops its redis-server, which flushes the append-only file
    assert (root / "redis" / "appendonly.aof").exists()
    server = start_server(root=root, config=server.config, port=server.port)
    with httpx.Client(base_url=server.url, headers=headers) as c:
        assert c.get(f"{URL}/uploads/{upload_id}").json()["received_chunks"] == [0]
        done = c.post(URL, json={**body, "file": b64(data[half:]), "chunk_index": 1}).json()
        assert done["complete"] is True
