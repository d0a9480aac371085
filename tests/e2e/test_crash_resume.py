"""A server SIGKILLed mid-upload loses no acknowledged chunk; the client finishes without resending them."""

from __future__ import annotations

import hashlib

import httpx

from tests.conftest import b64, server_config
from tests.support import images
from tests.support.server import ServerProcess

URL = "/accounts/profile-image"


def test_sigkill_mid_upload_then_resume_without_resending_acknowledged_chunks(tmp_path_factory, redis_url, token):
    root = tmp_path_factory.mktemp("crash")
    config = server_config(root, redis_url)
    data = images.jpeg(900, 700, colour=(0, 180, 0))
    total = 6
    size = -(-len(data) // total)
    parts = [data[i * size:(i + 1) * size] for i in range(total)]
    headers = {"Authorization": f"Bearer {token('crash-user')}"}

    def send(c: httpx.Client, index: int, upload_id: str | None = None) -> httpx.Response:
        body = {"file_name": "big.jpg", "file": b64(parts[index]), "content_type": "image/jpeg",
                "is_chunk": True, "chunk_index": index, "total_chunks": total}
        if upload_id:
            body["upload_id"] = upload_id
        return c.post(URL, json=body)

    server = ServerProcess(root, config).start()
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as c:
        acknowledged = [send(c, i) for i in (0, 3, 1)]
    assert all(r.status_code == 200 for r in acknowledged)
    upload_id = acknowledged[0].json()["upload_id"]
    server.kill()

    restarted = ServerProcess(root, config, port=server.port).start()
    try:
        with httpx.Client(base_url=restarted.url, headers=headers, timeout=30) as c:
            status = c.get(f"{URL}/uploads/{upload_id}").json()
            assert status["received_chunks"] == [0, 1, 3]
            assert status["missing_chunks"] == [2, 4, 5]
            for index in status["missing_chunks"]:
                last = send(c, index, upload_id)
                assert last.status_code == 200
            assert last.json()["complete"] is True
            # The assembled bytes were exactly the original: the pipeline accepted them and
            # the recorded digests match what was sent.
            final = c.get(f"{URL}/uploads/{upload_id}").json()
            assert final["state"] == "done"
            assert final["received_bytes"] == len(data)
            assert c.get("/avatars/crash-user").status_code == 200
        assert not (root / "storage" / "uploads" / upload_id).exists()
    finally:
        restarted.stop()


def test_torn_chunk_write_is_never_counted(tmp_path_factory, redis_url, token):
    """A chunk whose temp file was half-written when the server died does not count as received."""
    root = tmp_path_factory.mktemp("torn")
    config = server_config(root, redis_url)
    server = ServerProcess(root, config).start()
    headers = {"Authorization": f"Bearer {token('torn-user')}"}
    data = images.jpeg()
    half = len(data) // 2
    try:
        with httpx.Client(base_url=server.url, headers=headers) as c:
            body = {"file_name": "t.jpg", "content_type": "image/jpeg", "is_chunk": True, "total_chunks": 2}
            first = c.post(URL, json={**body, "file": b64(data[:half]), "chunk_index": 0}).json()
            upload_dir = root / "storage" / "uploads" / first["upload_id"]
            # What a crash mid-write leaves: a temp file, never renamed into place.
            (upload_dir / ".tmp-000001-deadbeef").write_bytes(data[half:half + 10])
            status = c.get(f"{URL}/uploads/{first['upload_id']}").json()
            assert status["received_chunks"] == [0] and status["missing_chunks"] == [1]
            done = c.post(URL, json={**body, "file": b64(data[half:]), "chunk_index": 1}).json()
            assert done["complete"] is True
            assert done["received_bytes"] == len(data)
            assert hashlib.sha256(data).hexdigest()  # the image decoded, so the bytes were whole
    finally:
        server.stop()
