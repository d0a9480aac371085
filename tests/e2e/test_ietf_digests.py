"""RFC 9530 `Content-Digest` on the IETF draft's creation and append requests (raw httpx)."""

from __future__ import annotations

import base64
import hashlib

import pytest

from tests.e2e.test_ietf_conformance import append, draft, start
from tests.support import images

MISMATCHED = "https://iana.org/assignments/http-problem-types#digest-mismatched-values"


def digest(algorithm: str, data: bytes) -> str:
    key = {"sha256": "sha-256", "sha512": "sha-512"}[algorithm]
    return f"{key}=:{base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}:"


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
def test_append_with_a_matching_digest_is_appended(client, auth, algorithm):
    url = start(client, auth, 8).headers["location"]
    r = append(client, auth, 8, url, 0, b"hello", False, **{"Content-Digest": digest(algorithm, b"hello")})
    assert r.status_code == 204 and r.headers["upload-offset"] == "5"


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
def test_append_with_a_wrong_digest_is_400_and_keeps_no_byte(client, auth, algorithm):
    url = start(client, auth, 8).headers["location"]
    append(client, auth, 8, url, 0, b"hello", False)
    r = append(client, auth, 8, url, 5, b"world", False, **{"Content-Digest": digest(algorithm, b"w0rld")})
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == MISMATCHED
    offset = client.head(url, headers={**auth, **draft(8)}).headers["upload-offset"]
    assert offset == "5"
    assert append(client, auth, 8, url, 5, b"world", False).status_code == 204


def test_creation_with_a_wrong_digest_keeps_no_byte(client, auth):
    image = images.jpeg(64, 64, colour=(10, 200, 10))
    r = client.post(
        "/files/", content=image, headers={**auth, **draft(8, True), "Content-Digest": digest("sha256", b"other")}
    )
    assert r.status_code == 400 and r.json()["type"] == MISMATCHED
    assert client.head(r.headers["location"], headers={**auth, **draft(8)}).headers["upload-offset"] == "0"


def test_a_digest_of_the_wrong_size_is_400_invalid(client, auth):
    url = start(client, auth, 8).headers["location"]
    r = append(client, auth, 8, url, 0, b"hello", False, **{"Content-Digest": "sha-256=:AAAA:"})
    assert r.status_code == 400
    assert r.json()["type"] == "https://iana.org/assignments/http-problem-types#digest-invalid-values"


def test_unknown_algorithms_are_ignored(client, auth):
    url = start(client, auth, 8).headers["location"]
    r = append(client, auth, 8, url, 0, b"hello", False, **{"Content-Digest": "md5=:AAAA:"})
    assert r.status_code == 204
