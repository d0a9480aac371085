"""Image jobs cannot be held hostage: structure counted before decoding, a wall clock per job,
and a worker that dies takes no one else's upload with it. Against real server processes,
each with a single image worker so that one stuck job would stall everyone."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import psutil
import pytest

from tests.support import images
from tests.support.encoding import b64
from tests.support.server import ServerProcess, StartServer
from tests.support.workers import busy_worker, image_workers

URL = "/accounts/profile-image"


def upload(server: ServerProcess, auth: dict[str, str], data: bytes, name: str = "a.jpg") -> httpx.Response:
    body = {"file_name": name, "file": b64(data), "content_type": "image/jpeg"}
    return httpx.post(server.url + URL, json=body, headers=auth, timeout=120)


def in_background(call: Callable[[], httpx.Response]) -> Callable[[], httpx.Response]:
    """Run `call` in a thread now; the returned function waits for its answer."""
    answer: list[Any] = []
    thread = threading.Thread(target=lambda: answer.append(call()))
    thread.start()

    def result() -> httpx.Response:
        thread.join(180)
        assert answer, "the request did not finish"
        return answer[0]

    return result


@pytest.fixture()
def other_auth(token: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token('bystander-' + str(time.monotonic_ns()))}"}


def test_a_scan_bomb_is_refused_before_decoding(start_server: StartServer, auth):
    # Decoding this file takes tens of seconds; the wall clock is far above that, so only
    # the scan count can refuse it.
    server = start_server(avatars={"workers": 1}, limits={"image_job_seconds": 600})
    bomb = images.jpeg_scan_bomb(repeats=1000)
    assert len(bomb) < 150_000
    answer = upload(server, auth, bomb)
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "too-many-scans"
    assert "scans" in answer.json()["error"]


def test_a_job_past_the_wall_clock_fails_and_others_go_on(start_server: StartServer, auth, other_auth, user):
    # The scan limit is raised so that the bomb is decoded; the wall clock must stop it.
    server = start_server(avatars={"workers": 1}, limits={"max_scans": 5000, "image_job_seconds": 5})
    slow = in_background(lambda: upload(server, auth, images.jpeg_scan_bomb(repeats=1000)))
    busy_worker(server, cpu_seconds=0.0)  # the job has its worker: the small image must wait for it
    small = upload(server, other_auth, images.png_rgb(64, 64), "small.png")
    assert small.status_code == 200, small.text
    answer = slow()
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "image-timeout"
    assert httpx.get(f"{server.url}/avatars/{user}").status_code == 404


def test_a_killed_worker_is_replaced_and_its_job_retried(start_server: StartServer, auth, other_auth):
    # A legitimately slow image (within the scan limit) keeps the only worker busy for a while.
    server = start_server(avatars={"workers": 1}, limits={"max_scans": 400, "image_job_seconds": 600})
    slow = in_background(lambda: upload(server, auth, images.jpeg_scan_bomb(repeats=300)))
    victim = busy_worker(server)
    small = in_background(lambda: upload(server, other_auth, images.png_rgb(64, 64), "small.png"))
    victim.kill()  # SIGKILL, as the OOM killer would
    answer = slow()
    assert answer.status_code == 200, answer.text
    assert small().status_code == 200
    assert victim.pid not in [w.pid for w in image_workers(server)]
    assert server.process is not None and server.process.poll() is None


def test_a_sigkilled_server_leaves_no_image_process_behind(start_server: StartServer, auth):
    server = start_server(avatars={"workers": 1})
    assert upload(server, auth, images.jpeg()).status_code == 200  # the pool is up: forkserver + worker
    assert server.process is not None
    pool = [p for p in psutil.Process(server.process.pid).children(recursive=True) if "redis-server" not in p.name()]
    assert any("forkserver" in " ".join(p.cmdline()) for p in pool) and image_workers(server)
    server.kill()

    def gone(process: psutil.Process) -> bool:
        try:
            return process.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not all(gone(p) for p in pool):
        time.sleep(0.05)
    assert all(gone(p) for p in pool), [(p.pid, p.cmdline()[:3]) for p in pool if not gone(p)]


def test_an_image_process_whose_server_died_while_it_started_exits_at_once(tmp_path):
    """The kernel's parent-death signal comes only for a parent that dies after the child asked
    for it: a server SIGKILLed while its forkserver was still importing left it running for good.
    Here the parent is gone before the child asks (it exits right after starting it): the child
    must exit at once rather than sleep on."""
    child = (
        "import sys, time; time.sleep(0.3); "
        "from avatars._process_guard import die_with_parent; die_with_parent(); "
        "time.sleep(60)"
    )
    parent = (
        "import subprocess, sys; from avatars._process_guard import expect_children; expect_children(); "
        f"print(subprocess.Popen([sys.executable, '-c', {child!r}]).pid, flush=True)"
    )
    started = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, timeout=30, check=True)
    orphan = psutil.Process(int(started.stdout))
    try:
        orphan.wait(timeout=20)  # a deadline, not a pause: it returns as soon as the child exits
    except psutil.TimeoutExpired:
        orphan.kill()
        raise AssertionError("the image process outlived the server that started it") from None
