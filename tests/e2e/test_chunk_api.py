"""The JSON chunk API against a real server process, with httpx."""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.support import images
from tests.support.config import API_KEY
from tests.support.encoding import b64

URL = "/accounts/profile-image"
# Once per deployment: local disk, the S3 backend (SeaweedFS) and a Redis Cluster; the protocol
# must not tell them apart.
pytestmark = [pytest.mark.client(auth=True), pytest.mark.backends("local", "s3", "cluster")]


def split(data: bytes, n: int) -> list[bytes]:
    size = -(-len(data) // n)
    return [data[i * size : (i + 1) * size] for i in range(n)]


def chunk(part: bytes, index: int, total: int, name: str = "me.jpg", **extra) -> dict:
    return {
        "file_name": name,
        "file": b64(part),
        "content_type": "image/jpeg",
        "is_chunk": True,
        "chunk_index": index,
        "total_chunks": total,
        **extra,
    }


def avatar_pixel(client: httpx.Client, user: str, size: int = 64) -> tuple[int, ...]:
    r = client.get(f"/avatars/{user}", params={"size": size})
    assert r.status_code == 200
    return Image.open(io.BytesIO(r.content)).convert("RGB").getpixel((size // 2, size // 2))


def test_three_chunks_out_of_order_become_the_avatar(client, user):
    parts = split(images.jpeg(600, 400, colour=(10, 20, 200)), 3)
    first = client.post(URL, json=chunk(parts[2], 2, 3))
    assert first.status_code == 200
    body = first.json()
    assert body["received_chunks"] == [2] and body["missing_chunks"] == [0, 1] and body["complete"] is False
    upload_id = body["upload_id"]
    assert len(upload_id) >= 22  # >= 128 bits
    second = client.post(URL, json=chunk(parts[0], 0, 3)).json()
    assert second["upload_id"] == upload_id and second["missing_chunks"] == [1]
    last = client.post(URL, json=chunk(parts[1], 1, 3))
    assert last.status_code == 200
    done = last.json()
    assert done["complete"] is True and done["state"] == "done"
    assert done["avatar"]["sizes"] == [512, 256, 128, 64]
    r, g, b = avatar_pixel(client, user)
    assert b > 150 and r < 60
    me = client.get("/me/avatar").json()
    assert me["version"] == done["avatar"]["version"]


def test_whole_image_without_chunks_becomes_the_avatar_in_one_request(client, user):
    r = client.post(
        URL, json={"file_name": "me.jpg", "file": b64(images.jpeg(colour=(250, 250, 0))), "content_type": "image/jpeg"}
    )
    assert r.status_code == 200 and r.json()["complete"] is True
    red, green, blue = avatar_pixel(client, user)
    assert red > 200 and green > 200 and blue < 60


def test_the_sample_jpeg_is_accepted_as_a_whole_image(client, user):
    sample = (Path(__file__).parents[1] / "fixtures" / "seed001.jpg").read_bytes()
    r = client.post(URL, json={"file_name": "sample.jpg", "file": b64(sample), "content_type": "image/jpeg"})
    assert r.status_code == 200
    assert client.get(f"/avatars/{user}").status_code == 200


def test_resent_chunk_is_idempotent_and_different_bytes_conflict(client):
    parts = split(images.jpeg(), 2)
    client.post(URL, json=chunk(parts[0], 0, 2))
    again = client.post(URL, json=chunk(parts[0], 0, 2))
    assert again.status_code == 200 and again.json()["duplicate"] is True
    other = client.post(URL, json=chunk(b"other bytes", 0, 2))
    assert other.status_code == 409 and other.json()["code"] == "chunk-conflict"
    assert client.post(URL, json=chunk(parts[1], 1, 2)).json()["complete"] is True


def test_last_chunk_resent_after_a_lost_answer_reports_the_finished_upload(client):
    parts = split(images.jpeg(), 2)
    upload_id = client.post(URL, json=chunk(parts[0], 0, 2)).json()["upload_id"]
    version = client.post(URL, json=chunk(parts[1], 1, 2)).json()["avatar"]["version"]
    again = client.post(URL, json=chunk(parts[1], 1, 2, upload_id=upload_id))
    assert again.status_code == 200
    assert again.json()["complete"] is True and again.json()["avatar"]["version"] == version


def test_total_chunks_or_type_that_differ_from_the_session_conflict(client):
    parts = split(images.jpeg(), 3)
    client.post(URL, json=chunk(parts[0], 0, 3))
    r = client.post(URL, json=chunk(parts[1], 1, 4))
    assert r.status_code == 409 and r.json()["code"] == "total-chunks-mismatch"
    r = client.post(URL, json={**chunk(parts[1], 1, 3), "content_type": "image/png"})
    assert r.status_code == 409 and r.json()["code"] == "content-type-mismatch"


def test_status_tells_a_returning_client_where_it_stands(client):
    parts = split(images.jpeg(), 3)
    upload_id = client.post(URL, json=chunk(parts[1], 1, 3)).json()["upload_id"]
    status = client.get(f"{URL}/uploads/{upload_id}")
    assert status.status_code == 200
    body = status.json()
    assert body["received_chunks"] == [1] and body["missing_chunks"] == [0, 2]
    assert body["state"] == "open" and body["expires_at"].endswith("Z")
    for index in (0, 2):
        client.post(URL, json=chunk(parts[index], index, 3, upload_id=upload_id))
    done = client.get(f"{URL}/uploads/{upload_id}").json()
    assert done["state"] == "done" and "version" in done["avatar"]


def test_concurrent_first_chunks_under_one_name_make_one_upload(client, user):
    # Every chunk sent at once, none naming an upload: each request may create one, and all
    # must end in the one the file name's alias names, which gets every chunk and completes.
    parts = split(images.jpeg(600, 400, colour=(200, 20, 10)), 6)
    with ThreadPoolExecutor(len(parts)) as pool:
        answers = list(pool.map(lambda i: client.post(URL, json=chunk(parts[i], i, 6, name="race.jpg")), range(6)))
    assert [a.status_code for a in answers] == [200] * 6
    assert len({a.json()["upload_id"] for a in answers}) == 1
    done = client.get(f"{URL}/uploads/{answers[0].json()['upload_id']}").json()
    assert done["state"] == "done" and done["received_chunks"] == list(range(6))
    r, g, b = avatar_pixel(client, user)
    assert r > 150 and b < 60


def test_client_chosen_upload_id_keys_the_session(client):
    parts = split(images.jpeg(), 2)
    a = client.post(URL, json=chunk(parts[0], 0, 2, upload_id="phone-42")).json()
    b = client.post(URL, json=chunk(parts[1], 1, 2, upload_id="phone-42", name="renamed.jpg")).json()
    assert a["upload_id"] == b["upload_id"] and b["complete"] is True


def test_abandoned_upload_is_gone(client):
    parts = split(images.jpeg(), 2)
    upload_id = client.post(URL, json=chunk(parts[0], 0, 2)).json()["upload_id"]
    assert client.delete(f"{URL}/uploads/{upload_id}").status_code == 204
    assert client.get(f"{URL}/uploads/{upload_id}").status_code == 410
    # The file name is free again: the next chunk starts a new upload.
    fresh = client.post(URL, json=chunk(parts[0], 0, 2)).json()
    assert fresh["upload_id"] != upload_id and fresh["received_chunks"] == [0]


def test_another_users_upload_is_not_found(client, server, token):
    parts = split(images.jpeg(), 2)
    upload_id = client.post(URL, json=chunk(parts[0], 0, 2)).json()["upload_id"]
    intruder = {"Authorization": f"Bearer {token('mallory')}"}
    with httpx.Client(base_url=server.url, headers=intruder) as other:
        assert other.get(f"{URL}/uploads/{upload_id}").status_code == 404
        assert other.delete(f"{URL}/uploads/{upload_id}").status_code == 404
        r = other.post(URL, json=chunk(parts[1], 1, 2, upload_id=upload_id))
        assert r.status_code == 404 and r.json()["code"] == "upload-not-found"
    assert client.get(f"{URL}/uploads/{upload_id}").json()["received_chunks"] == [0]


def test_api_key_authenticates_as_its_user(server):
    with httpx.Client(base_url=server.url, headers={"X-Api-Key": API_KEY}) as c:
        r = c.post(URL, json={"file_name": "k.jpg", "file": b64(images.jpeg()), "content_type": "image/jpeg"})
        assert r.status_code == 200
        assert c.get("/avatars/api-key-user").status_code == 200


def test_invalid_image_fails_the_upload_with_422_and_keeps_the_old_avatar(client, user):
    client.post(URL, json={"file_name": "ok.jpg", "file": b64(images.jpeg()), "content_type": "image/jpeg"})
    before = client.get(f"/avatars/{user}").content
    parts = split(images.truncated_jpeg(), 2)
    client.post(URL, json=chunk(parts[0], 0, 2, name="bad.jpg"))
    r = client.post(URL, json=chunk(parts[1], 1, 2, name="bad.jpg"))
    assert r.status_code == 422 and r.json()["code"] in {"truncated-image", "invalid-image"}
    assert r.json()["state"] == "failed"
    assert client.get(f"/avatars/{user}").content == before


# -- bad input: each gets its documented 4xx and code, and never a 5xx -------------------------

GOOD = {
    "file_name": "me.jpg",
    "file": b64(b"\xff\xd8\xff"),
    "content_type": "image/jpeg",
    "is_chunk": True,
    "chunk_index": 0,
    "total_chunks": 2,
}


def with_(**changes):
    body = dict(GOOD)
    for key, value in changes.items():
        if value is ...:
            body.pop(key)
        else:
            body[key] = value
    return body


BAD_JSON = [
    ("not json", b"this is not json", 400, "invalid-json"),
    ("json array", b"[1, 2, 3]", 400, "invalid-json"),
    ("json string", b'"hello"', 400, "invalid-json"),
    (
        "NaN index",
        b'{"file_name": "a.jpg", "file": "AAAA", "content_type": "image/jpeg", "is_chunk": true,'
        b' "chunk_index": NaN, "total_chunks": 2}',
        400,
        "invalid-json",
    ),
    (
        "5000-digit index",
        b'{"file_name": "a.jpg", "file": "AAAA", "content_type": "image/jpeg", "is_chunk": true,'
        b' "chunk_index": ' + b"9" * 5000 + b', "total_chunks": 2}',
        400,
        "invalid-json",
    ),
    ("bad utf-8", b'{"file_name": "\xff\xfe"}', 400, "invalid-json"),
    ("empty body", b"", 400, "invalid-json"),
]

BAD_FIELDS = [
    ("missing file_name", with_(file_name=...), 400, "missing-field"),
    ("missing file", with_(file=...), 400, "missing-field"),
    ("missing content_type", with_(content_type=...), 400, "missing-field"),
    ("file_name not a string", with_(file_name=12), 400, "invalid-field"),
    ("empty file_name", with_(file_name=""), 400, "invalid-file-name"),
    ("slash in file_name", with_(file_name="../../etc/passwd"), 400, "invalid-file-name"),
    ("backslash in file_name", with_(file_name="..\\win.ini"), 400, "invalid-file-name"),
    ("control char in file_name", with_(file_name="a\x00.jpg"), 400, "invalid-file-name"),
    ("dot-dot file_name", with_(file_name=".."), 400, "invalid-file-name"),
    ("huge file_name", with_(file_name="a" * 300 + ".jpg"), 400, "invalid-file-name"),
    ("bad base64", with_(file="not*base64!"), 400, "invalid-base64"),
    ("base64 padding junk", with_(file="AAAA===="), 400, "invalid-base64"),
    ("empty file", with_(file=""), 400, "empty-file"),
    ("file not a string", with_(file=[1, 2]), 400, "invalid-field"),
    ("is_chunk not a bool", with_(is_chunk="yes"), 400, "invalid-field"),
    ("negative index", with_(chunk_index=-1), 400, "invalid-chunk-index"),
    ("huge index", with_(chunk_index=2**70), 400, "invalid-chunk-index"),
    ("float index", with_(chunk_index=1.5), 400, "invalid-field"),
    ("bool index", with_(chunk_index=True), 400, "invalid-field"),
    ("string index", with_(chunk_index="0"), 400, "invalid-field"),
    ("missing index", with_(chunk_index=...), 400, "missing-field"),
    ("index equal to total", with_(chunk_index=2), 400, "invalid-chunk-index"),
    ("total zero", with_(total_chunks=0, chunk_index=0), 400, "invalid-total-chunks"),
    ("total negative", with_(total_chunks=-3), 400, "invalid-total-chunks"),
    ("total huge", with_(total_chunks=10**9), 400, "invalid-total-chunks"),
    ("total bool", with_(total_chunks=True), 400, "invalid-field"),
    ("upload_id not a string", with_(upload_id=5), 400, "invalid-field"),
    ("upload_id too long", with_(upload_id="x" * 500), 400, "invalid-upload-id"),
    ("text content type", with_(content_type="text/html"), 415, "unsupported-content-type"),
    ("svg content type", with_(content_type="image/svg+xml"), 415, "unsupported-content-type"),
    ("unknown server-shaped upload_id", with_(upload_id="A" * 32, chunk_index=1), 404, "upload-not-found"),
]


@pytest.mark.parametrize("name,raw,status,code", BAD_JSON, ids=[c[0] for c in BAD_JSON])
def test_malformed_bodies_are_400(client, name, raw, status, code):
    r = client.post(URL, content=raw, headers={"Content-Type": "application/json"})
    assert (r.status_code, r.json()["code"]) == (status, code)
    assert r.json()["error"]


@pytest.mark.parametrize("name,body,status,code", BAD_FIELDS, ids=[c[0] for c in BAD_FIELDS])
def test_bad_fields_get_their_status_and_code(client, name, body, status, code):
    r = client.post(URL, json=body)
    assert (r.status_code, r.json()["code"]) == (status, code)
    assert r.json()["error"]


@pytest.mark.parametrize(
    "headers,code",
    [
        ({}, "unauthenticated"),
        ({"Authorization": "Bearer not.a.token"}, "invalid-token"),
        ({"Authorization": "Basic YTpi"}, "invalid-authorization"),
        ({"X-Api-Key": "wrong"}, "invalid-api-key"),
    ],
)
def test_unauthenticated_requests_are_401(server, headers, code):
    r = httpx.post(server.url + URL, json=GOOD, headers=headers)
    assert r.status_code == 401 and r.json()["code"] == code
    assert r.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "factory,status,code",
    [
        (images.text_file, 415, "unsupported-format"),
        (images.svg_with_script, 415, "unsupported-format"),
        (images.truncated_jpeg, 422, None),
        (images.png_bomb, 413, "too-many-pixels"),
    ],
    ids=["text named .jpg", "svg named .jpg", "truncated jpeg", "decompression bomb"],
)
def test_bytes_that_are_not_an_acceptable_image_are_refused(client, user, factory, status, code):
    r = client.post(URL, json={"file_name": "me.jpg", "file": b64(factory()), "content_type": "image/jpeg"})
    assert r.status_code == status
    if code:
        assert r.json()["code"] == code
    assert client.get(f"/avatars/{user}").status_code == 404


def test_oversize_chunk_and_oversize_total_are_413(start_server, token, on_redis_backend):
    small = start_server(**on_redis_backend, limits={"max_chunk_bytes": 1000, "max_image_bytes": 2500})
    with httpx.Client(base_url=small.url, headers={"Authorization": f"Bearer {token('u')}"}) as c:
        r = c.post(URL, json=chunk(b"x" * 1001, 0, 4))
        assert r.status_code == 413 and r.json()["code"] == "chunk-too-large"
        for index in range(2):
            assert c.post(URL, json=chunk(b"y" * 1000, index, 4)).status_code == 200
        r = c.post(URL, json=chunk(b"z" * 1000, 2, 4))
        assert r.status_code == 413 and r.json()["code"] == "upload-too-large"
        r = c.post(URL, json={"file_name": "w.jpg", "file": b64(b"w" * 2600), "content_type": "image/jpeg"})
        assert r.status_code == 413
        # Far past any limit: refused from Content-Length, before reading the body.
        r = c.post(URL, content=b"{" + b" " * 200_000, headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and r.json()["code"] == "body-too-large"
    assert not list((small.workdir / "storage" / "work").iterdir())


def test_expired_session_answers_gone_and_its_bytes_are_reaped(start_server, token, on_redis_backend):
    short = start_server(**on_redis_backend, uploads={"expire_seconds": 1, "reap_interval_seconds": 0.2})
    uploads = short.workdir / "storage" / "uploads"
    with httpx.Client(base_url=short.url, headers={"Authorization": f"Bearer {token('u')}"}) as c:
        parts = split(images.jpeg(), 2)
        upload_id = c.post(URL, json=chunk(parts[0], 0, 2)).json()["upload_id"]
        assert (uploads / upload_id).exists()
        deadline = time.monotonic() + 10
        while c.get(f"{URL}/uploads/{upload_id}").status_code != 410:
            assert time.monotonic() < deadline, "upload never expired"
            time.sleep(0.1)
        r = c.post(URL, json=chunk(parts[1], 1, 2, upload_id=upload_id))
        assert r.status_code == 410 and r.json()["code"] == "upload-expired"
        while (uploads / upload_id).exists():
            assert time.monotonic() < deadline, "expired upload's bytes were never removed"
            time.sleep(0.1)
