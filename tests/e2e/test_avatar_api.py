"""Serving avatars: sizes, caching headers, negotiation, the JSON description, removal."""

from __future__ import annotations

import hashlib
import io
import threading
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.support import images
from tests.support.encoding import b64

URL = "/accounts/profile-image"
# Once on local disk, once on the S3 backend (SeaweedFS): serving must not tell them apart.
pytestmark = [pytest.mark.client(auth=True), pytest.mark.backends("local", "s3")]
# For the tests that look at the files under storage.root; what the S3 store keeps in the bucket is
# checked in tests/integration/test_s3_avatar_store.py.
ON_DISK = pytest.mark.backends("local")


def upload(client: httpx.Client, data: bytes) -> dict:
    r = client.post(URL, json={"file_name": "a.jpg", "file": b64(data), "content_type": "image/jpeg"})
    assert r.status_code == 200, r.text
    return r.json()["avatar"]


def test_no_avatar_is_404(client, user):
    assert client.get(f"/avatars/{user}").status_code == 404
    assert client.get("/me/avatar").status_code == 404


@pytest.mark.parametrize("asked,served", [(None, 512), (512, 512), (300, 256), (100, 128), (1, 64), (9999, 512)])
def test_size_picks_the_nearest_configured_square(client, user, asked, served):
    upload(client, images.jpeg(800, 600))
    params = {} if asked is None else {"size": asked}
    r = client.get(f"/avatars/{user}", params=params)
    assert r.status_code == 200
    assert Image.open(io.BytesIO(r.content)).size == (served, served)


def test_headers_for_caching_and_safety(client, user):
    upload(client, images.jpeg())
    r = client.get(f"/avatars/{user}", params={"size": 128})
    assert r.headers["content-type"] == "image/webp"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "max-age" in r.headers["cache-control"]
    etag = r.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    again = client.get(f"/avatars/{user}", params={"size": 128}, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    other_size = client.get(f"/avatars/{user}", params={"size": 64}, headers={"If-None-Match": etag})
    assert other_size.status_code == 200


def test_clients_without_webp_get_the_fallback(client, user):
    upload(client, images.jpeg())
    r = client.get(f"/avatars/{user}", headers={"Accept": "image/jpeg,image/png;q=0.9"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(r.content)).format == "JPEG"


def test_a_fallback_made_on_first_request_answers_like_the_others(client, user):
    described = upload(client, images.jpeg(800, 600))
    jpeg = {"Accept": "image/jpeg"}

    first = client.get(f"/avatars/{user}", params={"size": 64}, headers=jpeg)
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    im = Image.open(io.BytesIO(first.content))
    assert (im.format, im.size, im.mode) == ("JPEG", (64, 64), "RGB") and not im.getexif()
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag != client.get(f"/avatars/{user}", params={"size": 64}).headers["etag"]
    cached = client.get(f"/avatars/{user}", params={"size": 64}, headers={**jpeg, "If-None-Match": etag})
    assert cached.status_code == 304
    again = client.get(described["fallback_urls"]["64"])
    assert again.status_code == 200 and again.content == first.content and again.headers["etag"] == etag
    assert client.get("/me/avatar").json()["fallback_urls"] == described["fallback_urls"]


@ON_DISK
def test_an_upload_stores_webp_only_and_a_fallback_is_written_once(client, user, server):
    upload(client, images.jpeg())
    digest = hashlib.sha256(user.encode()).hexdigest()  # where avatars/store.py keeps this user's files
    user_dir = Path(server.config["storage"]["root"]) / "avatars" / digest[:2] / digest
    assert {p.suffix for p in user_dir.rglob("v-*/*")} == {".webp"}

    first = client.get(f"/avatars/{user}", params={"size": 128}, headers={"Accept": "image/jpeg"})
    (made,) = user_dir.rglob("*.jpg")
    written = made.stat()
    second = client.get(f"/avatars/{user}", params={"size": 128}, headers={"Accept": "image/jpeg"})

    assert made.name == "128.jpg" and second.content == first.content
    assert (made.stat().st_ino, made.stat().st_mtime_ns) == (written.st_ino, written.st_mtime_ns)


def test_versioned_urls_are_immutable_and_stale_ones_disappear(client, user):
    first = upload(client, images.jpeg(colour=(255, 0, 0)))
    url = first["urls"]["128"]
    r = client.get(url)
    assert r.status_code == 200 and "immutable" in r.headers["cache-control"]
    second = upload(client, images.jpeg(colour=(0, 0, 255)))
    assert second["version"] != first["version"]
    assert client.get(url).status_code == 404
    assert client.get(second["urls"]["128"]).status_code == 200


def test_me_avatar_describes_the_current_version(client, user, server):
    described = upload(client, images.jpeg())
    me = client.get("/me/avatar").json()
    assert me["urls"]["128"].startswith(f"{server.url}/avatars/{user}/")
    assert described["urls"] == me["urls"]
    for key in ("version", "sizes", "urls", "width", "height", "content_type", "updated_at"):
        assert key in me
    assert me["version"] == described["version"]


@ON_DISK
def test_delete_me_avatar_removes_it_and_its_files(client, user, server):
    upload(client, images.jpeg())
    assert client.delete("/me/avatar").status_code == 204
    assert client.get(f"/avatars/{user}").status_code == 404
    assert client.delete("/me/avatar").status_code == 404
    avatar_root = Path(server.config["storage"]["root"]) / "avatars"
    leftovers = [p for p in avatar_root.rglob("*") if p.is_file() and p.suffix in {".webp", ".jpg", ".png"}]
    assert all(user not in str(p) for p in leftovers)


@ON_DISK
def test_a_new_avatar_removes_the_previous_versions_files(client, user, server):
    upload(client, images.jpeg(colour=(255, 0, 0)))
    avatar_root = Path(server.config["storage"]["root"]) / "avatars"
    before = {p for p in avatar_root.rglob("*") if p.is_file()}
    upload(client, images.jpeg(colour=(0, 255, 0)))
    after = {p for p in avatar_root.rglob("*") if p.is_file()}
    removed = before - after
    assert removed and all(p.suffix in {".webp", ".jpg", ".png"} for p in removed)


@pytest.mark.parametrize("size", ["big", "0", "-5", "1.5", "12e3", "1234567890", "9" * 400])
def test_bad_size_is_400_and_says_why(client, user, size):
    upload(client, images.jpeg())
    r = client.get(f"/avatars/{user}", params={"size": size})
    assert r.status_code == 400 and r.json()["code"] == "invalid-size"
    assert "size must" in r.json()["error"]


@pytest.mark.parametrize("asked", ["100000", "123456789", "000000512"])
def test_any_positive_size_picks_the_nearest_square(client, user, asked):
    upload(client, images.jpeg(800, 600))
    r = client.get(f"/avatars/{user}", params={"size": asked})
    assert r.status_code == 200, r.text
    assert Image.open(io.BytesIO(r.content)).size == (512, 512)


def test_reads_during_swaps_never_fail(user, auth, server, start_server):
    """Readers hammer the avatar while it is replaced again and again: every read is a whole
    image of one version or another, never a 5xx (a swap removes the old version's files)."""
    # A server of its own on the module's backend, without the per-address limit of anonymous
    # requests: the readers send thousands, which would also leave the module server's window spent.
    storage = {k: v for k, v in server.config["storage"].items() if k != "root"}
    server = start_server(storage=storage, limits={"anonymous_requests_per_window": 0})
    client = httpx.Client(base_url=server.url, headers=auth, timeout=30)
    colours = [images.jpeg(300, 300, colour=(i * 40 % 256, 90, 200)) for i in range(4)]
    upload(client, colours[0])
    stop = threading.Event()
    answers: list[tuple[int, bytes]] = []

    def read() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as reader:
            for _ in range(2000):  # bounded; ends early once the swaps are done
                if stop.is_set():
                    return
                r = reader.get(f"/avatars/{user}", params={"size": 64}, headers={"Accept": "image/webp"})
                answers.append((r.status_code, r.content))
                r = reader.get(f"/avatars/{user}")
                answers.append((r.status_code, r.content))

    readers = [threading.Thread(target=read) for _ in range(4)]
    for thread in readers:
        thread.start()
    try:
        for i in range(24):
            upload(client, colours[i % len(colours)])
    finally:
        stop.set()
        for thread in readers:
            thread.join(60)
        client.close()
    assert answers
    statuses = {status for status, _ in answers}
    assert statuses == {200}, statuses
    for _, body in answers:
        Image.open(io.BytesIO(body)).load()  # whole images, not cut short


def test_me_avatar_needs_authentication(server):
    assert httpx.get(server.url + "/me/avatar").status_code == 401
    assert httpx.delete(server.url + "/me/avatar").status_code == 401


def test_healthz(server):
    r = httpx.get(server.url + "/healthz")
    assert r.status_code == 200 and r.json()["redis"] is True
