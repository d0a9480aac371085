"""The profile-image API: `GET`/`POST`/`DELETE /v1/users/{userId}/profile/profile-image`, against a real server.

Images fetched by URL come from a real HTTP server on loopback, which this server is configured
to allow; a second server with the default policy shows that loopback is refused.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import images
from tests.support.image_host import ImageHost
from tests.support.server import ServerProcess, StartServer

# Once per deployment: local disk, the S3 backend (SeaweedFS) and a Redis Cluster (tests/conftest.py).
pytestmark = pytest.mark.backends("local", "s3", "cluster")

MAX_IMAGE_BYTES = 300_000
FETCH_TIMEOUT = 1.5


def start(start_module_server: StartServer, allowed: list[str]) -> ServerProcess:
    return start_module_server(
        limits={"max_image_bytes": MAX_IMAGE_BYTES},
        fetch={"timeout_seconds": FETCH_TIMEOUT, "max_redirects": 3, "allowed_private_networks": allowed},
    )


@pytest.fixture(scope="module")
def server(start_module_server: StartServer) -> ServerProcess:
    return start(start_module_server, ["127.0.0.0/8"])


@pytest.fixture(scope="module")
def strict_server(start_module_server: StartServer) -> ServerProcess:
    return start(start_module_server, [])


@pytest.fixture(scope="module")
def host() -> Iterator[ImageHost]:
    image_host = ImageHost(images.jpeg(400, 300, colour=(20, 160, 90)), big_bytes=MAX_IMAGE_BYTES).start()
    yield image_host
    image_host.stop()


def resource(server: ServerProcess, user: str) -> str:
    return f"{server.url}/v1/users/{user}/profile/profile-image"


def settled(server: ServerProcess, user: str, auth: dict[str, str], deadline: float = 15.0) -> dict[str, Any]:
    """Poll GET, as the document tells clients to, until the status is no longer downloading."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        image = httpx.get(resource(server, user), headers=auth).json()
        if image["status"] != "downloading":
            return image
        time.sleep(0.05)
    raise AssertionError(f"still downloading after {deadline} s")


def fetch(server: ServerProcess, user: str, auth: dict[str, str], url: str) -> dict[str, Any]:
    answer = httpx.post(resource(server, user), headers=auth, json={"url": url})
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "downloading"
    assert answer.json()["sourceUrl"] == url
    return settled(server, user, auth)


def field_errors(answer: httpx.Response) -> list[dict[str, str]]:
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "validation-failure"
    return answer.json()["fieldErrors"]


def test_a_multipart_post_sets_the_image(server, auth, user):
    answer = httpx.post(resource(server, user), headers=auth, files={"file": ("me.jpg", images.jpeg())})
    assert answer.status_code == 200, answer.text
    image = answer.json()
    assert image["status"] == "ready"
    assert httpx.get(image["url"]).status_code == 200
    assert httpx.get(resource(server, user), headers=auth).json()["id"] == image["id"]


def test_a_url_post_answers_downloading_then_ready(server, host, auth, user):
    image = fetch(server, user, auth, f"{host.url}/image.jpg")
    assert image["status"] == "ready", image
    assert image["width"] > 0 and httpx.get(image["url"]).status_code == 200
    assert httpx.get(f"{server.url}/avatars/{user}").status_code == 200


def test_get_without_an_image_is_404(server, auth, user):
    assert httpx.get(resource(server, user), headers=auth).status_code == 404


def test_another_users_profile_image_is_403(server, auth):
    for method in ("GET", "POST", "DELETE"):
        answer = httpx.request(method, resource(server, "someone-else"), headers=auth, json={"url": "http://x/"})
        assert (answer.status_code, answer.json()["code"]) == (403, "forbidden")


def test_delete_removes_the_image(server, auth, user):
    httpx.post(resource(server, user), headers=auth, files={"file": ("me.jpg", images.jpeg())})
    assert httpx.delete(resource(server, user), headers=auth).status_code == 204
    assert httpx.get(resource(server, user), headers=auth).status_code == 404
    assert httpx.get(f"{server.url}/avatars/{user}").status_code == 404
    assert httpx.delete(resource(server, user), headers=auth).status_code == 404


def test_a_form_without_file_is_field_missing(server, auth, user):
    answer = httpx.post(resource(server, user), headers=auth, files={"photo": ("me.jpg", images.jpeg())})
    assert field_errors(answer) == [{"field": "file", "code": "field-missing"}]


def test_a_file_over_the_limit_is_file_too_large(server, auth, user):
    answer = httpx.post(
        resource(server, user), headers=auth, files={"file": ("me.jpg", os.urandom(MAX_IMAGE_BYTES + 1))}
    )
    assert field_errors(answer) == [{"field": "file", "code": "file-too-large"}]
    work = server.workdir / "storage" / "work"
    assert [n for n in os.listdir(work) if n.startswith("form-")] == []


@pytest.mark.parametrize("content", [b"just text", b""], ids=["not-an-image", "empty"])
def test_a_file_that_is_not_an_image_is_invalid_file_format(server, auth, user, content):
    answer = httpx.post(resource(server, user), headers=auth, files={"file": ("me.jpg", content)})
    assert field_errors(answer) == [{"field": "file", "code": "invalid-file-format"}]


def test_json_without_url_is_field_missing(server, auth, user):
    answer = httpx.post(resource(server, user), headers=auth, json={"link": "http://example.com/a.jpg"})
    assert field_errors(answer) == [{"field": "url", "code": "field-missing"}]


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.jpg", "gopher://x/"])
def test_only_http_and_https_urls_are_fetched(server, auth, user, url):
    answer = httpx.post(resource(server, user), headers=auth, json={"url": url})
    assert field_errors(answer) == [{"field": "url", "code": "invalid-url"}]


def test_loopback_is_refused_by_default(strict_server, host, auth, user):
    requests_before = len(host.requests)
    for url in (f"{host.url}/image.jpg", f"http://localhost:{host.url.rsplit(':', 1)[1]}/image.jpg"):
        image = fetch(strict_server, user, auth, url)
        assert image["status"] == "failed"
        assert image["reason"]["code"] == "address-not-allowed"
    assert len(host.requests) == requests_before  # refused before connecting
    assert httpx.get(f"{strict_server.url}/avatars/{user}").status_code == 404


@pytest.mark.parametrize(
    "target",
    ["http://10.1.2.3/a.jpg", "http://169.254.169.254/latest/meta-data/", "http://[::1]/a.jpg", "http://0.0.0.0/a.jpg"],
)
def test_private_and_link_local_addresses_are_refused(server, auth, user, target):
    assert fetch(server, user, auth, target)["reason"]["code"] == "address-not-allowed"


def test_a_redirect_to_a_private_address_is_refused(server, host, auth, user):
    image = fetch(server, user, auth, f"{host.url}/redirect?to=http://169.254.169.254/latest/meta-data/")
    assert (image["status"], image["reason"]["code"]) == ("failed", "address-not-allowed")


def test_an_allowed_redirect_is_followed(server, host, auth, user):
    image = fetch(server, user, auth, f"{host.url}/redirect?to={host.url}/image.jpg")
    assert image["status"] == "ready", image


@pytest.mark.parametrize(
    "path, reason",
    [
        ("/big", "file-too-large"),
        ("/slow", "timeout"),
        ("/not-an-image", "invalid-file-format"),
        ("/missing", "http-error"),
    ],
)
def test_a_failed_download_reports_why(server, host, auth, user, path, reason):
    image = fetch(server, user, auth, f"{host.url}{path}")
    assert (image["status"], image["reason"]["code"]) == ("failed", reason)
    assert image["reason"]["message"]
    assert httpx.get(f"{server.url}/avatars/{user}").status_code == 404


def test_a_failed_download_keeps_the_previous_image(server, host, auth, user):
    before = httpx.post(resource(server, user), headers=auth, files={"file": ("me.jpg", images.jpeg())}).json()
    fetch(server, user, auth, f"{host.url}/not-an-image")
    assert httpx.get(before["url"]).status_code == 200


def test_any_server_process_answers_the_poll(server, host, auth, user, tmp_path, start_server):
    # A second process on the same Redis and storage: the fetch state is not in process memory.
    other = start_server(root=tmp_path, config=server.config)
    answer = httpx.post(resource(server, user), headers=auth, json={"url": f"{host.url}/image.jpg"})
    assert answer.status_code == 202
    image = settled(other, user, auth)
    assert image["status"] == "ready", image
    assert image["id"] == httpx.get(resource(server, user), headers=auth).json()["id"]


def test_a_download_cut_by_shutdown_is_reported_failed(server, host, auth, user, tmp_path, start_server):
    # A process sharing Redis and storage, with a timeout long enough that only the shutdown ends the fetch.
    config = {**server.config, "fetch": {**server.config["fetch"], "timeout_seconds": 30}}
    doomed = start_server(root=tmp_path, config=config)
    slow_requests = host.requests.count("/slow")
    answer = httpx.post(resource(doomed, user), headers=auth, json={"url": f"{host.url}/slow"})
    assert answer.status_code == 202
    end = time.monotonic() + 10
    while host.requests.count("/slow") == slow_requests and time.monotonic() < end:
        time.sleep(0.02)
    doomed.stop()
    image = httpx.get(resource(server, user), headers=auth).json()
    assert (image["status"], image["reason"]["code"]) == ("failed", "interrupted")
