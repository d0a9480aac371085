"""A server's image worker processes, found with psutil (tests kill them or wait for them)."""

from __future__ import annotations

import time

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
