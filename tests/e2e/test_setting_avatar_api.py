"""The avatar-setting API: `PUT /user/setting/avatar` with an octet-stream body; empty means Gravatar."""

from __future__ import annotations

import hashlib
import io
import os
import re
import uuid

import httpx
import pytest
from PIL import Image

from tests.support import images
from tests.support.server import ServerProcess, StartServer

# Once per deployment: local disk, the S3 backend (SeaweedFS) and a Redis Cluster (tests/conftest.py).
pytestmark = pytest.mark.backends("local", "s3", "cluster")

PATH = "/user/setting/avatar"
MAX_IMAGE_BYTES = 300_000
EMAIL = "Someone.Else@Example.com "
GRAVATAR = "https://gravatar.com/avatar/" + hashlib.sha256(b"someone.else@example.com").hexdigest()


def start(start_module_server: StartServer, debug: bool) -> ServerProcess:
    return start_module_server(limits={"max_image_bytes": MAX_IMAGE_BYTES}, server={"debug": debug})


@pytest.fixture(scope="module")
def server(start_module_server: StartServer) -> ServerProcess:
    return start(start_module_server, debug=False)


@pytest.fixture(scope="module")
def debug_server(start_module_server: StartServer) -> ServerProcess:
    return start(start_module_server, debug=True)


@pytest.fixture()
def with_email(token, user) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user, email=EMAIL)}"}


def put(server: ServerProcess, headers: dict[str, str], body: bytes) -> httpx.Response:
    return httpx.put(
        f"{server.url}{PATH}", content=body, headers={**headers, "Content-Type": "application/octet-stream"}
    )


def assert_failure(answer: httpx.Response, status: int) -> str:
    body = answer.json()
    assert answer.status_code == status
    assert body["code"] == status and body["msg"]
    return str(uuid.UUID(body["correlation_id"]))


def test_an_image_body_becomes_the_avatar(server, auth, user):
    answer = put(server, auth, images.jpeg(300, 300, colour=(0, 90, 250)))
    assert answer.status_code == 200
    assert answer.json() == {"code": 0, "msg": ""}
    served = httpx.get(f"{server.url}/avatars/{user}")
    assert served.status_code == 200
    assert Image.open(io.BytesIO(served.content)).size[0] > 0


def test_an_empty_body_switches_to_gravatar(server, with_email, user):
    assert put(server, with_email, images.jpeg()).status_code == 200
    answer = put(server, with_email, b"")
    assert answer.status_code == 200
    assert answer.json() == {"code": 0, "msg": ""}
    served = httpx.get(f"{server.url}/avatars/{user}?size=128")
    assert served.status_code == 302
    assert served.headers["location"] == f"{GRAVATAR}?d=mp&s=128"
    mine = httpx.get(f"{server.url}/me/avatar", headers=with_email)
    assert mine.status_code == 302
    assert mine.headers["location"].startswith(GRAVATAR)


def test_a_new_image_ends_the_gravatar_choice(server, with_email, user):
    put(server, with_email, b"")
    assert httpx.get(f"{server.url}/avatars/{user}").status_code == 302
    assert put(server, with_email, images.jpeg()).status_code == 200
    served = httpx.get(f"{server.url}/avatars/{user}")
    assert served.status_code == 200
    assert served.headers["content-type"].startswith("image/")


def test_an_image_from_another_api_also_ends_the_gravatar_choice(server, with_email, user):
    put(server, with_email, b"")
    answer = httpx.patch(
        f"{server.url}/users/image/upload", headers=with_email, files={"file": ("a.jpg", images.jpeg())}
    )
    assert answer.status_code == 200, answer.text
    assert httpx.get(f"{server.url}/avatars/{user}").status_code == 200


def test_deleting_the_avatar_ends_the_gravatar_choice(server, with_email, user):
    put(server, with_email, b"")
    assert httpx.delete(f"{server.url}/me/avatar", headers=with_email).status_code == 204
    assert httpx.get(f"{server.url}/avatars/{user}").status_code == 404


def test_gravatar_without_an_email_claim_fails_with_a_correlation_id(server, auth):
    answer = put(server, auth, b"")
    correlation_id = assert_failure(answer, 400)
    assert "error" not in answer.json()
    assert correlation_id in server.log()


def test_a_failure_is_logged_with_its_correlation_id(server, auth):
    answer = put(server, auth, b"this is not an image")
    correlation_id = assert_failure(answer, 415)
    line = next(line for line in server.log().splitlines() if correlation_id in line)
    assert re.search(r"PUT /user/setting/avatar failed: status=415 code=unsupported-format", line)


def test_a_body_over_the_limit_fails_and_leaves_no_file(server, auth, user):
    answer = put(server, auth, os.urandom(MAX_IMAGE_BYTES + 1))
    assert_failure(answer, 413)
    work = server.workdir / "storage" / "work"
    assert [name for name in os.listdir(work) if name.startswith("setting-")] == []
    assert httpx.get(f"{server.url}/avatars/{user}").status_code == 404


def test_without_a_token_the_failure_has_this_apis_shape(server):
    assert_failure(put(server, {}, images.jpeg()), 401)


def test_debug_mode_adds_the_internal_error(debug_server, auth):
    answer = put(debug_server, auth, b"this is not an image")
    assert_failure(answer, 415)
    assert answer.json()["error"] == "unsupported-format"
