"""Redis beyond one node and several processes: a Sentinel failover in the middle of an upload,
bad Sentinel and Cluster settings, and `server.workers` serving one upload from two processes.
(The protocol suites run against a Redis Cluster too: their `backends` mark, tests/conftest.py.)"""

from __future__ import annotations

import asyncio
import io
import secrets
import time

import httpx
import psutil
import pytest
import redis.asyncio as aioredis
from PIL import Image
from redis.exceptions import RedisError

import chunks
from chunks.hot_path import HotPath
from tests.support import images
from tests.support.config import server_config
from tests.support.redis_topologies import SERVICE, Node, SentinelSetup, wait_until
from tests.support.server import ServerProcess
from tests.support.tus import create, head, patch
from tests.support.workers import one_client_per_worker

COLOUR = (30, 160, 40)


def _sentinel_server(start_server, setup: SentinelSetup, **redis: object) -> ServerProcess:
    return start_server(
        redis_url=setup.master.url,
        redis={
            "mode": "sentinel",
            "sentinel": {"service_name": "avatars", "nodes": setup.nodes},
            "socket_timeout": 1.0,
            "connect_timeout": 1.0,
            **redis,
        },
    )


def _assert_avatar_is(client: httpx.Client, user: str, colour: tuple[int, int, int]) -> None:
    r = client.get(f"/avatars/{user}", params={"size": 128})
    assert r.status_code == 200, r.text
    pixel = Image.open(io.BytesIO(r.content)).convert("RGB").getpixel((64, 64))
    assert all(abs(a - b) < 12 for a, b in zip(pixel, colour, strict=True)), pixel


def _explain(setup: SentinelSetup, server: ServerProcess, r: httpx.Response) -> str:
    """For a failed assertion: the answer, each data node's role and whether it holds the upload's
    record (absent from both: lost, or wiped by a node that came back empty; present: the answer
    came from elsewhere), what each sentinel names as master, and the server's log."""
    upload_id = str(r.request.url).rsplit("/", 1)[-1]
    key = chunks.Keys(server.config["redis"]["key_prefix"]).session(upload_id)
    lines = [f"{r.request.method} {r.request.url} answered {r.status_code} {dict(r.headers)} {r.text[:300]}"]
    for name, node in (("replica", setup.replica), ("old master", setup.master)):
        try:
            with node.client() as c:
                role, held = c.info("replication")["role"], bool(c.exists(key))
            lines.append(f"{name} :{node.port}: {role}, record {'present' if held else 'absent'}")
        except RedisError as exc:
            lines.append(f"{name} :{node.port}: {exc}")
    for i, sentinel in enumerate(setup.sentinels):
        try:
            with sentinel.client() as c:
                state = c.sentinel_masters()[SERVICE]
            lines.append(f"sentinel {i}: master :{state['port']} flags {state['flags']}")
        except (RedisError, KeyError) as exc:
            lines.append(f"sentinel {i}: {exc!r}")
    return "\n".join([*lines, server.log()[-3000:]])


def _ride_out_failover(client: httpx.Client, url: str, auth: dict[str, str]) -> httpx.Response:
    """HEAD until the server answers anything but 503; every 503 on the way carries Retry-After."""
    unavailable = 0
    deadline = time.monotonic() + 60
    while True:
        r = head(client, url, auth)
        if r.status_code != 503:
            assert unavailable > 0, "the master was killed, yet no request noticed"
            return r
        assert int(r.headers["retry-after"]) > 0
        unavailable += 1
        assert time.monotonic() < deadline, "the sentinels never promoted the replica"
        time.sleep(0.1)


def _upload_across_failover(start_server, setup: SentinelSetup, auth, user, **redis: object) -> None:
    data = images.jpeg(320, 240, colour=COLOUR)
    half = len(data) // 2
    server = _sentinel_server(start_server, setup, **redis)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        url = create(client, auth, len(data))
        first = patch(client, url, auth, 0, data[:half])
        assert first.status_code == 204
        acknowledged = int(first.headers["upload-offset"])
        setup.master.kill()
        found = _ride_out_failover(client, url, auth)
        assert setup.master_port() == setup.replica.port
        if redis.get("wait_replicas"):
            # Everything acknowledged reached the replica that is master now.
            assert found.status_code == 200, _explain(setup, server, found)
            assert int(found.headers["upload-offset"]) == acknowledged, _explain(setup, server, found)
            # New changes wait for a replica again: the old master returns as one (with its data,
            # tests/support/redis_topologies.py says why).
            setup.master.start()
        elif found.status_code in (404, 410):
            return  # the session was lost with the master: the client starts again, told so
        assert found.status_code == 200, _explain(setup, server, found)
        assert int(found.headers["upload-offset"]) == acknowledged, _explain(setup, server, found)  # never another
        deadline = time.monotonic() + 60
        while (r := patch(client, url, auth, acknowledged, data[acknowledged:])).status_code == 503:
            assert int(r.headers["retry-after"]) > 0
            assert time.monotonic() < deadline, "writes never resumed after the failover"
            time.sleep(0.1)
            # A 503 may come after the change was stored (not yet on a replica): ask where we are.
            acknowledged = int(head(client, url, auth).headers.get("upload-offset", acknowledged))
        assert r.status_code == 204, _explain(setup, server, r)
        assert int(r.headers["upload-offset"]) == len(data)
        _assert_avatar_is(client, user, COLOUR)


def test_a_master_killed_mid_upload_loses_nothing_acknowledged_with_wait_replicas(
    start_server, redis_sentinel, auth, user
):
    _upload_across_failover(start_server, redis_sentinel, auth, user, wait_replicas=1, wait_timeout_seconds=0.5)


def test_without_wait_replicas_an_upload_continues_at_its_acknowledged_offset_or_is_gone(
    start_server, redis_sentinel, auth, user
):
    _upload_across_failover(start_server, redis_sentinel, auth, user)


def _fail_over(setup: SentinelSetup) -> bool:
    """Ask a sentinel for a failover now; False while it refuses (no replica it can promote yet)."""
    with setup.sentinels[0].client() as c:
        try:
            c.execute_command("SENTINEL", "FAILOVER", SERVICE)
        except RedisError:
            return False
    return True


def _replicates(node: Node) -> bool:
    with node.client() as c:
        info = c.info("replication")
    return info["role"] == "slave" and info.get("master_link_status") == "up"


def test_with_wait_replicas_an_upload_survives_a_failover_back_to_the_restarted_master(
    start_server, redis_sentinel, auth
):
    """The killed master returns and the sentinels promote it again, before it has copied anything
    from the master of the meantime (here asked for; on a loaded machine a fresh master thought
    down gets the same): what was acknowledged is still there, as the node came back with its data."""
    setup = redis_sentinel
    data = images.jpeg(320, 240, colour=COLOUR)
    server = _sentinel_server(start_server, setup, wait_replicas=1, wait_timeout_seconds=0.5)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        url = create(client, auth, len(data))
        first = patch(client, url, auth, 0, data[: len(data) // 2])
        assert first.status_code == 204
        acknowledged = int(first.headers["upload-offset"])
        setup.master.kill()
        wait_until(lambda: setup.master_port() == setup.replica.port, "the sentinels promote the replica", 60)
        setup.master.start()
        wait_until(lambda: _fail_over(setup), "a sentinel fails over to the returned master", 60)
        wait_until(lambda: setup.master_port() == setup.master.port, "the returned master is master again", 60)
        # The master of the meantime is made its replica, with its data (the server's connections
        # to it read from it until then).
        wait_until(lambda: _replicates(setup.replica), "the replica of old copies the returned master", 60)
        deadline = time.monotonic() + 60
        while (found := head(client, url, auth)).status_code == 503:
            assert time.monotonic() < deadline, "the server never found the master again"
            time.sleep(0.1)
        assert found.status_code == 200, _explain(setup, server, found)
        assert int(found.headers["upload-offset"]) == acknowledged, _explain(setup, server, found)


def _start_fails(tmp_path, **redis: object) -> str:
    config = server_config(tmp_path, "redis://127.0.0.1:1/0")
    config["redis"].update(redis)
    server = ServerProcess(tmp_path, config)
    try:
        server.start(timeout=30)
    except RuntimeError:
        pass
    else:
        raise AssertionError("the server started with a Redis it cannot use")
    lines = [line for line in server.log().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert server.process is not None and server.process.returncode == 2
    return lines[0]


def test_unreachable_sentinels_stop_startup_with_one_line(tmp_path):
    line = _start_fails(
        tmp_path,
        mode="sentinel",
        sentinel={"service_name": "avatars", "nodes": ["127.0.0.1:1", "127.0.0.1:2"]},
        connect_timeout=0.5,
    )
    assert line.startswith("error: redis.mode sentinel: cannot use 127.0.0.1:1, 127.0.0.1:2")


def test_a_node_that_is_not_in_a_cluster_stops_startup_with_one_line(tmp_path, redis_url):
    line = _start_fails(tmp_path, mode="cluster", url=redis_url)
    assert line.startswith(f"error: redis.mode cluster: cannot use {redis_url}")


def test_a_cluster_node_that_cannot_be_reached_stops_startup_with_one_line(tmp_path):
    line = _start_fails(tmp_path, mode="cluster", url="redis://127.0.0.1:1/0", connect_timeout=0.5)
    assert line.startswith("error: redis.mode cluster: cannot use redis://127.0.0.1:1/0")


def test_two_workers_share_one_embedded_redis_and_serve_one_upload_between_them(tmp_path, token):
    config = server_config(tmp_path, "embedded", server={"workers": 2, "debug_endpoints": True})
    config["redis"]["embedded_dir"] = str(tmp_path / "redis")
    server = ServerProcess(tmp_path, config).start()
    try:
        assert server.process is not None
        parent = psutil.Process(server.process.pid)
        clients = one_client_per_worker(server)
        first, second = clients.values()
        redis_servers = [p for p in parent.children() if p.name().startswith("redis-server")]
        assert len(redis_servers) == 1, "the embedded Redis is started once, by the parent"

        user = "workers-user"
        auth = {"Authorization": f"Bearer {token(user)}"}
        data = images.jpeg(320, 240, colour=COLOUR)
        third = len(data) // 3
        url = create(first, auth, len(data))
        assert patch(second, url, auth, 0, data[:third]).status_code == 204
        assert patch(first, url, auth, third, data[third : 2 * third]).status_code == 204
        assert int(head(second, url, auth).headers["upload-offset"]) == 2 * third
        assert patch(second, url, auth, 2 * third, data[2 * third :]).status_code == 204
        _assert_avatar_is(first, user, COLOUR)
        _assert_avatar_is(second, user, COLOUR)
        for client in clients.values():
            client.close()
        family = [parent, *parent.children(recursive=True)]
    finally:
        server.stop()
    wait_until(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in family), "all exit")


def test_with_wait_replicas_a_change_no_replica_confirms_is_not_acknowledged(redis_sentinel):
    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_sentinel.master.url)
        sessions = chunks.SessionStore(client, "wait", wait_replicas=1, wait_timeout_seconds=0.3)
        now = time.time()

        def session() -> chunks.UploadSession:
            return chunks.UploadSession(secrets.token_hex(8), "u", chunks.UploadKind.STREAM, now, now + 60)

        try:
            await sessions.create(session())  # the replica confirms it
            redis_sentinel.replica.kill()
            with pytest.raises(chunks.StoreUnavailable, match="0 of 1 Redis replicas"):
                await sessions.create(session())
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_with_wait_replicas_an_offset_no_replica_confirms_is_not_acknowledged(redis_sentinel):
    """The same for the changes a tus PATCH makes: its one-script append (HotPath.record) and the
    general update. (The failover test above cannot tell: on loopback a replica has every change
    before a SIGKILL lands, acknowledged or not, so it passes even when nothing waits.)"""

    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_sentinel.master.url)
        sessions = chunks.SessionStore(client, "wait", wait_replicas=1, wait_timeout_seconds=0.3)
        hot = HotPath(sessions, chunks.UploadLocks(client, "wait"))
        now = time.time()
        session = chunks.UploadSession(secrets.token_hex(8), "u", chunks.UploadKind.STREAM, now, now + 60)

        def advance(current: chunks.UploadSession) -> None:
            current.offset += 10

        try:
            await sessions.create(session)  # the replica confirms it
            async with hot.hold(session.id, "u", 1.0) as held:
                assert await hot.record(held, advance, release=False) is not None  # confirmed too
                redis_sentinel.replica.kill()
                with pytest.raises(chunks.StoreUnavailable, match="0 of 1 Redis replicas"):
                    await hot.record(held, advance, release=True)
            with pytest.raises(chunks.StoreUnavailable, match="0 of 1 Redis replicas"):
                await sessions.update(session.id, advance)
        finally:
            await client.aclose()

    asyncio.run(scenario())
