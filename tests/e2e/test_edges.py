"""Hostile clients at the server's edges, against real server processes over raw sockets:
request heads too large or too slow, forged Host headers, anonymous floods, rate-limit window
boundaries, many large JSON bodies at once, a bounded Redis pool, router errors, and an
embedded redis-server that must die with its server."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import select
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest
import redis

from server.redis_process import RedisProcess, free_port
from tests.support import images
from tests.support.config import API_KEY
from tests.support.server import ServerProcess

URL = "/accounts/profile-image"
TUS = {"Tus-Resumable": "1.0.0"}


def _until(condition: Callable[[], bool], deadline_seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _answer(sock: socket.socket, deadline_seconds: float = 20.0) -> bytes:
    """Everything the server sends until it closes the connection (or the deadline passes)."""
    received = b""
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], 0.2)
        if not ready:
            continue
        try:
            block = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not block:
            return received
        received += block
    raise AssertionError(f"the connection was still open after {deadline_seconds}s; got {received[:200]!r}")


def _send_head(server: ServerProcess, head: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        sock.sendall(head)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server closed early: what the test then reads tells whether that was right
    return sock


def _refused_head(answer: bytes) -> None:
    """A 431 with the JSON shape, or (if the server closed before answering) nothing at all."""
    if answer:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 431"), head
        assert json.loads(body)["code"] == "headers-too-large"


# -- request heads --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def edge(start_module_server):
    return start_module_server(
        server={"header_timeout_seconds": 1, "max_header_bytes": 16384, "max_headers_total_bytes": 65536}
    )


def test_one_header_over_the_limit_is_431_and_the_server_goes_on(edge):
    sock = _send_head(edge, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
    with sock:
        _refused_head(_answer(sock))
    assert httpx.get(f"{edge.url}/healthz").status_code == 200


def test_many_headers_over_the_total_limit_are_431(edge):
    lines = b"".join(b"X-Part-%d: %s\r\n" % (i, b"b" * 8000) for i in range(10))
    with _send_head(edge, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + lines + b"\r\n") as sock:
        _refused_head(_answer(sock))


def test_an_endless_header_is_cut_off_before_it_ends(edge):
    sock = _send_head(edge, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Endless: ")
    with sock:
        sent, closed = 0, False
        # Up to 64 MiB, in 64 KiB writes: the server must close long before.
        while sent < 64 * 1024 * 1024:
            try:
                sock.sendall(b"c" * 65536)
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            sent += 65536
        assert closed, "64 MiB of one header were taken"
        assert sent < 4 * 1024 * 1024


def test_a_long_request_line_is_431(edge):
    with _send_head(edge, b"GET /" + b"p" * 20_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n") as sock:
        _refused_head(_answer(sock))


def test_headers_under_the_limits_are_served(edge):
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Fine: " + b"a" * 12_000 + b"\r\nConnection: close\r\n\r\n"
    with _send_head(edge, head) as sock:
        assert _answer(sock).startswith(b"HTTP/1.1 200")


def test_a_head_that_stalls_half_way_is_closed(edge):
    with _send_head(edge, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1\r\n") as sock:
        assert _answer(sock) == b""  # closed by the server, with nothing to say


def test_a_connection_that_never_sends_a_head_is_closed(edge):
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
        assert _answer(sock) == b""


def test_a_keep_alive_connection_serves_a_second_request_after_the_head_timeout(edge):
    """The head timer runs only while a head arrives, not while a client holds an idle connection
    for the next request (uvicorn's keep-alive timeout, 5 s, is its own)."""
    with httpx.Client(base_url=edge.url) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/healthz").status_code == 200


# -- the Host header ------------------------------------------------------------------------


def test_a_forged_host_gets_400_and_no_link(server, token):
    headers = {**TUS, "Upload-Length": "10", "Host": "evil.example", "Authorization": f"Bearer {token('host-user')}"}
    r = httpx.post(f"{server.url}/files/", headers=headers)
    assert r.status_code == 400
    assert r.json()["code"] == "host-not-allowed"
    assert "location" not in r.headers
    assert r.headers["tus-resumable"] == "1.0.0"


def test_localhost_and_the_listen_address_make_links(server, token):
    for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}"):
        headers = {**TUS, "Upload-Length": "10", "Host": host, "Authorization": f"Bearer {token('host-user-2')}"}
        r = httpx.post(f"{server.url}/files/", headers=headers)
        assert r.status_code == 201, r.text
        assert r.headers["location"].startswith(f"http://{host}/files/")


def test_a_configured_host_makes_links_and_others_are_refused(start_server, token):
    proxied = start_server(server={"allowed_hosts": ["avatars.example"]})
    auth = {"Authorization": f"Bearer {token('host-user-3')}"}
    r = httpx.post(f"{proxied.url}/files/", headers={**TUS, **auth, "Upload-Length": "10", "Host": "avatars.example"})
    assert r.status_code == 201
    assert r.headers["location"].startswith("http://avatars.example/files/")
    r = httpx.post(f"{proxied.url}/files/", headers={**TUS, **auth, "Upload-Length": "10"})
    assert r.status_code == 400  # 127.0.0.1 is no longer allowed once the list is given
    assert r.json()["code"] == "host-not-allowed"


def test_health_checks_answer_whatever_the_host(server):
    assert httpx.get(f"{server.url}/healthz", headers={"Host": "10.1.2.3:8000"}).status_code == 200


# -- router errors --------------------------------------------------------------------------


def test_an_unknown_path_is_json(server):
    r = httpx.get(f"{server.url}/no/such/path")
    assert r.status_code == 404
    assert r.json() == {"error": "Not Found", "code": "not-found"}


def test_a_wrong_method_is_json_with_allow(server):
    r = httpx.delete(f"{server.url}/healthz")
    assert r.status_code == 405
    assert r.json()["code"] == "method-not-allowed"
    assert "GET" in r.headers["allow"]


# -- rate limits ----------------------------------------------------------------------------


def test_anonymous_requests_are_limited_per_address(start_server, token):
    limited = start_server(limits={"anonymous_requests_per_window": 5, "rate_window_seconds": 60})
    with httpx.Client(base_url=limited.url) as client:
        guesses = [client.get(URL + "/uploads/x", headers={"X-Api-Key": f"guess-{i}"}) for i in range(5)]
        assert [r.status_code for r in guesses] == [401] * 5
        r = client.get(URL + "/uploads/x", headers={"X-Api-Key": "guess-6"})
        assert r.status_code == 429
        assert r.json()["code"] == "rate-limited"
        assert int(r.headers["retry-after"]) >= 1
        # Anonymous reads count the same; the right key still works: it is a user's request.
        assert client.get("/avatars/someone").status_code == 429
        assert client.get(URL + "/uploads/x", headers={"X-Api-Key": API_KEY}).status_code == 404
        assert client.get("/healthz").status_code == 200


def test_the_user_rate_cannot_double_across_a_window_boundary(start_server, token):
    """GCRA: after the burst is spent, requests come back one per window/limit seconds; a fixed
    window would let a whole new burst through at its boundary."""
    limited = start_server(limits={"requests_per_window": 10, "rate_window_seconds": 10})
    headers = {"Authorization": f"Bearer {token('rate-user')}"}
    with httpx.Client(base_url=limited.url, headers=headers) as client:

        def status() -> int:
            return client.get(URL + "/uploads/nothing").status_code

        assert [status() for _ in range(10)] == [404] * 10
        assert status() == 429
        assert _until(lambda: status() == 404), "the limit never let a request through again"
        burst = [status() for _ in range(10)]
    # Right after a request came back, at most one more per second of this burst may pass.
    assert burst.count(404) <= 5, burst


# -- many large JSON bodies at once ---------------------------------------------------------


def _chunk_body(upload_id: str) -> bytes:
    data = base64.b64encode(secrets.token_bytes(48 * 1024)).decode()
    document = {
        "file_name": f"{upload_id}.png",
        "content_type": "image/png",
        "file": data,
        "is_chunk": True,
        "chunk_index": 0,
        "total_chunks": 2,
        "upload_id": upload_id,
    }
    return json.dumps(document).encode()


def test_json_bodies_past_the_memory_budget_get_503_while_the_others_succeed(start_server, token):
    # Each ~66 KB body holds twice its size: two fit in 300 KB, a third does not.
    busy = start_server(
        limits={"max_chunk_bytes": 65536, "json_body_memory_budget": 300_000, "body_budget_wait_seconds": 0}
    )
    bearer = f"Bearer {token('budget-user')}"
    held: list[tuple[socket.socket, bytes]] = []
    for name in ("held-one", "held-two"):
        body = _chunk_body(name)
        head = (
            f"POST {URL} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {bearer}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        sock = _send_head(busy, head + body[:1000])
        held.append((sock, body))
    with httpx.Client(base_url=busy.url, headers={"Authorization": bearer}) as client:
        third: list[httpx.Response] = []

        def refused() -> bool:
            # Until both held requests have taken their share, the third may still fit.
            third.append(client.post(URL, content=_chunk_body(f"third-{len(third)}")))
            return third[-1].status_code == 503

        assert _until(refused), [r.status_code for r in third]
        assert third[-1].json()["code"] == "server-busy"
        assert int(third[-1].headers["retry-after"]) >= 1
        for sock, body in held:
            with sock:
                sock.sendall(body[1000:])
                ready, _, _ = select.select([sock], [], [], 30)
                answer = sock.recv(65536) if ready else b""
                assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
        # Their shares are given back: the next body is taken.
        assert client.post(URL, content=_chunk_body("after")).status_code == 200


# -- the Redis connection pool --------------------------------------------------------------


def test_the_redis_pool_is_bounded_and_requests_wait_for_a_connection(start_server, token, tmp_path):
    own = RedisProcess(tmp_path / "redis", port=free_port(), appendonly=False)
    own.start()
    try:
        bounded = start_server(redis_url=own.url, redis={"max_connections": 2, "pool_timeout_seconds": 10})
        headers = {"Authorization": f"Bearer {token('pool-user')}"}

        async def flood() -> list[int]:
            async with httpx.AsyncClient(base_url=bounded.url, headers=headers, timeout=60) as client:
                answers = await asyncio.gather(*(client.get(URL + f"/uploads/u{i}") for i in range(40)))
            return [r.status_code for r in answers]

        assert asyncio.run(flood()) == [404] * 40  # none a 503: they waited for a connection
        with redis.Redis.from_url(own.url) as probe:
            mine = probe.client_id()
            others = [c for c in probe.client_list() if int(c["id"]) != mine]
            assert len(others) <= 2, [(c["cmd"], c["age"], c["name"]) for c in others]
    finally:
        own.stop()


def test_a_pool_smaller_than_the_completions_at_once_serves_them_all(start_server, token, tmp_path):
    """Completing an upload changes its record in a WATCH transaction and writes an index on the
    side. Were the side write made while the transaction holds its connection, every transaction
    would need two, and as many completions at once as the pool has connections would wait on
    each other until the pool's timeout: every last chunk answered 503 (seen under W3 load)."""
    own = RedisProcess(tmp_path / "redis", port=free_port(), appendonly=False)
    own.start()
    try:
        bounded = start_server(redis_url=own.url, redis={"max_connections": 2, "pool_timeout_seconds": 4})
        photo = images.jpeg(96, 96, colour=(200, 40, 40))
        users = [f"pool-done-{i}" for i in range(12)]

        async def last_bytes_at_once() -> tuple[list[int], list[int]]:
            async with httpx.AsyncClient(base_url=bounded.url, timeout=60) as client:
                locations = []
                for user in users[:6]:  # tus: all but the last byte, one upload at a time
                    auth = {**TUS, "Authorization": f"Bearer {token(user)}"}
                    created = await client.post("/files/", headers={**auth, "Upload-Length": str(len(photo))})
                    patch = {**auth, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
                    assert (
                        await client.patch(created.headers["location"], headers=patch, content=photo[:-1])
                    ).status_code == 204
                    locations.append((created.headers["location"], auth))
                for user in users[6:]:  # the JSON chunk API: the first of two chunks
                    first = {
                        "file_name": "me.jpg",
                        "file": base64.b64encode(photo[:100]).decode(),
                        "is_chunk": True,
                        "chunk_index": 0,
                        "total_chunks": 2,
                        "content_type": "image/jpeg",
                    }
                    answer = await client.post(URL, json=first, headers={"Authorization": f"Bearer {token(user)}"})
                    assert answer.status_code == 200, answer.text
                last_patches = [
                    client.patch(
                        url,
                        headers={
                            **auth,
                            "Content-Type": "application/offset+octet-stream",
                            "Upload-Offset": str(len(photo) - 1),
                        },
                        content=photo[-1:],
                    )
                    for url, auth in locations
                ]
                last_chunks = [
                    client.post(
                        URL,
                        json={
                            "file_name": "me.jpg",
                            "file": base64.b64encode(photo[100:]).decode(),
                            "is_chunk": True,
                            "chunk_index": 1,
                            "total_chunks": 2,
                            "content_type": "image/jpeg",
                        },
                        headers={"Authorization": f"Bearer {token(user)}"},
                    )
                    for user in users[6:]
                ]
                answers = await asyncio.gather(*last_patches, *last_chunks)
            return [a.status_code for a in answers[:6]], [a.status_code for a in answers[6:]]

        patched, posted = asyncio.run(last_bytes_at_once())
        assert patched == [204] * 6 and posted == [200] * 6, (patched, posted)
        for user in users:  # and each is its user's avatar
            got = httpx.get(f"{bounded.url}/avatars/{user}", params={"size": 64})
            assert got.status_code == 200, (user, got.status_code)
    finally:
        own.stop()


# -- the embedded redis-server --------------------------------------------------------------


def _redis_children(server: ServerProcess) -> list[psutil.Process]:
    assert server.process is not None
    children = psutil.Process(server.process.pid).children(recursive=True)
    return [c for c in children if "redis-server" in c.name()]


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_sigkilled_server_leaves_no_redis_server(start_server, tmp_path):
    root = tmp_path / "embedded"
    first = start_server(root=root, redis_url="embedded", redis={"embedded_dir": str(root / "redis")})
    (child,) = _redis_children(first)
    first.kill()
    assert _until(lambda: _gone(child.pid)), "the embedded redis-server outlived its server"
    again = start_server(root=root, config=first.config, port=first.port)
    assert httpx.get(f"{again.url}/healthz").json()["redis"] is True


def test_a_new_start_stops_a_left_over_redis_server(start_server, tmp_path):
    root = tmp_path / "leftover"
    leftover = RedisProcess(root / "redis")
    leftover.start()  # as a server that crashed without its death signal would have left it
    old_pid = leftover.process.pid
    try:
        fresh = start_server(root=root, redis_url="embedded", redis={"embedded_dir": str(root / "redis")})
        assert _until(lambda: _gone(old_pid)), "two redis-servers share one data directory"
        assert httpx.get(f"{fresh.url}/healthz").json()["redis"] is True
        (child,) = _redis_children(fresh)
        assert Path(root / "redis" / "redis.pid").read_text().strip() == str(child.pid)
    finally:
        if leftover.process is not None and leftover.process.poll() is None:
            os.kill(old_pid, signal.SIGKILL)
        leftover.process.wait(10)


# -- the JWT secret -------------------------------------------------------------------------


def test_a_short_jwt_secret_stops_the_server_at_start(start_server):
    with pytest.raises(RuntimeError) as failed:
        start_server(auth={"jwt_secret": "too-short-secret"})
    assert "needs at least 32" in str(failed.value)
