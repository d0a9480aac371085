"""The clients people use: tuspy (Python) and tus-js-client (Node.js), against a real server."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from PIL import Image
from tusclient import client as tus_client

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "tests" / "js"
CHUNK = 16 * 1024


@pytest.fixture(scope="module")
def photo() -> bytes:
    """A noisy photo of ~100 KB, so that every upload takes several chunks."""
    image = Image.merge("RGB", [Image.effect_noise((360, 270), 60 + 10 * i) for i in range(3)])
    out = io.BytesIO()
    image.save(out, "JPEG", quality=92)
    assert len(out.getvalue()) > 4 * CHUNK
    return out.getvalue()


@pytest.fixture()
def http(server, auth):
    with httpx.Client(base_url=server.url, headers=auth, timeout=30) as c:
        yield c


def assert_became_the_avatar(http: httpx.Client, upload_url: str) -> None:
    status = http.get(upload_url).json()
    assert status["state"] == "done", status
    assert http.get("/me/avatar").json()["version"] == status["avatar"]["version"]


# -- tuspy ------------------------------------------------------------------------------------


def test_tuspy_multi_chunk_upload(server, auth, http, photo):
    uploader = tus_client.TusClient(f"{server.url}/files/", headers=auth).uploader(
        file_stream=io.BytesIO(photo),
        chunk_size=CHUNK,
        metadata={"filename": "me.jpg", "filetype": "image/jpeg"},
    )
    uploader.upload()
    assert uploader.offset == len(photo)
    assert_became_the_avatar(http, uploader.url)


def test_tuspy_resumes_an_interrupted_upload_from_the_stored_url(server, auth, http, photo):
    first = tus_client.TusClient(f"{server.url}/files/", headers=auth).uploader(
        file_stream=io.BytesIO(photo),
        chunk_size=CHUNK,
    )
    first.upload(stop_at=2 * CHUNK)
    stored_url = first.url
    assert http.get(stored_url).json()["state"] == "open"

    # A new client (the app restarted) continues from where the server says it stands.
    second = tus_client.TusClient(f"{server.url}/files/", headers=auth).uploader(
        file_stream=io.BytesIO(photo),
        chunk_size=CHUNK,
        url=stored_url,
    )
    assert second.offset == 2 * CHUNK
    second.upload()
    assert_became_the_avatar(http, stored_url)


def test_tuspy_upload_with_checksums(server, auth, http, photo):
    uploader = tus_client.TusClient(f"{server.url}/files/", headers=auth).uploader(
        file_stream=io.BytesIO(photo),
        chunk_size=CHUNK,
        upload_checksum=True,
    )
    uploader.upload()
    assert_became_the_avatar(http, uploader.url)


# -- tus-js-client ----------------------------------------------------------------------------


def run_js(server, token: str, file: Path, **options) -> dict:
    node = shutil.which("node")
    if node is None or not (JS / "node_modules" / "tus-js-client").is_dir():
        pytest.fail("tus-js-client is not installed: run `make install` (npm ci --prefix tests/js)")
    settings = {"endpoint": f"{server.url}/files/", "file": str(file), "token": token, **options}
    done = subprocess.run(
        [node, str(JS / "tus_upload.mjs"), json.dumps(settings)], capture_output=True, text=True, timeout=60, cwd=JS
    )
    assert done.stdout, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture()
def photo_file(tmp_path, photo) -> Path:
    path = tmp_path / "photo.jpg"
    path.write_bytes(photo)
    return path


@pytest.fixture()
def bearer(auth) -> str:
    return auth["Authorization"].removeprefix("Bearer ")


def test_js_client_uploads_in_chunks(server, http, bearer, photo_file, photo):
    result = run_js(server, bearer, photo_file, chunkSize=CHUNK)
    assert result["outcome"] == "success", result
    offsets = [int(r["offset"]) for r in result["requests"] if r["method"] == "PATCH"]
    assert offsets == list(range(0, len(photo), CHUNK))
    assert_became_the_avatar(http, result["url"])


def test_js_client_resumes_an_aborted_upload(server, http, bearer, photo_file):
    aborted = run_js(server, bearer, photo_file, chunkSize=CHUNK, abortAfter=2 * CHUNK)
    assert aborted["outcome"] == "aborted", aborted
    resumed = run_js(server, bearer, photo_file, chunkSize=CHUNK, uploadUrl=aborted["url"])
    assert resumed["outcome"] == "success", resumed
    methods = [r["method"] for r in resumed["requests"]]
    assert methods[0] == "HEAD" and "POST" not in methods
    first_patch = next(r for r in resumed["requests"] if r["method"] == "PATCH")
    assert int(first_patch["offset"]) == 2 * CHUNK
    assert_became_the_avatar(http, aborted["url"])


def test_js_client_parallel_uploads_concatenate(server, http, bearer, photo_file):
    result = run_js(server, bearer, photo_file, parallelUploads=3)
    assert result["outcome"] == "success", result
    concat = [r["concat"] for r in result["requests"] if r["method"] == "POST"]
    assert concat.count("partial") == 3
    assert concat[-1].startswith("final;")
    assert_became_the_avatar(http, result["url"])
