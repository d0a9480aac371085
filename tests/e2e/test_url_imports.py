"""URL imports (`POST /v1/users/{id}/profile/profile-image` with `{"url"}`) under pressure, against
real server processes and a real image host on loopback: one download per user, a cap per
process, the rate limit, and a DELETE or a newer upload always winning over a finishing import."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import images
from tests.support.encoding import b64
from tests.support.image_host import ImageHost
from tests.support.server import ServerProcess, StartServer
from tests.support.workers import busy_worker

LOOPBACK = ["127.0.0.0/8"]


@pytest.fixture(scope="module")
def host() -> Iterator[ImageHost]:
    """Serves a small JPEG at /image.jpg, and /slow that never finishes until the host stops."""
    image_host = ImageHost(images.jpeg(300, 200), big_bytes=1_000_000).start()
    yield image_host
    image_host.stop()


@pytest.fixture(scope="module")
def slow_host() -> Iterator[ImageHost]:
    """Serves, quickly, an image that takes its worker seconds to decode (300 extra JPEG scans)."""
    image_host = ImageHost(images.jpeg_scan_bomb(repeats=300), big_bytes=1_000_000).start()
    yield image_host
    image_host.stop()


def resource(server: ServerProcess, user: str) -> str:
    return f"{server.url}/v1/users/{user}/profile/profile-image"


def scratch_files(server: ServerProcess) -> list[Path]:
    return sorted((server.workdir / "storage" / "work").glob("fetch-*"))


def poll(condition: Callable[[], bool], what: str, deadline: float = 20.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {deadline} s: {what}")


def import_url(server: ServerProcess, user: str, auth: dict[str, str], url: str) -> httpx.Response:
    return httpx.post(resource(server, user), headers=auth, json={"url": url}, timeout=30)


def test_a_new_import_cancels_the_users_previous_one(start_server: StartServer, host, auth, user):
    server = start_server(fetch={"timeout_seconds": 60, "allowed_private_networks": LOOPBACK})
    for n in range(5):
        assert import_url(server, user, auth, f"{host.url}/slow?n={n}").status_code == 202
    # The last download starts; an earlier one may be cancelled before it even connects (the
    # first, which also sets up the process's HTTP client, often is): nothing to wait for.
    poll(lambda: "/slow?n=4" in host.targets, "the last download started")
    # Only the last download is still running: the four before it were cancelled and their
    # scratch files removed (before, all five stayed until their timeout).
    poll(lambda: len(scratch_files(server)) == 1, "one scratch file left")
    image = httpx.get(resource(server, user), headers=auth).json()
    assert image["status"] == "downloading" and image["sourceUrl"].endswith("n=4")


def test_downloads_past_the_process_cap_answer_503(start_server: StartServer, host, token):
    server = start_server(fetch={"timeout_seconds": 60, "max_concurrent": 2, "allowed_private_networks": LOOPBACK})
    users = [f"cap-{n}-{time.monotonic_ns()}" for n in range(3)]
    auths = [{"Authorization": f"Bearer {token(u)}"} for u in users]
    started = host.requests.count("/slow")
    for user, auth in zip(users[:2], auths[:2], strict=True):
        assert import_url(server, user, auth, f"{host.url}/slow").status_code == 202
    refused = import_url(server, users[2], auths[2], f"{host.url}/slow")
    assert refused.status_code == 503, refused.text
    assert refused.json()["code"] == "too-many-fetches"
    assert int(refused.headers["Retry-After"]) >= 1
    # A user replacing their own download takes its place, not another's.
    assert import_url(server, users[0], auths[0], f"{host.url}/slow").status_code == 202
    poll(lambda: host.requests.count("/slow") >= started + 3, "the replacing download started")
    assert httpx.get(resource(server, users[2]), headers=auths[2]).status_code == 404


def test_imports_count_in_the_users_rate_limit(start_server: StartServer, host, auth, user):
    server = start_server(
        limits={"requests_per_window": 3, "rate_window_seconds": 600},
        fetch={"allowed_private_networks": LOOPBACK},
    )
    before = host.requests.count("/image.jpg")
    for _ in range(3):
        assert import_url(server, user, auth, f"{host.url}/image.jpg").status_code == 202
    refused = import_url(server, user, auth, f"{host.url}/image.jpg")
    assert refused.status_code == 429 and "Retry-After" in refused.headers
    assert host.requests.count("/image.jpg") - before <= 3


def _importing_server(start_server: StartServer, workers: int) -> ServerProcess:
    return start_server(
        avatars={"workers": workers},
        limits={"max_scans": 400, "image_job_seconds": 600},
        fetch={"timeout_seconds": 60, "allowed_private_networks": LOOPBACK},
    )


def test_an_avatar_deleted_during_an_import_does_not_come_back(start_server: StartServer, slow_host, auth, user):
    server = _importing_server(start_server, workers=1)
    # A second process on the same Redis and storage answers the DELETE: it cannot cancel the
    # first one's task, so only the re-check under the user's lock keeps the avatar deleted.
    other = start_server(root=server.workdir, config=server.config)
    assert import_url(server, user, auth, f"{slow_host.url}/image.jpg").status_code == 202
    busy_worker(server)  # downloaded; now being processed
    assert httpx.delete(resource(other, user), headers=auth).status_code == 204
    poll(lambda: not scratch_files(server), "the import finished")
    assert httpx.get(f"{server.url}/avatars/{user}").status_code == 404
    assert httpx.get(resource(server, user), headers=auth).status_code == 404


def test_a_finishing_import_does_not_overwrite_a_newer_upload(start_server: StartServer, slow_host, auth, user):
    server = _importing_server(start_server, workers=2)
    assert import_url(server, user, auth, f"{slow_host.url}/image.jpg").status_code == 202
    busy_worker(server)
    # A newer image through another API, processed by the second worker while the import's runs.
    newer = httpx.post(
        f"{server.url}/accounts/profile-image",
        headers=auth,
        json={"file_name": "a.png", "file": b64(images.png_rgb(64, 64)), "content_type": "image/png"},
        timeout=60,
    )
    assert newer.status_code == 200, newer.text
    poll(lambda: not scratch_files(server), "the import finished")
    current = httpx.get(f"{server.url}/me/avatar", headers=auth).json()
    assert current["version"] == newer.json()["avatar"]["version"]
    assert httpx.get(resource(server, user), headers=auth).json()["status"] == "ready"
