"""The IETF draft "Resumable Uploads for HTTP", interop versions 3 to 8, against a real server."""

from __future__ import annotations

import httpx
import pytest

from tests.support import images

PARTIAL = "application/partial-upload"
VERSIONS = [3, 4, 5, 6, 7, 8]
MISMATCH = "https://iana.org/assignments/http-problem-types#mismatching-upload-offset"
INCONSISTENT = "https://iana.org/assignments/http-problem-types#inconsistent-upload-length"
COMPLETED = "https://iana.org/assignments/http-problem-types#completed-upload"

# Once per deployment: local disk, the S3 backend (SeaweedFS) and a Redis Cluster; the protocol
# must not tell them apart.
pytestmark = pytest.mark.backends("local", "s3", "cluster")


@pytest.fixture(scope="module")
def image() -> bytes:
    return images.jpeg(320, 240, colour=(200, 120, 20))


def draft(version: int, complete: bool | None = None, **headers: str) -> dict[str, str]:
    sent = {"Upload-Draft-Interop-Version": str(version), **headers}
    if complete is not None:
        if version == 3:
            sent["Upload-Incomplete"] = "?0" if complete else "?1"
        else:
            sent["Upload-Complete"] = "?1" if complete else "?0"
    return sent


def completeness(response: httpx.Response, version: int) -> bool:
    if version == 3:
        return response.headers["upload-incomplete"] == "?0"
    return response.headers["upload-complete"] == "?1"


def start(client, auth, version: int, data: bytes = b"", **headers: str) -> httpx.Response:
    r = client.post("/files/", content=data, headers={**auth, **draft(version, False, **headers)})
    assert r.status_code == 201, r.text
    return r


def append(
    client,
    auth,
    version: int,
    url: str,
    offset: int,
    data: bytes,
    complete: bool,
    content_type: str = PARTIAL,
    **headers: str,
) -> httpx.Response:
    return client.patch(
        url,
        content=data,
        headers={
            **auth,
            **draft(version, complete, **headers),
            "Upload-Offset": str(offset),
            "Content-Type": content_type,
        },
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_whole_image_in_the_creation_request_becomes_the_avatar(client, auth, image, version):
    r = client.post("/files/", content=image, headers={**auth, **draft(version, True), "Content-Type": "image/jpeg"})
    assert r.status_code == 200
    assert completeness(r, version)
    assert r.json()["avatar"]["version"] == client.get("/me/avatar", headers=auth).json()["version"]


@pytest.mark.parametrize("version", VERSIONS)
def test_incomplete_creation_answers_201_with_location_and_state(client, auth, version):
    r = start(client, auth, version, b"hello")
    assert r.headers["location"].startswith(str(client.base_url) + "/files/")
    assert r.headers["upload-offset"] == "5"
    assert not completeness(r, version)
    if version >= 6:
        assert "max-size=20971520" in r.headers["upload-limit"]


@pytest.mark.parametrize("version", VERSIONS)
def test_head_tells_offset_completeness_length_limits_without_caching(client, auth, version):
    url = start(client, auth, version, b"hello", **{"Upload-Length": "50"}).headers["location"]
    r = client.head(url, headers={**auth, **draft(version)})
    assert r.status_code == 204
    assert r.headers["upload-offset"] == "5"
    assert not completeness(r, version)
    assert r.headers["cache-control"] == "no-store"
    if version >= 5:
        assert r.headers["upload-length"] == "50"
    if version >= 6:
        limit = r.headers["upload-limit"]
        assert "max-size=20971520" in limit
        assert ("expires=" if version == 6 else "max-age=") in limit


@pytest.mark.parametrize("version", VERSIONS)
def test_appends_then_completes_into_the_avatar(client, auth, image, version):
    url = start(client, auth, version).headers["location"]
    r = append(client, auth, version, url, 0, image[:2000], False)
    assert r.status_code == 204 and not completeness(r, version)
    r = append(client, auth, version, url, 2000, image[2000:], True)
    assert r.status_code == 200 and completeness(r, version)
    assert r.json()["avatar"]["version"] == client.get("/me/avatar", headers=auth).json()["version"]
    h = client.head(url, headers={**auth, **draft(version)})
    assert completeness(h, version) and h.headers["upload-offset"] == str(len(image))


@pytest.mark.parametrize("version", [6, 7, 8])
def test_append_of_another_media_type_is_415_from_interop_6(client, auth, version):
    url = start(client, auth, version).headers["location"]
    r = append(client, auth, version, url, 0, b"hello", False, content_type="application/offset+octet-stream")
    assert r.status_code == 415
    assert r.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("version", [3, 4, 5])
def test_earlier_versions_append_any_media_type(client, auth, version):
    url = start(client, auth, version).headers["location"]
    r = append(client, auth, version, url, 0, b"hello", False, content_type="application/offset+octet-stream")
    assert r.status_code == 204


@pytest.mark.parametrize("version", VERSIONS)
def test_offset_mismatch_is_409_problem_with_the_right_offset(client, auth, version):
    url = start(client, auth, version, b"hello").headers["location"]
    r = append(client, auth, version, url, 2, b"world", False)
    assert r.status_code == 409
    assert r.headers["upload-offset"] == "5"
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["type"] == MISMATCH
    assert problem["expected-offset"] == 5 and problem["provided-offset"] == 2


def test_a_completed_upload_takes_no_more_bytes(client, auth, image):
    r = client.post("/files/", content=image, headers={**auth, **draft(8, True)})
    url = r.headers["location"]
    more = append(client, auth, 8, url, len(image), b"extra", True)
    assert more.status_code == 400 and more.json()["type"] == INCONSISTENT
    empty = append(client, auth, 8, url, len(image), b"", True)
    assert empty.status_code == 400 and empty.json()["type"] == COMPLETED


def test_lengths_that_disagree_are_inconsistent(client, auth):
    r = client.post("/files/", content=b"hello", headers={**auth, **draft(8, True), "Upload-Length": "9"})
    assert r.status_code == 400 and r.json()["type"] == INCONSISTENT
    url = start(client, auth, 8, b"hello", **{"Upload-Length": "20"}).headers["location"]
    r = append(client, auth, 8, url, 5, b"world", True)
    assert r.status_code == 400 and r.json()["type"] == INCONSISTENT


def test_body_past_the_length_is_413_with_limits(client, auth):
    url = start(client, auth, 8, **{"Upload-Length": "4"}).headers["location"]
    r = append(client, auth, 8, url, 0, b"too long", False)
    assert r.status_code == 413
    assert "max-size=" in r.headers["upload-limit"]


def test_creation_above_the_size_limit_is_413(client, auth):
    r = client.post("/files/", headers={**auth, **draft(8, False), "Upload-Length": str(21 * 1024 * 1024)})
    assert r.status_code == 413 and "max-size=20971520" in r.headers["upload-limit"]


def test_delete_cancels_the_upload(client, auth):
    url = start(client, auth, 8, b"hello").headers["location"]
    assert client.delete(url, headers={**auth, **draft(8)}).status_code == 204
    r = client.head(url, headers={**auth, **draft(8)})
    assert r.status_code in (404, 410)


def test_options_announces_partial_upload_and_limits(client):
    r = client.options("/files/", headers=draft(8))
    assert r.status_code == 204
    assert PARTIAL in r.headers["accept-patch"]
    assert "max-size=20971520" in r.headers["upload-limit"]


@pytest.mark.parametrize(
    "headers",
    [
        draft(8),
        draft(8, **{"Upload-Complete": "yes"}),
        draft(3, **{"Upload-Complete": "?1"}),
    ],
)
def test_creation_without_a_valid_completeness_is_400(client, auth, headers):
    assert client.post("/files/", content=b"x", headers={**auth, **headers}).status_code == 400


@pytest.mark.parametrize("version", ["2", "9", "eight"])
def test_unsupported_interop_version_is_400(client, auth, version):
    r = client.post(
        "/files/", content=b"x", headers={**auth, "Upload-Draft-Interop-Version": version, "Upload-Complete": "?1"}
    )
    assert r.status_code == 400


def test_append_without_offset_or_completeness_is_400(client, auth):
    url = start(client, auth, 8).headers["location"]
    r = client.patch(url, content=b"x", headers={**auth, **draft(8, False), "Content-Type": PARTIAL})
    assert r.status_code == 400
    r = client.patch(url, content=b"x", headers={**auth, **draft(8), "Upload-Offset": "0", "Content-Type": PARTIAL})
    assert r.status_code == 400


def test_uploads_are_private(client, auth, token):
    url = start(client, auth, 8, b"hello").headers["location"]
    stranger = {"Authorization": f"Bearer {token('stranger')}"}
    assert client.head(url, headers={**stranger, **draft(8)}).status_code == 404
    assert client.post("/files/", content=b"x", headers=draft(8, True)).status_code == 401


def test_not_an_image_is_a_4xx_problem_marked_complete(client, auth):
    r = client.post("/files/", content=b"not an image" * 20, headers={**auth, **draft(8, True)})
    assert 400 <= r.status_code < 500
    assert r.headers["upload-complete"] == "?1"
    assert r.headers["content-type"] == "application/problem+json"
    status = client.get(r.headers["location"], headers=auth).json()
    assert status["state"] == "failed"


def test_tus_and_draft_share_the_upload(client, auth, image):
    """A tus HEAD sees an upload the draft created; the draft completes what tus continued."""
    third = len(image) // 3
    url = start(client, auth, 8, image[:third]).headers["location"]
    tus = {**auth, "Tus-Resumable": "1.0.0"}
    assert client.head(url, headers=tus).headers["upload-offset"] == str(third)
    r = client.patch(
        url,
        content=image[third : 2 * third],
        headers={**tus, "Upload-Offset": str(third), "Content-Type": "application/offset+octet-stream"},
    )
    assert r.status_code == 204
    r = append(client, auth, 8, url, 2 * third, image[2 * third :], True)
    assert r.status_code == 200, r.text
