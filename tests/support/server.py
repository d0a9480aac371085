"""A real server process (`python -m server`) for end-to-end tests, with its own config file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from server.redis_process import free_port
from tests.support.config import server_config

ROOT = Path(__file__).resolve().parents[2]


class ServerProcess:
    def __init__(self, workdir: Path, config: dict[str, Any], port: int | None = None):
        self.workdir = workdir
        self.config = config
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.config_path = workdir / f"config-{self.port}.yaml"
        self.log_path = workdir / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config))
        env = {k: v for k, v in os.environ.items() if not k.startswith("AVS_")}
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "server", "--config", str(self.config_path), "--port", str(self.port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"server did not become healthy:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except FileNotFoundError:
            return ""

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to clean up."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None


StartServer = Callable[..., ServerProcess]


def server_starter(make_root: Callable[[], Path], shared_redis_url: str) -> Iterator[StartServer]:
    """Yield `start`, which starts a real server process (`python -m server`); stop them all after.

    start(root=, redis_url=, port=, config=, **sections): `root` is the server's work directory
    (a fresh one from `make_root` by default), `sections` override `server_config`'s, `redis_url`
    replaces the shared Redis (say "embedded" or a test's own RedisProcess). A restart passes the
    earlier server's `root`, `config` and `port`. Servers a test stopped or SIGKILLed itself are fine.
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
        root = root or make_root()
        if config is None:
            config = server_config(root, redis_url or shared_redis_url, **sections)
        process = ServerProcess(root, config, port=port)
        started.append(process)  # before start(): a server that fails to start is still stopped
        return process.start()

    yield start
    for process in reversed(started):
        process.stop()
