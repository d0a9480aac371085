"""tus 1.0.0, MUST by MUST, status code by status code, against a real server process."""

from __future__ import annotations

import base64

import pytest

from tests.support import images
from tests.support.tus import TUS, checksum, create, head, metadata, patch

EXTENSIONS = {
    "creation",
    "creation-with-upload",
    "creation-defer-length",
    "termination",
    "expiration",
    "checksum",
    "concatenation",
    "concatenation-unfinished",
}

# Once per deployment: local disk, the S3 backend (SeaweedFS) and a Redis Cluster; the protocol
# must not tell them apart.
pytestmark = pytest.mark.backends("local", "s3", "cluster")


@pytest.fixture(scope="module")
def image() -> bytes:
    return images.jpeg(320, 240, colour=(30, 160, 40))


# -- core: OPTIONS, Tus-Resumable ---------------------------------------------------------------


def test_options_describes_the_server(client, server):
    r = client.options("/files/")
    assert r.status_code == 204
    assert r.headers["tus-version"] == "1.0.0"
    assert r.headers["tus-resumable"] == "1.0.0"
    assert set(r.headers["tus-extension"].split(",")) == EXTENSIONS
    assert int(r.headers["tus-max-size"]) == 20 * 1024 * 1024
    assert set(r.headers["tus-checksum-algorithm"].split(",")) == {"sha1", "md5", "sha256"}


@pytest.mark.parametrize("version", [None, "0.2.2", "2.0.0"])
def test_unsupported_or_missing_version_is_412_with_tus_version(client, auth, version):
    headers = {**auth, "Upload-Length": "10"}
    if version:
        headers["Tus-Resumable"] = version
    r = client.post("/files/", headers=headers)
    assert r.status_code == 412
    assert r.headers["tus-version"] == "1.0.0"


def test_requests_without_credentials_are_401(client):
    r = client.post("/files/", headers={**TUS, "Upload-Length": "10"})
    assert r.status_code == 401
    assert r.headers["tus-resumable"] == "1.0.0"


# -- core: HEAD -------------------------------------------------------------------------------


def test_head_tells_offset_and_length_and_forbids_caching(client, auth):
    url = create(client, auth, 100)
    r = head(client, url, auth)
    assert r.status_code == 200
    assert r.headers["upload-offset"] == "0"
    assert r.headers["upload-length"] == "100"
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["tus-resumable"] == "1.0.0"


def test_head_of_unknown_upload_is_404_without_offset(client, auth):
    r = head(client, "/files/" + "x" * 32, auth)
    assert r.status_code == 404
    assert "upload-offset" not in r.headers


def test_another_users_upload_is_404(client, auth, token):
    url = create(client, auth, 100)
    stranger = {"Authorization": f"Bearer {token('someone-else')}"}
    assert head(client, url, stranger).status_code == 404
    assert patch(client, url, stranger, 0, b"x").status_code == 404
    assert client.delete(url, headers={**stranger, **TUS}).status_code == 404
    assert head(client, url, auth).status_code == 200


# -- core: PATCH ------------------------------------------------------------------------------


def test_patch_appends_and_answers_new_offset_and_expiry(client, auth):
    url = create(client, auth, 10)
    r = patch(client, url, auth, 0, b"hello")
    assert r.status_code == 204
    assert r.headers["upload-offset"] == "5"
    assert r.headers["upload-expires"].endswith("GMT")
    assert head(client, url, auth).headers["upload-offset"] == "5"


@pytest.mark.parametrize("content_type", [None, "application/octet-stream", "text/plain"])
def test_patch_with_another_content_type_is_415(client, auth, content_type):
    url = create(client, auth, 10)
    headers = {**auth, **TUS, "Upload-Offset": "0"}
    if content_type:
        headers["Content-Type"] = content_type
    r = client.patch(url, content=b"hello", headers=headers)
    assert r.status_code == 415
    assert head(client, url, auth).headers["upload-offset"] == "0"


def test_patch_at_the_wrong_offset_is_409_with_the_right_offset(client, auth):
    url = create(client, auth, 10)
    assert patch(client, url, auth, 0, b"hello").status_code == 204
    r = patch(client, url, auth, 3, b"world")
    assert r.status_code == 409
    assert r.headers["upload-offset"] == "5"
    assert r.json()["code"] == "offset-mismatch"


@pytest.mark.parametrize("offset", [None, "-1", "abc", "1e3", "9" * 30])
def test_patch_without_a_valid_offset_is_400(client, auth, offset):
    url = create(client, auth, 10)
    headers = {**auth, **TUS, "Content-Type": "application/offset+octet-stream"}
    if offset is not None:
        headers["Upload-Offset"] = offset
    assert client.patch(url, content=b"hello", headers=headers).status_code == 400


def test_patch_past_the_length_is_413_and_stores_nothing(client, auth):
    url = create(client, auth, 4)
    r = patch(client, url, auth, 0, b"too long")
    assert r.status_code == 413
    assert head(client, url, auth).headers["upload-offset"] == "0"


def test_x_http_method_override_is_honoured(client, auth):
    url = create(client, auth, 10)
    r = client.post(
        url,
        content=b"hello",
        headers={
            **auth,
            **TUS,
            "X-HTTP-Method-Override": "PATCH",
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": "0",
        },
    )
    assert r.status_code == 204 and r.headers["upload-offset"] == "5"
    r = client.post(url, headers={**auth, **TUS, "X-HTTP-Method-Override": "DELETE"})
    assert r.status_code == 204
    assert head(client, url, auth).status_code == 410


# -- creation, creation-defer-length, creation-with-upload ---------------------------------------


def test_creation_answers_201_with_location_and_expiry(client, auth):
    r = client.post("/files/", headers={**auth, **TUS, "Upload-Length": "10"})
    assert r.status_code == 201
    assert r.headers["location"].startswith(str(client.base_url) + "/files/")
    assert r.headers["upload-expires"].endswith("GMT")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Upload-Length": "10", "Upload-Defer-Length": "1"},
        {"Upload-Defer-Length": "2"},
        {"Upload-Length": "-5"},
        {"Upload-Length": "ten"},
    ],
)
def test_creation_needs_exactly_one_valid_length_header(client, auth, headers):
    assert client.post("/files/", headers={**auth, **TUS, **headers}).status_code == 400


def test_creation_above_tus_max_size_is_413(client, auth):
    r = client.post("/files/", headers={**auth, **TUS, "Upload-Length": str(20 * 1024 * 1024 + 1)})
    assert r.status_code == 413


def test_metadata_is_recorded_and_echoed(client, auth):
    sent = metadata(filename="me.jpg", filetype="image/jpeg") + ",flag"
    url = create(client, auth, 10, **{"Upload-Metadata": sent})
    assert head(client, url, auth).headers["upload-metadata"] == sent
    status = client.get(url, headers=auth).json()
    assert status["file_name"] == "me.jpg" and status["content_type"] == "image/jpeg"


def test_a_file_name_is_recorded_without_its_path(client, auth):
    url = create(client, auth, 10, **{"Upload-Metadata": metadata(filename="../../etc/passwd\\x.jpg")})
    assert client.get(url, headers=auth).json()["file_name"] == "x.jpg"


@pytest.mark.parametrize("value", ["filename !!notbase64", "a YQ==,a YQ==", "a YQ==,,b", "a b c"])
def test_malformed_metadata_is_400(client, auth, value):
    r = client.post("/files/", headers={**auth, **TUS, "Upload-Length": "10", "Upload-Metadata": value})
    assert r.status_code == 400


def test_deferred_length_is_declared_by_a_later_patch(client, auth):
    url = create(client, auth, None)
    r = head(client, url, auth)
    assert r.headers["upload-defer-length"] == "1" and "upload-length" not in r.headers
    assert patch(client, url, auth, 0, b"abc").status_code == 204
    assert patch(client, url, auth, 3, b"de", **{"Upload-Length": "8"}).status_code == 204
    r = head(client, url, auth)
    assert r.headers["upload-length"] == "8" and "upload-defer-length" not in r.headers
    r = patch(client, url, auth, 5, b"f", **{"Upload-Length": "9"})
    assert r.status_code == 409 and r.headers["upload-offset"] == "5"


def test_creation_with_upload_stores_the_first_bytes(client, auth):
    r = client.post(
        "/files/",
        content=b"hello",
        headers={
            **auth,
            **TUS,
            "Upload-Length": "10",
            "Content-Type": "application/offset+octet-stream",
        },
    )
    assert r.status_code == 201
    assert r.headers["upload-offset"] == "5"
    assert head(client, r.headers["location"], auth).headers["upload-offset"] == "5"


def test_creation_with_a_body_of_another_type_is_415(client, auth):
    r = client.post(
        "/files/",
        content=b"hello",
        headers={
            **auth,
            **TUS,
            "Upload-Length": "10",
            "Content-Type": "text/plain",
        },
    )
    assert r.status_code == 415


def test_creation_with_the_whole_image_sets_the_avatar(client, auth, image):
    r = client.post(
        "/files/",
        content=image,
        headers={
            **auth,
            **TUS,
            "Upload-Length": str(len(image)),
            "Content-Type": "application/offset+octet-stream",
        },
    )
    assert r.status_code == 201 and r.headers["upload-offset"] == str(len(image))
    status = client.get(r.headers["location"], headers=auth).json()
    assert client.get("/me/avatar", headers=auth).json()["version"] == status["avatar"]["version"]


# -- completion -------------------------------------------------------------------------------


def test_last_patch_swaps_the_avatar_before_answering(client, auth, image):
    url = create(client, auth, len(image), **{"Upload-Metadata": metadata(filename="me.jpg")})
    assert patch(client, url, auth, 0, image[:1000]).status_code == 204
    r = patch(client, url, auth, 1000, image[1000:])
    assert r.status_code == 204 and r.headers["upload-offset"] == str(len(image))
    avatar = client.get("/me/avatar", headers=auth)
    assert avatar.status_code == 200
    status = client.get(url, headers=auth).json()
    assert status["state"] == "done" and status["avatar"]["version"] == avatar.json()["version"]
    # A retry of the final PATCH whose answer was lost gets the same answer.
    again = patch(client, url, auth, len(image), b"")
    assert again.status_code == 204 and again.headers["upload-offset"] == str(len(image))


def test_a_file_that_is_no_image_is_rejected_and_marked_failed(client, auth):
    data = b"this is not an image at all" * 10
    url = create(client, auth, len(data))
    r = patch(client, url, auth, 0, data)
    assert 400 <= r.status_code < 500
    assert r.headers["content-type"] == "application/json"
    assert r.json()["code"]
    assert head(client, url, auth).headers["upload-offset"] == str(len(data))
    status = client.get(url, headers=auth).json()
    assert status["state"] == "failed" and status["failure"]["code"] == r.json()["code"]
    assert client.get("/me/avatar", headers=auth).status_code == 404


# -- checksum ---------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["sha1", "md5", "sha256"])
def test_a_matching_checksum_is_accepted(client, auth, algorithm):
    url = create(client, auth, 10)
    r = patch(client, url, auth, 0, b"hello", **{"Upload-Checksum": checksum(algorithm, b"hello")})
    assert r.status_code == 204 and r.headers["upload-offset"] == "5"


def test_a_checksum_mismatch_is_460_and_keeps_the_offset(client, auth):
    url = create(client, auth, 20)
    assert patch(client, url, auth, 0, b"hello").status_code == 204
    r = patch(client, url, auth, 5, b"world", **{"Upload-Checksum": checksum("sha1", b"other")})
    assert r.status_code == 460
    assert head(client, url, auth).headers["upload-offset"] == "5"
    assert patch(client, url, auth, 5, b"world", **{"Upload-Checksum": checksum("sha1", b"world")}).status_code == 204


@pytest.mark.parametrize("value", ["crc32 AAAA", "sha1 !!!", "sha1 " + base64.b64encode(b"short").decode(), "sha1"])
def test_an_unsupported_or_malformed_checksum_is_400(client, auth, value):
    url = create(client, auth, 10)
    assert patch(client, url, auth, 0, b"hello", **{"Upload-Checksum": value}).status_code == 400
    assert head(client, url, auth).headers["upload-offset"] == "0"


# -- termination ------------------------------------------------------------------------------


def test_delete_terminates_the_upload(client, auth):
    url = create(client, auth, 10)
    patch(client, url, auth, 0, b"hello")
    r = client.delete(url, headers={**auth, **TUS})
    assert r.status_code == 204 and r.headers["tus-resumable"] == "1.0.0"
    assert head(client, url, auth).status_code in (404, 410)
    assert patch(client, url, auth, 5, b"world").status_code in (404, 410)


# -- concatenation ----------------------------------------------------------------------------


def _partial(client, auth, data: bytes) -> str:
    url = create(client, auth, len(data), **{"Upload-Concat": "partial"})
    assert patch(client, url, auth, 0, data).status_code == 204
    return url


def test_partial_uploads_concatenate_into_the_avatar(client, auth, image):
    third = len(image) // 3
    parts = [image[:third], image[third : 2 * third], image[2 * third :]]
    urls = [_partial(client, auth, part) for part in parts]
    assert head(client, urls[0], auth).headers["upload-concat"] == "partial"
    r = client.post("/files/", headers={**auth, **TUS, "Upload-Concat": "final;" + " ".join(urls)})
    assert r.status_code == 201
    final = r.headers["location"]
    h = head(client, final, auth)
    assert h.headers["upload-concat"] == "final;" + " ".join(urls)
    assert h.headers["upload-length"] == h.headers["upload-offset"] == str(len(image))
    status = client.get(final, headers=auth).json()
    assert client.get("/me/avatar", headers=auth).json()["version"] == status["avatar"]["version"]
    assert patch(client, final, auth, len(image), b"x").status_code == 403


def test_final_upload_of_an_unfinished_part_waits_for_it(client, auth):
    url = create(client, auth, 10, **{"Upload-Concat": "partial"})
    patch(client, url, auth, 0, b"hello")
    r = client.post("/files/", headers={**auth, **TUS, "Upload-Concat": f"final;{url}"})
    assert r.status_code == 201 and "upload-offset" not in r.headers
    assert "upload-offset" not in head(client, r.headers["location"], auth).headers


@pytest.mark.parametrize("value", ["final;", "final;/elsewhere/abc", "whole", "final;{u} {u}"])
def test_malformed_concat_is_400(client, auth, value):
    url = _partial(client, auth, b"abc")
    r = client.post("/files/", headers={**auth, **TUS, "Upload-Concat": value.format(u=url)})
    assert r.status_code == 400


def test_final_upload_with_a_length_is_400(client, auth):
    url = _partial(client, auth, b"abc")
    r = client.post("/files/", headers={**auth, **TUS, "Upload-Concat": f"final;{url}", "Upload-Length": "3"})
    assert r.status_code == 400
