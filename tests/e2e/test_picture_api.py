"""The profile-picture API: `POST /api/{version}/user/profile-picture` with a JSON data URI, against a real server."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.support import images

# Once per deployment: local disk, the S3 backend (SeaweedFS) and a Redis Cluster (tests/conftest.py).
pytestmark = pytest.mark.backends("local", "s3", "cluster")

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SAMPLE_DATA_URI = (FIXTURES / "seed001_data_uri.txt").read_text().strip()
PATH = "/api/v1/user/profile-picture"


def example_request(**overrides: object) -> dict[str, object]:
    """The document's request, with the document's own sample data URI."""
    body: dict[str, object] = {
        "name": "profile_picture.jpg",
        "height": 200,
        "width": 200,
        "mime": "image/jpeg",
        "dataUri": SAMPLE_DATA_URI,
    }
    body.update(overrides)
    return body


def data_uri(data: bytes, media_type: str = "image/jpeg") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def png_bytes(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (width, height), (0, 120, 200, 255)).save(out, "PNG")
    return out.getvalue()


def test_the_documents_sample_becomes_the_picture(server, auth, user):
    answer = httpx.post(f"{server.url}{PATH}", json=example_request(), headers=auth)
    assert answer.status_code == 201, answer.text
    picture = answer.json()
    assert picture["name"] == "profile_picture.jpg"
    assert picture["avatar"]["source_format"] == "JPEG"
    served = httpx.get(picture["url"])
    assert served.status_code == 200
    assert Image.open(io.BytesIO(served.content)).size == (picture["width"], picture["height"])
    assert httpx.get(f"{server.url}/avatars/{user}").status_code == 200


def test_the_sample_decodes_to_the_fixture_jpeg():
    assert base64.b64decode(SAMPLE_DATA_URI.split(",", 1)[1]) == (FIXTURES / "seed001.jpg").read_bytes()


def test_a_new_picture_replaces_the_served_one(server, auth, user):
    first = httpx.post(f"{server.url}{PATH}", json=example_request(), headers=auth).json()
    photo = images.jpeg(320, 240, colour=(10, 10, 220))
    second = httpx.post(
        f"{server.url}{PATH}",
        headers=auth,
        json=example_request(name="holiday.jpg", width=320, height=240, dataUri=data_uri(photo)),
    )
    assert second.status_code == 201, second.text
    assert second.json()["id"] != first["id"]
    assert httpx.get(first["url"]).status_code == 404
    assert httpx.get(f"{server.url}/me/avatar", headers=auth).json()["version"] == second.json()["id"]


def test_a_png_is_accepted_when_declared_as_png(server, auth):
    answer = httpx.post(
        f"{server.url}{PATH}",
        headers=auth,
        json=example_request(mime="image/png", width=90, height=60, dataUri=data_uri(png_bytes(90, 60), "image/png")),
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["avatar"]["source_format"] == "PNG"


def test_a_data_uri_that_disagrees_with_mime_is_refused(server, auth, user):
    answer = httpx.post(f"{server.url}{PATH}", json=example_request(mime="image/png"), headers=auth)
    assert answer.status_code == 400
    assert answer.json()["code"] == "mime-mismatch"
    assert httpx.get(f"{server.url}/avatars/{user}").status_code == 404


def test_a_picture_whose_real_size_disagrees_is_refused(server, auth, user):
    answer = httpx.post(f"{server.url}{PATH}", json=example_request(width=300, height=200), headers=auth)
    assert answer.status_code == 400
    assert answer.json()["code"] == "dimension-mismatch"
    assert "200x200" in answer.json()["error"]
    assert httpx.get(f"{server.url}/avatars/{user}").status_code == 404


def test_bytes_of_another_format_than_declared_are_refused(server, auth):
    answer = httpx.post(
        f"{server.url}{PATH}",
        headers=auth,
        json=example_request(
            mime="image/png", width=200, height=200, dataUri=data_uri(images.jpeg(200, 200), "image/png")
        ),
    )
    assert answer.status_code == 400
    assert answer.json()["code"] == "content-mismatch"


def test_the_documents_truncated_example_is_a_clear_400(server, auth):
    truncated = example_request(dataUri="data:image/jpeg;base64,/9j/4AAQSkZJRgABAQEBLAE....")
    answer = httpx.post(f"{server.url}{PATH}", json=truncated, headers=auth)
    assert answer.status_code == 400
    assert answer.json()["code"] == "invalid-base64"


def test_a_missing_data_uri_is_a_400(server, auth):
    body = example_request()
    del body["dataUri"]
    answer = httpx.post(f"{server.url}{PATH}", json=body, headers=auth)
    assert (answer.status_code, answer.json()["code"]) == (400, "missing-field")


def test_a_data_uri_that_is_not_an_image_is_refused(server, auth):
    answer = httpx.post(
        f"{server.url}{PATH}", headers=auth, json=example_request(dataUri=data_uri(b"<html>not a picture</html>"))
    )
    assert answer.status_code == 415
    assert answer.json()["code"] == "unsupported-format"


def test_without_a_token_the_answer_is_401(server):
    answer = httpx.post(f"{server.url}{PATH}", json=example_request())
    assert answer.status_code == 401
