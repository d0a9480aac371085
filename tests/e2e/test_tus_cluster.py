"""Two server processes sharing one Redis and one storage root; flaky clients; racing writers.

Uploads here are tus partial uploads where the bytes are what is checked: a partial upload is
never turned into an avatar, so its stored bytes stay on disk to compare with what was sent.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support import images
from tests.support.server import ServerProcess, StartServer
from tests.support.tus import TUS, create, eventually, head, patch, stored_bytes


@pytest.fixture(scope="module")
def pair(start_module_server: StartServer) -> tuple[ServerProcess, ServerProcess]:
    first = start_module_server()
    return first, start_module_server(root=first.workdir, config=first.config)


@pytest.fixture()
def storage(pair) -> Path:
    return Path(pair[0].config["storage"]["root"])


@pytest.fixture()
def clients(pair) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    with httpx.Client(base_url=pair[0].url, timeout=30) as a, httpx.Client(base_url=pair[1].url, timeout=30) as b:
        yield a, b


def on(client: httpx.Client, url: str) -> str:
    """The same upload URL, addressed to `client`'s server."""
    return str(client.base_url) + urlsplit(url).path


def trickle(data: bytes, block: int = 4096, pause: float = 0.01) -> Iterator[bytes]:
    """A slow network: the body arrives a block at a time."""
    for start in range(0, len(data), block):
        yield data[start : start + block]
        time.sleep(pause)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_client_switches_servers_mid_upload(clients, auth, storage):
    payload = os.urandom(120_000)
    a, b = clients
    url = create(a, auth, len(payload), **{"Upload-Concat": "partial"})
    offset = 0
    for i, start in enumerate(range(0, len(payload), 20_000)):
        client = (a, b)[i % 2]
        other = (b, a)[i % 2]
        assert int(head(other, on(other, url), auth).headers["upload-offset"]) == offset
        r = patch(client, on(client, url), auth, offset, payload[start : start + 20_000])
        assert r.status_code == 204, r.text
        offset = int(r.headers["upload-offset"])
    assert offset == len(payload)
    assert sha(stored_bytes(storage, url)) == sha(payload)


def test_an_image_uploaded_through_both_servers_becomes_the_avatar(clients, auth):
    image = images.jpeg(400, 300, colour=(90, 20, 160))
    a, b = clients
    url = create(a, auth, len(image))
    half = len(image) // 2
    assert patch(b, on(b, url), auth, 0, image[:half]).status_code == 204
    assert patch(a, on(a, url), auth, half, image[half:]).status_code == 204
    version = b.get(on(b, url), headers=auth).json()["avatar"]["version"]
    assert a.get("/me/avatar", headers=auth).json()["version"] == version


def test_racing_patches_store_exactly_the_sent_bytes(clients, auth, storage):
    payload = os.urandom(200_000)
    a, b = clients
    url = create(a, auth, len(payload), **{"Upload-Concat": "partial"})
    statuses: list[int] = []

    def send(client: httpx.Client) -> None:
        try:
            statuses.append(patch(client, on(client, url), auth, 0, trickle(payload)).status_code)
        except httpx.HTTPError:
            statuses.append(0)  # the server let go of this request mid-body

    racers = [threading.Thread(target=send, args=(c,)) for c in (a, b)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(30)
    assert set(statuses) <= {204, 409, 423, 0}, statuses
    # The client that lost learns the offset and sends the rest, as tus clients do.
    offset = int(head(a, url, auth).headers["upload-offset"])
    if offset < len(payload):
        assert patch(b, on(b, url), auth, offset, payload[offset:]).status_code == 204
    assert head(b, on(b, url), auth).headers["upload-offset"] == str(len(payload))
    assert sha(stored_bytes(storage, url)) == sha(payload)


def test_a_retry_takes_over_from_a_writer_stuck_on_a_dead_connection(clients, auth, storage):
    payload = os.urandom(150_000)
    a, b = clients
    url = create(a, auth, len(payload), **{"Upload-Concat": "partial"})
    slow = threading.Thread(target=lambda: _quietly(patch, a, url, auth, 0, trickle(payload, 2048, 0.02)))
    slow.start()
    data_file = storage / "uploads" / urlsplit(url).path.rsplit("/", 1)[-1] / "data"
    eventually(lambda: data_file.exists() and data_file.stat().st_size > 0, what="the slow writer to start")

    started = time.monotonic()
    answer = head(b, on(b, url), auth)
    assert time.monotonic() - started < 2.0  # the holder was asked to stop, not waited out
    offset = int(answer.headers["upload-offset"])
    assert 0 < offset < len(payload)
    assert patch(b, on(b, url), auth, offset, payload[offset:]).status_code == 204
    slow.join(30)
    assert sha(stored_bytes(storage, url)) == sha(payload)


def test_a_dropped_patch_keeps_every_byte_that_arrived(clients, auth, storage, pair):
    payload = os.urandom(100_000)
    a, b = clients
    url = create(a, auth, len(payload), **{"Upload-Concat": "partial"})
    path = urlsplit(url).path
    with socket.create_connection(("127.0.0.1", pair[0].port)) as raw:
        headers = {
            **auth,
            **TUS,
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": "0",
            "Content-Length": str(len(payload)),
            "Host": "127.0.0.1",
        }
        raw.sendall(
            f"PATCH {path} HTTP/1.1\r\n".encode()
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
            + b"\r\n"
            + payload[:60_000]
        )
        eventually(lambda: _size(storage, url) == 60_000, what="the first bytes to reach the disk")
    # The phone comes back on the other server and asks where to go on.
    offset = eventually(lambda: int(head(b, on(b, url), auth).headers["upload-offset"]), what="a recorded offset")
    assert offset == 60_000
    assert patch(b, on(b, url), auth, offset, payload[offset:]).status_code == 204
    assert sha(stored_bytes(storage, url)) == sha(payload)


def _size(storage: Path, url: str) -> int:
    try:
        return len(stored_bytes(storage, url))
    except FileNotFoundError:
        return 0


def _quietly(fn, *args) -> None:  # type: ignore[no-untyped-def]
    try:
        fn(*args)
    except httpx.HTTPError:
        pass
