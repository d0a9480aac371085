"""`/openapi.json` tells the truth: every route the app has is in it, and nothing else is."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate
from starlette.routing import Route

from server import settings as settings_module
from server.app import create_app
from tests.support.server import ServerProcess, StartServer

OPERATIONS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
SEED_PROTOCOLS = ("picture_api", "user_image_api", "profile_image_api", "setting_avatar_api")
# Routed only so that tus can refuse them with 405 in its own shape (Tus-Resumable and all):
# they are not operations a client can use, so the document leaves them out.
REFUSED_WITH_405 = {(path, method) for path in ("/files", "/files/") for method in ("GET", "HEAD", "PATCH", "DELETE")}


def routed(server: ServerProcess) -> set[tuple[str, str]]:
    """(path, method) of every route of an app built from the server's own config."""
    app = create_app(settings_module.load(server.config_path))
    pairs = set()
    for route in app.routes:
        assert isinstance(route, Route), f"{route!r}: teach this test about mounts"
        path = re.sub(r"{(\w+):\w+}", r"{\1}", route.path)  # {name:converter} is {name} in OpenAPI
        pairs |= {(path, method) for method in route.methods or ()}
    return pairs


def documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (path, method.upper()) for path, item in document["paths"].items() for method in item if method in OPERATIONS
    }


def assert_document_matches_routes(server: ServerProcess) -> dict[str, Any]:
    document = httpx.get(f"{server.url}/openapi.json").json()
    in_document, in_app = documented(document), routed(server)
    # HEAD comes with every GET (HTTP semantics; Starlette adds it): documenting GET covers it.
    implied_head = {(path, "HEAD") for path, method in in_document if method == "GET"}
    assert in_app - in_document - implied_head - REFUSED_WITH_405 == set(), "routes missing from /openapi.json"
    assert in_document - in_app == set(), "/openapi.json documents operations the server does not have"
    return document


@pytest.fixture(scope="module")
def switched_off(start_module_server: StartServer) -> ServerProcess:
    off = {name: False for name in (*SEED_PROTOCOLS, "chunk_api", "tus", "ietf")}
    return start_module_server(protocols=off)


def test_the_document_is_valid_openapi_3_1(server):
    document = httpx.get(f"{server.url}/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    validate(document)


def test_every_route_is_documented_and_every_documented_operation_exists(server):
    document = assert_document_matches_routes(server)
    for path in (
        "/api/{version}/user/profile-picture",
        "/users/image/upload",
        "/user/setting/avatar",
        "/v1/users/{userId}/profile/profile-image",
        "/accounts/profile-image",
        "/files/",
        "/files/{upload_id}",
        "/avatars/{user_id}",
        "/me/avatar",
        "/healthz",
        "/openapi.json",
    ):
        assert path in document["paths"]


def test_with_apis_switched_off_the_document_still_matches(switched_off):
    document = assert_document_matches_routes(switched_off)
    validate(document)
    assert "/users/image/upload" not in document["paths"]
    assert "/files/" not in document["paths"]


def test_switched_off_apis_answer_404(switched_off, auth):
    url = switched_off.url
    requests = [
        ("POST", "/api/v1/user/profile-picture", {"json": {"mime": "image/jpeg", "dataUri": "data:,"}}),
        ("PATCH", "/users/image/upload", {"files": {"file": ("a.jpg", b"x")}}),
        ("GET", "/v1/users/u/profile/profile-image", {}),
        ("POST", "/v1/users/u/profile/profile-image", {"json": {"url": "http://example.com/a.jpg"}}),
        ("PUT", "/user/setting/avatar", {"content": b""}),
        ("POST", "/accounts/profile-image", {"json": {}}),
        ("POST", "/files/", {"headers": {**auth, "Tus-Resumable": "1.0.0", "Upload-Length": "10"}}),
    ]
    for method, path, options in requests:
        options.setdefault("headers", auth)
        assert httpx.request(method, f"{url}{path}", **options).status_code == 404, (method, path)
    assert httpx.get(f"{url}/healthz").status_code == 200
