"""RFC 9530 `Repr-Digest` and `Want-Repr-Digest` on the IETF draft's uploads (raw httpx, real servers).

The server keeps a running digest of the stored bytes in the upload session (chunks/running_digest.py):
it checks a client's `Repr-Digest` of the whole upload before the avatar is made and tells the digest
of what it holds to a client that asks with `Want-Repr-Digest`, across requests and server restarts."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

from chunks import running_digest
from tests.e2e.test_ietf_conformance import PARTIAL, append, draft, start
from tests.support import images

pytestmark = pytest.mark.skipif(not running_digest.AVAILABLE, reason="libcrypto could not be loaded")

MISMATCHED = "https://iana.org/assignments/http-problem-types#digest-mismatched-values"


def field(algorithm: str, data: bytes) -> str:
    key = {"sha256": "sha-256", "sha512": "sha-512"}[algorithm]
    return f"{key}=:{base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}:"


def head(client, auth, url, **headers: str) -> httpx.Response:
    r = client.head(url, headers={**auth, **draft(8), **headers})
    assert r.status_code == 204, r.text
    return r


@pytest.fixture(scope="module")
def picture() -> bytes:
    data = images.jpeg(400, 300)
    assert len(data) > 3000  # the tests below cut it at 2000
    return data


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
def test_a_matching_repr_digest_on_the_completing_patch_makes_the_avatar(client, auth, user, picture, algorithm):
    url = start(client, auth, 8).headers["location"]
    assert append(client, auth, 8, url, 0, picture[:1000], False).status_code == 204
    r = append(client, auth, 8, url, 1000, picture[1000:], True, **{"Repr-Digest": field(algorithm, picture)})
    assert r.status_code == 200, r.text
    assert client.get(f"/avatars/{user}").status_code == 200


def test_a_wrong_repr_digest_is_refused_and_no_avatar_is_made(client, auth, user, picture):
    url = start(client, auth, 8).headers["location"]
    append(client, auth, 8, url, 0, picture[:1000], False)
    wrong = field("sha256", picture[:-1] + b"\0")
    r = append(client, auth, 8, url, 1000, picture[1000:], True, **{"Repr-Digest": wrong})
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == MISMATCHED and r.json()["code"] == "repr-digest-mismatch"
    assert r.headers["upload-complete"] == "?1"  # the upload is over: it failed
    assert client.get(f"/avatars/{user}").status_code == 404
    # It stays failed: a retry of the completion cannot turn it into an avatar.
    again = append(client, auth, 8, url, len(picture), b"", True, **{"Repr-Digest": field("sha256", picture)})
    assert again.status_code == 400 and again.json()["code"] == "completed-upload"
    assert client.get(f"/avatars/{user}").status_code == 404


def test_a_repr_digest_given_at_creation_is_checked_when_the_upload_completes(client, auth, user, picture):
    url = start(client, auth, 8, **{"Repr-Digest": field("sha512", picture[::-1])}).headers["location"]
    r = append(client, auth, 8, url, 0, picture, True)
    assert r.status_code == 400 and r.json()["code"] == "repr-digest-mismatch"
    assert client.get(f"/avatars/{user}").status_code == 404

    url = start(client, auth, 8, **{"Repr-Digest": field("sha512", picture)}).headers["location"]
    assert append(client, auth, 8, url, 0, picture, True).status_code == 200
    assert client.get(f"/avatars/{user}").status_code == 200


def test_a_whole_image_creation_with_its_repr_digest(client, auth, user, picture):
    headers = {**auth, **draft(8, True), "Repr-Digest": field("sha256", picture), "Want-Repr-Digest": "sha-256=1"}
    r = client.post("/files/", content=picture, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["repr-digest"] == field("sha256", picture)


def test_want_repr_digest_gets_the_digest_of_the_stored_bytes_on_head_and_completion(client, auth, picture):
    url = start(client, auth, 8).headers["location"]
    assert "repr-digest" not in head(client, auth, url).headers  # only when asked
    assert head(client, auth, url, **{"Want-Repr-Digest": "sha-256=1"}).headers["repr-digest"] == field("sha256", b"")
    append(client, auth, 8, url, 0, picture[:777], False)
    append(client, auth, 8, url, 777, picture[777:2000], False)
    prefs = {"Want-Repr-Digest": "sha-256=5, sha-512=3"}
    assert head(client, auth, url, **prefs).headers["repr-digest"] == field("sha256", picture[:2000])
    prefs = {"Want-Repr-Digest": "sha-256=3, sha-512=5, md5=9"}
    assert head(client, auth, url, **prefs).headers["repr-digest"] == field("sha512", picture[:2000])
    assert "repr-digest" not in head(client, auth, url, **{"Want-Repr-Digest": "md5=9"}).headers
    r = append(client, auth, 8, url, 2000, picture[2000:], True, **{"Want-Repr-Digest": "sha-512=1"})
    assert r.status_code == 200, r.text
    assert r.headers["repr-digest"] == field("sha512", picture)
    # The finished upload still tells what it received.
    assert head(client, auth, url, **{"Want-Repr-Digest": "sha-256=1"}).headers["repr-digest"] == field(
        "sha256", picture
    )


def test_a_rejected_content_digest_does_not_move_the_running_digest(client, auth, user, picture):
    url = start(client, auth, 8).headers["location"]
    append(client, auth, 8, url, 0, picture[:500], False)
    bad = append(client, auth, 8, url, 500, b"x" * 300, False, **{"Content-Digest": field("sha256", b"y" * 300)})
    assert bad.status_code == 400
    r = append(client, auth, 8, url, 500, picture[500:], True, **{"Repr-Digest": field("sha256", picture)})
    assert r.status_code == 200, r.text
    assert client.get(f"/avatars/{user}").status_code == 200


def test_a_store_that_lost_bytes_cannot_vouch_for_a_repr_digest(server, client, auth, user, picture):
    """Bytes lost under the server (the stream file cut short): the running digest no longer
    describes the stored bytes, so the server gives none and refuses to check one."""
    url = start(client, auth, 8).headers["location"]
    append(client, auth, 8, url, 0, picture[:1000], False)
    stream = server.workdir / "storage" / "uploads" / url.rstrip("/").rsplit("/", 1)[-1] / "data"
    with open(stream, "r+b") as f:
        f.truncate(400)
    want = {"Want-Repr-Digest": "sha-256=1"}
    state = head(client, auth, url, **want)
    assert state.headers["upload-offset"] == "400" and "repr-digest" not in state.headers
    r = append(client, auth, 8, url, 400, picture[400:], True, **{"Repr-Digest": field("sha256", picture)})
    assert r.status_code == 422 and r.json()["code"] == "repr-digest-unavailable"
    # Nothing was guessed: the upload failed with that code, and no avatar is made from it later
    # (the server completes fully received uploads by itself, which must not skip the check).
    described = client.get(url, headers=auth).json()
    assert (described["state"], described["failure"]["code"]) == ("failed", "repr-digest-unavailable")
    assert client.get(f"/avatars/{user}").status_code == 404


# -- across a crash ---------------------------------------------------------------------------

MiB = 1024 * 1024


def noisy_png() -> bytes:
    """A PNG of about 3 MiB (noise does not compress): more than two of the store's 1 MiB checkpoints."""
    im = Image.frombytes("RGB", (1100, 1000), os.urandom(1100 * 1000 * 3))
    out = io.BytesIO()
    im.save(out, "PNG", compress_level=1)
    return out.getvalue()


def send_part_of_a_patch(base_url: str, path: str, auth: dict[str, str], data: bytes, sent: int) -> socket.socket:
    """A PATCH that declares all of `data` but sends only its first `sent` bytes, then stalls."""
    where = urlsplit(base_url)
    sock = socket.create_connection((where.hostname, where.port), timeout=30)
    head_lines = [
        f"PATCH {path} HTTP/1.1",
        f"Host: {where.hostname}:{where.port}",
        f"Authorization: {auth['Authorization']}",
        "Upload-Draft-Interop-Version: 8",
        "Upload-Complete: ?1",
        "Upload-Offset: 0",
        f"Content-Type: {PARTIAL}",
        f"Content-Length: {len(data)}",
    ]
    sock.sendall(("\r\n".join(head_lines) + "\r\n\r\n").encode() + data[:sent])
    return sock


def test_the_repr_digest_survives_a_sigkill_mid_patch_and_a_restart(start_server, token, user):
    data = noisy_png()
    auth = {"Authorization": f"Bearer {token(user)}"}
    server = start_server()
    with httpx.Client(base_url=server.url, timeout=30) as c:
        url = start(c, auth, 8).headers["location"]
        path = urlsplit(url).path if url.startswith("http") else url
        stream = server.workdir / "storage" / "uploads" / path.rstrip("/").rsplit("/", 1)[-1] / "data"
        sock = send_part_of_a_patch(server.url, path, auth, data, int(2.5 * MiB))
        # Once the stream file holds more than the first 1 MiB checkpoint and a block, that
        # checkpoint (offset and digest state together) is in Redis.
        deadline = time.monotonic() + 30
        while not (stream.exists() and stream.stat().st_size > int(1.2 * MiB)):
            assert time.monotonic() < deadline, "the server never stored the first bytes"
            time.sleep(0.02)
        server.kill()
        sock.close()

    restarted = start_server(root=server.workdir, config=server.config, port=server.port)
    with httpx.Client(base_url=restarted.url, timeout=60) as c:
        state = head(c, auth, url, **{"Want-Repr-Digest": "sha-256=1"})
        offset = int(state.headers["upload-offset"])
        assert MiB <= offset <= int(2.5 * MiB)
        assert state.headers["repr-digest"] == field("sha256", data[:offset])
        middle = offset + (len(data) - offset) // 2
        assert append(c, auth, 8, url, offset, data[offset:middle], False).status_code == 204
        r = append(
            c,
            auth,
            8,
            url,
            middle,
            data[middle:],
            True,
            **{"Repr-Digest": field("sha512", data), "Want-Repr-Digest": "sha-512=1"},
        )
        assert r.status_code == 200, r.text
        assert r.headers["repr-digest"] == field("sha512", data)
        assert c.get(f"/avatars/{user}").status_code == 200
