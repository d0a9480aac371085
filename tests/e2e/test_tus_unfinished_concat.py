"""tus `concatenation-unfinished`: a final upload created before its partial uploads finish.

Real server processes (two on one Redis and one storage root for the cluster case), raw httpx
as the client that creates the final upload first, tus-js-client for parallel uploads. The
finished avatar is checked by its pixels: a PNG carries CRCs, so a wrongly joined byte order
or a lost byte would be refused rather than shown.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.server import ServerProcess, StartServer
from tests.support.tus import TUS, create, eventually, head, patch
from tests.support.uploaders import centre_colour, close, marked_png

COLOUR = (200, 40, 90)


@pytest.fixture(scope="module")
def pair(start_module_server: StartServer) -> tuple[ServerProcess, ServerProcess]:
    first = start_module_server()
    return first, start_module_server(root=first.workdir, config=first.config)


@pytest.fixture()
def clients(pair):
    with httpx.Client(base_url=pair[0].url, timeout=30) as a, httpx.Client(base_url=pair[1].url, timeout=30) as b:
        yield a, b


def on(client: httpx.Client, url: str) -> str:
    return str(client.base_url) + urlsplit(url).path


def split(data: bytes, parts: int) -> list[bytes]:
    size = -(-len(data) // parts)
    return [data[i : i + size] for i in range(0, len(data), size)]


def final_of(client: httpx.Client, auth: dict[str, str], urls: list[str]) -> str:
    r = client.post("/files/", headers={**auth, **TUS, "Upload-Concat": "final;" + " ".join(urls)})
    assert r.status_code == 201, r.text
    return r.headers["location"]


def assert_avatar_shows(client: httpx.Client, auth: dict[str, str], user: str, final: str) -> None:
    status = eventually(lambda: _settled(client, auth, final), what="the final upload to settle")
    assert status["state"] == "done", status
    assert client.get("/me/avatar", headers=auth).json()["version"] == status["avatar"]["version"]
    avatar = client.get(f"/avatars/{user}", params={"size": 64})
    assert close(centre_colour(avatar.content), COLOUR)


def _settled(client: httpx.Client, auth: dict[str, str], url: str) -> dict | None:
    status = client.get(url, headers=auth).json()
    return status if status["state"] in ("done", "failed") else None


def test_options_announces_concatenation_unfinished(clients):
    extensions = clients[0].options("/files/").headers["tus-extension"].split(",")
    assert "concatenation" in extensions and "concatenation-unfinished" in extensions


def test_final_created_first_then_partials_filled(clients, auth, user):
    a, _ = clients
    image = marked_png(COLOUR, seed=1)
    pieces = split(image, 3)
    urls = [create(a, auth, len(piece), **{"Upload-Concat": "partial"}) for piece in pieces]
    final = final_of(a, auth, urls)

    waiting = head(a, final, auth)
    assert waiting.status_code == 200
    assert "upload-offset" not in waiting.headers  # not joined yet: no offset to report
    assert waiting.headers["upload-length"] == str(len(image))  # every part's length is known
    assert waiting.headers["upload-concat"] == "final;" + " ".join(urls)
    assert patch(a, final, auth, 0, b"x").status_code == 403

    # Filled last part first: the parts are joined in the final's order, not the finishing order.
    for url, piece in reversed(list(zip(urls, pieces, strict=True))):
        assert patch(a, url, auth, 0, piece).status_code == 204
    joined = head(a, final, auth)
    assert joined.headers["upload-offset"] == joined.headers["upload-length"] == str(len(image))
    assert_avatar_shows(a, auth, user, final)


def test_partials_finishing_on_two_server_processes(clients, auth, user):
    a, b = clients
    image = marked_png(COLOUR, seed=2)
    first, second = split(image, 2)
    urls = [create(a, auth, len(first), **{"Upload-Concat": "partial"})]
    urls.append(create(b, auth, len(second), **{"Upload-Concat": "partial"}))
    final = final_of(a, auth, urls)
    half = len(first) // 2
    assert patch(a, urls[0], auth, 0, first[:half]).status_code == 204
    assert patch(b, on(b, urls[1]), auth, 0, second).status_code == 204  # one part done, on b
    assert "upload-offset" not in head(b, on(b, final), auth).headers
    assert patch(a, urls[0], auth, half, first[half:]).status_code == 204  # the last one, on a
    assert_avatar_shows(b, auth, user, on(b, final))


def test_deleted_partial_fails_the_final_upload(clients, auth):
    a, _ = clients
    urls = [create(a, auth, 100, **{"Upload-Concat": "partial"}) for _ in range(2)]
    final = final_of(a, auth, urls)
    assert patch(a, urls[0], auth, 0, b"a" * 100).status_code == 204
    assert a.delete(urls[1], headers={**auth, **TUS}).status_code == 204

    status = a.get(final, headers=auth).json()
    assert status["state"] == "failed"
    assert status["failure"]["code"] == "partial-upload-gone"
    assert patch(a, final, auth, 0, b"x").status_code == 403


def test_a_partial_in_one_unfinished_final_cannot_join_another(clients, auth):
    a, _ = clients
    url = create(a, auth, 10, **{"Upload-Concat": "partial"})
    final_of(a, auth, [url])
    r = a.post("/files/", headers={**auth, **TUS, "Upload-Concat": f"final;{url}"})
    assert r.status_code == 400 and r.json()["code"] == "partial-in-use"


def test_deferred_length_is_echoed_on_creation(clients, auth):
    r = clients[0].post("/files/", headers={**auth, **TUS, "Upload-Defer-Length": "1"})
    assert r.status_code == 201 and r.headers["upload-defer-length"] == "1"
    known = clients[0].post("/files/", headers={**auth, **TUS, "Upload-Length": "5"})
    assert "upload-defer-length" not in known.headers


@pytest.mark.parametrize("parallel", [2, 4])
def test_tus_js_client_parallel_uploads_make_the_avatar(pair, clients, auth, user, tmp_path, parallel):
    from tests.e2e.test_tus_clients import run_js

    image = marked_png(COLOUR, side=240, seed=parallel)
    path = tmp_path / "photo.png"
    path.write_bytes(image)
    token = auth["Authorization"].removeprefix("Bearer ")
    result = run_js(pair[0], token, path, parallelUploads=parallel, metadata={"filetype": "image/png"})
    assert result["outcome"] == "success", result
    posts = [r["concat"] for r in result["requests"] if r["method"] == "POST"]
    assert posts.count("partial") == parallel and posts[-1].startswith("final;")
    assert_avatar_shows(clients[0], auth, user, result["url"])
