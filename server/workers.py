"""`server.workers: N`: N worker processes serving one port, from one `python -m server`.

The parent binds the listening sockets (one per child with SO_REUSEPORT, see
`listening_sockets`) and starts N children (`python -m server --worker-fd FD`), each a whole
server (its own event loop, image pool, reaper and sweeper) on its inherited socket; the kernel
spreads connections among them. The children share nothing
but Redis and `storage.root`, which is all an upload needs: any process serves any request.

An embedded Redis (`redis.url: embedded`) is started here, once, by the parent, and the
children get its URL through AVS_REDIS_URL: a redis-server per worker would be N separate
stores, each writing the same append-only file. The parent restarts a child or the Redis
that dies, and on SIGTERM/SIGINT stops the children (each finishes its requests), then Redis.
Children and Redis die with the parent if it is killed (PR_SET_PDEATHSIG, see redis_process).

Metrics: a scrape reaches one worker, so the children write their counts to a directory of
prometheus-client's multiprocess files (PROMETHEUS_MULTIPROC_DIR, see server/metrics.py) from
which any of them serves the whole server's. The directory is made fresh for each run (old
files would add a previous run's counts) and removed at exit; a worker that exits is marked dead
there, so the gauges summed over the live workers forget it while its counters still count.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from types import FrameType

from prometheus_client import multiprocess

from .redis_process import RedisProcess, die_with_parent
from .settings import Settings

log = logging.getLogger("server.workers")

_POLL_SECONDS = 0.5
# A worker's exit status when its start-up failed (the lifespan raised): a setting or a broken
# storage root, which starting it again would not fix, so the parent stops too.
STARTUP_FAILED = 3


def listening_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """One listening socket per worker, all on one port with SO_REUSEPORT where there is one.

    With a single shared socket, whichever worker wakes first accepts a whole burst of new
    connections (a load test opening 100 at once put nearly all on one worker, which ran at
    100 % of a core while the other idled). With a socket each, the kernel spreads connections
    evenly over them. Linux lets only processes of the same user join the port."""
    if not hasattr(socket, "SO_REUSEPORT") or count == 1:
        return [listening_socket(host, port)] * count
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sockets.append(listening_socket(host, port, reuse_port=True))
            port = sockets[0].getsockname()[1]  # port 0: the one the first socket was given
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class Supervisor:
    def __init__(self, settings: Settings, config_path: str | None) -> None:
        self.settings = settings
        self.config_path = config_path
        self.stopping = threading.Event()
        self.children: list[subprocess.Popen[bytes]] = []
        self.redis: RedisProcess | None = None
        self.metrics_dir = ""

    def run(self) -> int:
        self.metrics_dir = tempfile.mkdtemp(prefix="avs-metrics-")
        try:
            return self._run()
        finally:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def _run(self) -> int:
        server = self.settings.server
        env = dict(os.environ)
        env["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        if self.settings.redis.url == "embedded":
            self.redis = RedisProcess(self.settings.redis.embedded_dir)
            self.redis.spawn()  # on the main thread, which lives as long as this process
            self.redis.wait_ready()
            env["AVS_REDIS_URL"] = self.redis.url
            threading.Thread(target=self._watch_redis, name="embedded redis", daemon=True).start()
        socks = listening_sockets(server.host, server.port, server.workers)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        try:
            args = [sys.executable, "-m", "server", "--host", server.host, "--port", str(server.port)]
            if self.config_path:
                args += ["--config", self.config_path]
            self.children = [self._spawn(args, env, sock) for sock in socks]
            log.info("serving on %s:%d with %d workers", server.host, server.port, server.workers)
            while not self.stopping.wait(_POLL_SECONDS):
                for i, child in enumerate(self.children):
                    if child.poll() == STARTUP_FAILED:
                        log.error("worker %d could not start; stopping", i)
                        return 1
                    if child.poll() is not None and not self.stopping.is_set():
                        log.warning(
                            "worker %d (pid %d) exited with %s; starting another", i, child.pid, child.returncode
                        )
                        multiprocess.mark_process_dead(child.pid, self.metrics_dir)
                        self.children[i] = self._spawn(args, env, socks[i])
        finally:
            self._stop_children()
            for sock in set(socks):
                sock.close()
            if self.redis is not None:
                self.redis.stop()
        return 0

    def _spawn(self, args: list[str], env: dict[str, str], sock: socket.socket) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [*args, "--worker-fd", str(sock.fileno())],
            env=env,
            pass_fds=(sock.fileno(),),
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
        )

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping.set()

    def _stop_children(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        grace = self.settings.server.shutdown_grace_seconds + 5
        for child in self.children:
            try:
                child.wait(grace)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)
            multiprocess.mark_process_dead(child.pid, self.metrics_dir)

    def _watch_redis(self) -> None:
        """Restart the embedded Redis if it dies. This thread lives as long as the process, so
        the restarted redis-server, whose death signal is tied to it, still dies with us."""
        assert self.redis is not None
        while not self.stopping.wait(_POLL_SECONDS):
            if self.redis.process is not None and not self.redis.alive():
                log.warning("embedded redis-server died; restarting")
                try:
                    self.redis.spawn()
                    self.redis.wait_ready()
                except RuntimeError:
                    log.exception("embedded redis-server failed to restart")
