"""The user-image API: `PATCH /users/image/upload` with a multipart `file`, against a real server."""

from __future__ import annotations

import io
import os

import httpx
import pytest
from PIL import Image

from tests.support import images
from tests.support.server import ServerProcess, StartServer

# Once per deployment: local disk, the S3 backend (SeaweedFS) and a Redis Cluster (tests/conftest.py).
pytestmark = pytest.mark.backends("local", "s3", "cluster")

PATH = "/users/image/upload"
MAX_IMAGE_BYTES = 300_000


@pytest.fixture(scope="module")
def server(start_module_server: StartServer) -> ServerProcess:
    return start_module_server(limits={"max_image_bytes": MAX_IMAGE_BYTES})


def leftover_work_files(server: ServerProcess) -> list[str]:
    work = server.workdir / "storage" / "work"
    return [name for name in os.listdir(work) if name.startswith("form-")] if work.exists() else []


def test_the_documents_example_request_gets_the_documented_answer(server, token, user):
    # curl -X PATCH .../users/image/upload -H "Authorization: Bearer ..." -F "file=@path/to/your/image.jpg"
    bearer = token(
        user,
        email="user@example.com",
        extra={"given_name": "John", "family_name": "Doe", "phone_number": "+1234567890"},
    )
    answer = httpx.patch(
        f"{server.url}{PATH}",
        headers={"Authorization": f"Bearer {bearer}"},
        files={"file": ("image.jpg", images.jpeg(), "image/jpeg")},
    )
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    assert {k: v for k, v in data.items() if k != "profile_image"} == {
        "id": user,
        "first_name": "John",
        "last_name": "Doe",
        "email": "user@example.com",
        "phone_number": "+1234567890",
    }
    served = httpx.get(data["profile_image"])
    assert served.status_code == 200
    assert Image.open(io.BytesIO(served.content)).format in ("WEBP", "JPEG")


def test_user_fields_missing_from_the_token_are_null(server, auth, user):
    answer = httpx.patch(f"{server.url}{PATH}", headers=auth, files={"file": ("a.jpg", images.jpeg())})
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    assert data["id"] == user
    assert data["first_name"] is None and data["email"] is None


def test_the_previous_image_is_deleted(server, auth, user):
    first = httpx.patch(
        f"{server.url}{PATH}", headers=auth, files={"file": ("a.jpg", images.jpeg(colour=(250, 0, 0)))}
    ).json()["data"]
    second = httpx.patch(
        f"{server.url}{PATH}", headers=auth, files={"file": ("b.jpg", images.jpeg(colour=(0, 0, 250)))}
    ).json()["data"]
    assert first["profile_image"] != second["profile_image"]
    assert httpx.get(first["profile_image"]).status_code == 404
    assert httpx.get(second["profile_image"]).status_code == 200


def test_other_form_fields_are_ignored(server, auth):
    answer = httpx.patch(
        f"{server.url}{PATH}", headers=auth, data={"caption": "me"}, files={"file": ("a.jpg", images.jpeg())}
    )
    assert answer.status_code == 200, answer.text


def test_a_form_without_file_is_a_400(server, auth, user):
    answer = httpx.patch(
        f"{server.url}{PATH}", headers=auth, data={"image": "nope"}, files={"picture": ("a.jpg", images.jpeg())}
    )
    assert (answer.status_code, answer.json()["code"]) == (400, "missing-file")
    assert httpx.get(f"{server.url}/avatars/{user}").status_code == 404


def test_a_body_that_is_not_multipart_is_a_400(server, auth):
    answer = httpx.patch(f"{server.url}{PATH}", headers=auth, json={"file": "x"})
    assert (answer.status_code, answer.json()["code"]) == (400, "invalid-multipart")


def test_a_truncated_multipart_body_is_a_400_and_leaves_no_file(server, auth):
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + images.jpeg()[:500]
    )
    answer = httpx.patch(
        f"{server.url}{PATH}", content=body, headers={**auth, "Content-Type": "multipart/form-data; boundary=XyZ"}
    )
    assert (answer.status_code, answer.json()["code"]) == (400, "invalid-multipart")
    assert leftover_work_files(server) == []


def test_a_file_over_the_limit_is_a_413_and_leaves_no_file(server, auth, user):
    too_big = os.urandom(MAX_IMAGE_BYTES + 1)
    answer = httpx.patch(f"{server.url}{PATH}", headers=auth, files={"file": ("big.jpg", too_big)})
    assert (answer.status_code, answer.json()["code"]) == (413, "file-too-large")
    assert leftover_work_files(server) == []
    assert httpx.get(f"{server.url}/avatars/{user}").status_code == 404


def test_a_file_that_is_not_an_image_is_refused(server, auth):
    answer = httpx.patch(f"{server.url}{PATH}", headers=auth, files={"file": ("a.jpg", b"GIF? no, text")})
    assert (answer.status_code, answer.json()["code"]) == (415, "unsupported-format")


def test_without_a_token_the_answer_is_401(server):
    answer = httpx.patch(f"{server.url}{PATH}", files={"file": ("a.jpg", images.jpeg())})
    assert answer.status_code == 401
