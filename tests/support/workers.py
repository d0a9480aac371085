"""A server's worker processes: its image workers, found with psutil (tests kill them or wait for
them), and, with `server.workers`, a client kept on each serving worker."""

from __future__ import annotations

import time

import httpx
import psutil

from tests.support.server import ServerProcess


def image_workers(server: ServerProcess) -> list[psutil.Process]:
    """The server's image worker processes: children of its forkserver."""
    assert server.process is not None
    workers = []
    for child in psutil.Process(server.process.pid).children():
        if "forkserver" in " ".join(child.cmdline()):
            workers += child.children()
    return workers


def busy_worker(server: ServerProcess, cpu_seconds: float = 1.0, deadline: float = 60.0) -> psutil.Process:
    """Poll until an image worker has used `cpu_seconds` (a job under way, past its start-up)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        for worker in image_workers(server):
            try:
                if sum(worker.cpu_times()[:2]) >= cpu_seconds:
                    return worker
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.05)
    raise AssertionError("no image worker got busy")


def worker_pid(client: httpx.Client) -> int:
    """The pid of the serving worker this client's connection reached (/debug/resources)."""
    return int(client.get("/debug/resources").json()["pid"])


def one_client_per_worker(server: ServerProcess, workers: int = 2) -> dict[int, httpx.Client]:
    """A client per serving worker, by pid: a connection stays with one worker, so connections
    are opened until each worker has answered one (the others are closed)."""
    clients: dict[int, httpx.Client] = {}
    deadline = time.monotonic() + 30
    while len(clients) < workers:
        assert time.monotonic() < deadline, "every connection went to one worker"
        client = httpx.Client(base_url=server.url, timeout=30)
        pid = worker_pid(client)
        if pid in clients:
            client.close()
        else:
            clients[pid] = client
    return clients
