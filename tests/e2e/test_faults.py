"""Faults a real server process meets: a full disk, clients that vanish or trickle, racing
completions, SIGTERM mid-request, a dead embedded Redis. Each checks what a user would notice
and that nothing leaks (tasks, open files, Redis locks, counted by GET /debug/resources, a
test-only endpoint enabled by `server.debug_endpoints`).

The full disk is an injected ENOSPC at the chunk store's write boundary (`storage.fault_enospc_flag`,
a test-only setting: while the flag file exists, writes fail after their bytes went out, as a
full disk reports it); the real-filesystem variant, on a tiny tmpfs, runs where mount works.
"""

from __future__ import annotations

import concurrent.futures
import json
import select
import socket
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support import images
from tests.support.encoding import b64
from tests.support.server import ServerProcess
from tests.support.uploaders import centre_colour, close, marked_png

URL = "/accounts/profile-image"
TUS = {"Tus-Resumable": "1.0.0"}
OFFSET_STREAM = "application/offset+octet-stream"
pytestmark = pytest.mark.client(server="faulty", auth=True)


@pytest.fixture(scope="module")
def faulty(tmp_path_factory, start_module_server):
    root = tmp_path_factory.mktemp("faults")
    return start_module_server(
        root=root,
        server={"debug_endpoints": True},
        storage={"fault_enospc_flag": str(root / "disk-full")},
        limits={"min_body_bytes_per_second": 20_000, "body_rate_grace_seconds": 1.0},
        uploads={"completion_wait_seconds": 20},
    )


def uploads_dir(server: ServerProcess) -> Path:
    return Path(server.config["storage"]["root"]) / "uploads"


def resources(server: ServerProcess) -> dict:
    """Tasks, open files (less the Redis pool, which keeps its peak size by design) and locks."""
    counts = httpx.get(f"{server.url}/debug/resources", timeout=5).json()
    return {
        "tasks": counts["tasks"],
        "files": counts["open_files"] - counts["redis_connections"],
        "locks": counts["locks"],
    }


def steady(server: ServerProcess, deadline_seconds: float = 10.0) -> dict:
    """The resource counts once two readings in a row agree (the baseline to come back to)."""
    deadline = time.monotonic() + deadline_seconds
    last = resources(server)
    while time.monotonic() < deadline:
        now = resources(server)
        if now == last:
            return now
        last = now
    return last


def assert_back_to(server: ServerProcess, baseline: dict, deadline_seconds: float = 10.0) -> None:
    """Poll until tasks, open files and locks are back at the baseline (or fail with the last count)."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        now = resources(server)
        if now["tasks"] <= baseline["tasks"] and now["files"] <= baseline["files"] and now["locks"] == 0:
            return
        assert time.monotonic() < deadline, f"leaked: {now} (baseline {baseline})"
        time.sleep(0.05)


def chunk(part: bytes, index: int, total: int, name: str = "f.png", **extra) -> dict:
    return {
        "file_name": name,
        "file": b64(part),
        "content_type": "image/png",
        "is_chunk": True,
        "chunk_index": index,
        "total_chunks": total,
        **extra,
    }


def raw(server: ServerProcess, method: str, path: str, headers: dict[str, str], length: int) -> socket.socket:
    """A socket with the request head sent and `length` announced; the test sends the body."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {length}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return sock


def status_line(sock: socket.socket, timeout: float) -> str:
    ready, _, _ = select.select([sock], [], [], timeout)
    assert ready, "no answer in time"
    return sock.recv(65536).decode(errors="replace").split("\r\n", 1)[0]


def tus_create(client: httpx.Client, length: int) -> str:
    r = client.post("/files/", headers={**TUS, "Upload-Length": str(length)})
    assert r.status_code == 201
    return "/files/" + r.headers["location"].rsplit("/files/", 1)[1]


def tus_offset(client: httpx.Client, location: str) -> int:
    return int(client.head(location, headers=TUS).headers["upload-offset"])


# -- a full disk --------------------------------------------------------------------------------


def test_disk_full_is_507_and_leaves_session_avatar_and_disk_as_they_were(faulty, client, user):
    flag = Path(faulty.config["storage"]["fault_enospc_flag"])
    before = client.post(URL, json={"file_name": "old.jpg", "file": b64(images.jpeg()), "content_type": "image/jpeg"})
    version = before.json()["avatar"]["version"]
    data = marked_png((10, 200, 10))
    half = len(data) // 2
    upload_id = client.post(URL, json=chunk(data[:half], 0, 2)).json()["upload_id"]
    flag.touch()
    try:
        full = client.post(URL, json=chunk(data[half:], 1, 2))
    finally:
        flag.unlink()
    assert full.status_code == 507
    assert full.json()["code"] == "insufficient-storage"
    assert "/" not in full.json()["error"]  # no internal path in the answer (tusd #178)
    status = client.get(f"{URL}/uploads/{upload_id}").json()
    assert status["received_chunks"] == [0] and status["state"] == "open"
    assert client.get("/me/avatar").json()["version"] == version
    # The refused chunk's bytes were cut off the log again: it holds the first chunk alone.
    left = sorted((uploads_dir(faulty) / upload_id).iterdir())
    assert [p.name[:6] for p in left] == ["parts-"] and left[0].stat().st_size == half, left
    done = client.post(URL, json=chunk(data[half:], 1, 2))  # room again: the same chunk completes
    assert done.status_code == 200 and done.json()["complete"] is True


def test_disk_full_during_a_tus_patch_keeps_the_offset_and_the_file_at_the_last_acknowledged_byte(faulty, client):
    flag = Path(faulty.config["storage"]["fault_enospc_flag"])
    data = marked_png((200, 10, 10))
    location = tus_create(client, len(data))
    patch = {**TUS, "Content-Type": OFFSET_STREAM}
    assert client.patch(location, content=data[:10_000], headers={**patch, "Upload-Offset": "0"}).status_code == 204
    flag.touch()
    try:
        full = client.patch(location, content=data[10_000:40_000], headers={**patch, "Upload-Offset": "10000"})
    finally:
        flag.unlink()
    assert full.status_code == 507 and full.json()["code"] == "insufficient-storage"
    assert tus_offset(client, location) == 10_000
    stored = uploads_dir(faulty) / location.rsplit("/", 1)[1] / "data"
    assert stored.read_bytes() == data[:10_000]
    r = client.patch(location, content=data[10_000:], headers={**patch, "Upload-Offset": "10000"})
    assert r.status_code == 204 and int(r.headers["upload-offset"]) == len(data)


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    try:
        return (
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, timeout=10
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def test_a_really_full_filesystem_is_507_for_chunks_and_keeps_the_avatar(tmp_path_factory, start_server, token):
    """The same promise on a real, tiny filesystem (tmpfs; needs mount rights, else skipped)."""
    root = tmp_path_factory.mktemp("tmpfs")
    disk = root / "disk"
    if not _mount_tmpfs(disk, "3m"):
        pytest.skip("cannot mount a tmpfs here (needs root); the injected-ENOSPC tests cover this")
    server = None
    try:
        server = start_server(root=root, storage={"root": str(disk / "storage")})
        headers = {"Authorization": f"Bearer {token('tmpfs-user')}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as c:
            version = c.post(
                URL, json={"file_name": "a.jpg", "file": b64(images.jpeg()), "content_type": "image/jpeg"}
            ).json()["avatar"]["version"]
            data = marked_png((0, 0, 250), side=300)
            third = -(-len(data) // 3)
            upload_id = c.post(URL, json=chunk(data[:third], 0, 3)).json()["upload_id"]
            filler = disk / "filler"
            free = psutil.disk_usage(str(disk)).free
            filler.write_bytes(b"\0" * max(0, free - third // 2))  # room for half a chunk
            r = c.post(URL, json=chunk(data[third : 2 * third], 1, 3))
            assert r.status_code == 507 and r.json()["code"] == "insufficient-storage"
            assert c.get(f"{URL}/uploads/{upload_id}").json()["received_chunks"] == [0]
            assert c.get("/me/avatar").json()["version"] == version
            assert not [p for p in (disk / "storage" / "uploads" / upload_id).iterdir() if p.name.startswith(".tmp")]
            filler.unlink()
            for index in (1, 2):
                last = c.post(URL, json=chunk(data[index * third : (index + 1) * third], index, 3))
            assert last.status_code == 200 and last.json()["complete"] is True
    finally:
        if server is not None:
            server.stop()  # before the unmount
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=10)


# -- clients that vanish or trickle --------------------------------------------------------------


def test_a_client_gone_mid_chunk_leaves_no_partial_chunk_task_file_or_lock(faulty, client, auth):
    data = marked_png((0, 0, 200))
    upload_id = client.post(URL, json=chunk(data[:5000], 0, 2)).json()["upload_id"]
    body = json.dumps(chunk(data[5000:], 1, 2, upload_id=upload_id)).encode()

    def vanish() -> None:
        sock = raw(faulty, "POST", URL, {**auth, "Content-Type": "application/json"}, len(body))
        sock.sendall(body[: len(body) // 2])
        sock.close()

    vanish()  # warm up whatever a first request opens for good (connection pools)
    baseline = steady(faulty)
    for _ in range(10):
        vanish()
    assert_back_to(faulty, baseline)
    assert client.get(f"{URL}/uploads/{upload_id}").json()["received_chunks"] == [0]
    # Only the log holding chunk 0 is there: no temp file, nothing of the cut-off chunk.
    left = sorted((uploads_dir(faulty) / upload_id).iterdir())
    assert [p.name[:6] for p in left] == ["parts-"] and left[0].stat().st_size == 5000, left


def test_a_client_gone_mid_tus_patch_keeps_what_reached_the_disk(faulty, client, auth):
    baseline = steady(faulty)
    data = marked_png((200, 200, 0), side=400)
    location = tus_create(client, len(data))
    sent = 200_000
    sock = raw(
        faulty, "PATCH", location, {**auth, **TUS, "Content-Type": OFFSET_STREAM, "Upload-Offset": "0"}, len(data)
    )
    sock.sendall(data[:sent])
    deadline = time.monotonic() + 10
    while tus_offset(client, location) < sent:  # the server read all we sent, and keeps it
        assert time.monotonic() < deadline, "the bytes sent never counted"
        time.sleep(0.05)
    sock.close()
    assert_back_to(faulty, baseline)
    offset = tus_offset(client, location)
    assert offset == sent
    stored = uploads_dir(faulty) / location.rsplit("/", 1)[1] / "data"
    assert stored.read_bytes()[:offset] == data[:offset]
    r = client.patch(
        location, content=data[offset:], headers={**TUS, "Content-Type": OFFSET_STREAM, "Upload-Offset": str(offset)}
    )
    assert r.status_code == 204
    assert client.get(location).json()["state"] == "done"


def _trickle_until_answered(sock: socket.socket, payload: bytes, block: int = 500, pause: float = 0.1) -> str:
    """Send `payload` far below the minimum rate until the server answers; return its status line."""
    deadline = time.monotonic() + 15
    sent = 0
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], pause)
        if ready:
            return status_line(sock, 1)
        if sent < len(payload):
            try:
                sock.sendall(payload[sent : sent + block])
            except OSError:
                pass
            sent += block
    raise AssertionError("the slow body was never ended")


def test_a_chunk_body_slower_than_the_minimum_rate_ends_with_408(faulty, client, auth):
    baseline = steady(faulty)
    body = json.dumps(chunk(marked_png((1, 2, 3)), 0, 2, name="slow.png")).encode()
    sock = raw(faulty, "POST", URL, {**auth, "Content-Type": "application/json"}, len(body))
    started = time.monotonic()
    assert " 408 " in _trickle_until_answered(sock, body)
    assert time.monotonic() - started < 5
    sock.close()
    assert_back_to(faulty, baseline)


def test_a_tus_patch_slower_than_the_minimum_rate_ends_with_408_and_keeps_its_bytes(faulty, client, auth):
    baseline = steady(faulty)
    data = marked_png((3, 2, 1))
    location = tus_create(client, len(data))
    sock = raw(
        faulty, "PATCH", location, {**auth, **TUS, "Content-Type": OFFSET_STREAM, "Upload-Offset": "0"}, len(data)
    )
    assert " 408 " in _trickle_until_answered(sock, data)
    sock.close()
    assert_back_to(faulty, baseline)
    offset = tus_offset(client, location)
    assert 0 < offset < len(data)
    stored = uploads_dir(faulty) / location.rsplit("/", 1)[1] / "data"
    assert stored.read_bytes() == data[:offset]


# -- racing completions --------------------------------------------------------------------------


def test_many_requests_completing_one_upload_at_once_swap_the_avatar_exactly_once(faulty, client, user, auth):
    before = client.post(URL, json={"file_name": "old.jpg", "file": b64(images.jpeg()), "content_type": "image/jpeg"})
    old_version = before.json()["avatar"]["version"]
    data = marked_png((250, 0, 250))
    half = len(data) // 2
    upload_id = client.post(URL, json=chunk(data[:half], 0, 2)).json()["upload_id"]
    last = chunk(data[half:], 1, 2, upload_id=upload_id)

    def complete(_: int) -> httpx.Response:
        return httpx.post(f"{faulty.url}{URL}", json=last, headers=auth, timeout=30)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(complete, range(8)))
    assert [a.status_code for a in answers] == [200] * 8
    assert {a.json()["state"] for a in answers} == {"done"}, [a.json() for a in answers if a.json()["state"] != "done"]
    versions = {a.json()["avatar"]["version"] for a in answers}
    # One swap: every answer names the same new version (a second swap would name its own).
    assert len(versions) == 1 and old_version not in versions
    assert client.get("/me/avatar").json()["version"] == versions.pop()
    avatar = client.get(f"/avatars/{user}", params={"size": 64})
    assert close(centre_colour(avatar.content), (250, 0, 250))


# -- SIGTERM -------------------------------------------------------------------------------------


def test_sigterm_lets_an_in_flight_chunk_finish_and_stops_a_stuck_patch_at_a_consistent_offset(start_server, token):
    grace = 2
    server = start_server(server={"shutdown_grace_seconds": grace}, limits={"min_body_bytes_per_second": 0})
    headers = {"Authorization": f"Bearer {token('sigterm-user')}"}
    data = marked_png((20, 120, 220), side=400)
    half = len(data) // 2
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as c:
        location = tus_create(c, len(data))
    body = json.dumps(chunk(data[:half], 0, 2, name="term.png")).encode()
    chunk_sock = raw(server, "POST", URL, {**headers, "Content-Type": "application/json"}, len(body))
    chunk_sock.sendall(body[:1000])
    patch_sock = raw(
        server, "PATCH", location, {**headers, **TUS, "Content-Type": OFFSET_STREAM, "Upload-Offset": "0"}, len(data)
    )
    patch_sock.sendall(data[:100_000])  # and then nothing more: this one outlives the grace period
    assert server.process is not None
    started = time.monotonic()
    server.process.terminate()
    chunk_sock.sendall(body[1000:])
    assert " 200 " in status_line(chunk_sock, grace + 5)
    server.process.wait(grace + 10)
    assert time.monotonic() - started < grace + 5
    chunk_sock.close()
    patch_sock.close()

    restarted = start_server(root=server.workdir, config=server.config, port=server.port)
    with httpx.Client(base_url=restarted.url, headers=headers, timeout=30) as c:
        offset = tus_offset(c, location)
        assert offset <= 100_000
        stored = Path(server.config["storage"]["root"]) / "uploads" / location.rsplit("/", 1)[1] / "data"
        assert stored.read_bytes()[:offset] == data[:offset]
        r = c.patch(
            location,
            content=data[offset:],
            headers={**TUS, "Content-Type": OFFSET_STREAM, "Upload-Offset": str(offset)},
        )
        assert r.status_code == 204 and c.get(location).json()["state"] == "done"
        upload = c.post(URL, json=chunk(data[half:], 1, 2, name="term.png"))
        assert upload.json()["received_chunks"] == [0, 1]  # the chunk answered during shutdown is kept


# -- the embedded Redis dies -------------------------------------------------------------------


def test_the_app_restarts_its_embedded_redis_when_it_dies(tmp_path_factory, start_server, token):
    root = tmp_path_factory.mktemp("embedded-kill")
    server = start_server(
        root=root,
        redis_url="embedded",
        redis={"socket_timeout": 1.0, "connect_timeout": 1.0, "embedded_dir": str(root / "redis")},
    )
    headers = {"Authorization": f"Bearer {token('embedded-kill-user')}"}
    data = marked_png((90, 90, 250))
    half = len(data) // 2
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as c:
        upload_id = c.post(URL, json=chunk(data[:half], 0, 2)).json()["upload_id"]
        assert server.process is not None
        children = [p for p in psutil.Process(server.process.pid).children() if "redis" in p.name()]
        assert len(children) == 1
        children[0].kill()
        children[0].wait(5)
        seen = set()
        deadline = time.monotonic() + 15
        while True:
            started = time.monotonic()
            r = c.post(URL, json=chunk(data[half:], 1, 2, upload_id=upload_id))
            assert time.monotonic() - started < 5, "a request hung while Redis was down"
            seen.add(r.status_code)
            if r.status_code == 200:
                break
            assert r.status_code == 503 and int(r.headers["retry-after"]) > 0, r.text
            assert time.monotonic() < deadline, "the embedded Redis never came back"
            time.sleep(0.05)
        assert r.json()["complete"] is True  # the first chunk survived in the append-only file
        assert seen <= {200, 503}
        new = [p for p in psutil.Process(server.process.pid).children() if "redis" in p.name()]
        assert len(new) == 1 and new[0].pid != children[0].pid
        assert c.get("/healthz").status_code == 200
