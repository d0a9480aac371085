"""Serving avatars: sizes, caching headers, negotiation, the JSON description, removal."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.support import images
from tests.support.encoding import b64

URL = "/accounts/profile-image"
pytestmark = pytest.mark.client(auth=True)


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


def test_delete_me_avatar_removes_it_and_its_files(client, user, server):
    upload(client, images.jpeg())
    assert client.delete("/me/avatar").status_code == 204
    assert client.get(f"/avatars/{user}").status_code == 404
    assert client.delete("/me/avatar").status_code == 404
    avatar_root = Path(server.config["storage"]["root"]) / "avatars"
    leftovers = [p for p in avatar_root.rglob("*") if p.is_file() and p.suffix in {".webp", ".jpg", ".png"}]
    assert all(user not in str(p) for p in leftovers)


def test_a_new_avatar_removes_the_previous_versions_files(client, user, server):
    upload(client, images.jpeg(colour=(255, 0, 0)))
    avatar_root = Path(server.config["storage"]["root"]) / "avatars"
    before = {p for p in avatar_root.rglob("*") if p.is_file()}
    upload(client, images.jpeg(colour=(0, 255, 0)))
    after = {p for p in avatar_root.rglob("*") if p.is_file()}
    removed = before - after
    assert removed and all(p.suffix in {".webp", ".jpg", ".png"} for p in removed)


def test_bad_size_is_400(client, user):
    upload(client, images.jpeg())
    r = client.get(f"/avatars/{user}", params={"size": "big"})
    assert r.status_code == 400 and r.json()["code"] == "invalid-size"


def test_me_avatar_needs_authentication(server):
    assert httpx.get(server.url + "/me/avatar").status_code == 401
    assert httpx.delete(server.url + "/me/avatar").status_code == 401


def test_healthz(server):
    r = httpx.get(server.url + "/healthz")
    assert r.status_code == 200 and r.json()["redis"] is True
