"""tus expiration and cleanup by the server itself, and CORS for browser clients."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.server import ServerProcess, StartServer
from tests.support.tus import TUS, create, eventually, head, patch, upload_id

ORIGIN = "https://app.example"
pytestmark = pytest.mark.client(server="short_lived")


@pytest.fixture(scope="module")
def short_lived(start_module_server: StartServer) -> ServerProcess:
    return start_module_server(
        uploads={"expire_seconds": 2, "reap_interval_seconds": 0.2}, server={"cors_origins": [ORIGIN]}
    )


def test_an_expired_upload_answers_410(client, auth):
    url = create(client, auth, 100)
    assert patch(client, url, auth, 0, b"hello").status_code == 204
    eventually(lambda: head(client, url, auth).status_code == 410, what="the upload to expire")
    assert patch(client, url, auth, 5, b"world").status_code == 410
    ietf = client.head(url, headers={**auth, "Upload-Draft-Interop-Version": "8"})
    assert ietf.status_code == 410


def test_the_server_removes_expired_bytes_and_keys(client, auth, short_lived, redis_client):
    url = create(client, auth, 100)
    assert patch(client, url, auth, 0, b"hello").status_code == 204
    directory = Path(short_lived.config["storage"]["root"]) / "uploads" / upload_id(url)
    assert directory.is_dir()
    key = f"{short_lived.config['redis']['key_prefix']}:upload:{{{upload_id(url)}}}"
    assert redis_client.exists(key)
    eventually(lambda: not directory.exists() and not redis_client.exists(key), what="the reaper")


def test_cors_exposes_every_tus_header(client, auth):
    r = client.post("/files/", headers={**auth, **TUS, "Upload-Length": "10", "Origin": ORIGIN})
    assert r.status_code == 201
    assert r.headers["access-control-allow-origin"] == ORIGIN
    exposed = {h.strip().lower() for h in r.headers["access-control-expose-headers"].split(",")}
    assert {
        "location",
        "upload-offset",
        "upload-length",
        "tus-resumable",
        "upload-expires",
        "upload-metadata",
        "tus-version",
        "upload-complete",
        "upload-limit",
    } <= exposed


def test_cors_preflight_allows_patch_with_tus_headers(client):
    r = client.options(
        f"/files/{'a' * 32}",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "tus-resumable, upload-offset, content-type, authorization",
        },
    )
    assert r.status_code == 200
    assert "PATCH" in r.headers["access-control-allow-methods"]
    assert "upload-offset" in r.headers["access-control-allow-headers"].lower()


def test_other_origins_get_no_cors_headers(client, auth):
    r = client.post("/files/", headers={**auth, **TUS, "Upload-Length": "10", "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
