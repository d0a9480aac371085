"""The page's routes over plain HTTP (no browser): what is served, with which policy, and `server.web_page: false`."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.support.server import ServerProcess, StartServer


def test_the_page_allows_only_its_own_origin(page_server: ServerProcess) -> None:
    for path in ("/", "/docs"):
        answer = httpx.get(page_server.url + path)
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "text/html; charset=utf-8"
        policy = dict(part.strip().split(" ", 1) for part in answer.headers["content-security-policy"].split(";"))
        assert policy["default-src"] == "'none'"
        assert policy["script-src"] == policy["style-src"] == "'self'"
        assert policy["connect-src"].split() == ["'self'", "blob:"]
        assert "unsafe" not in answer.headers["content-security-policy"]
        assert answer.headers["x-content-type-options"] == "nosniff"


def test_the_libraries_are_served_locally_and_revalidated(page_server: ServerProcess) -> None:
    script = httpx.get(f"{page_server.url}/web/vendor/uppy.min.mjs")
    assert script.status_code == 200, "web/vendor/ is empty: run `make install`"
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert script.headers["cache-control"] == "no-cache"
    again = httpx.get(f"{page_server.url}/web/vendor/uppy.min.mjs", headers={"If-None-Match": script.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert httpx.get(f"{page_server.url}/web/vendor/swagger-ui-bundle.js").status_code == 200
    for path in ("/", "/docs"):
        links = re.findall(r'(?:src|href)="([^"]*)"', httpx.get(page_server.url + path).text)
        assert links and all(link.startswith("/") or link == "data:," for link in links), links


@pytest.mark.parametrize(
    "path",
    [
        "/web/package.json",
        "/web/package-lock.json",
        "/web/node_modules/uppy/package.json",
        "/web/node_modules/uppy/dist/uppy.min.mjs",
        "/web/vendor/.installed",
        "/web/..%2Fpyproject.toml",
        "/web/%2E%2E/pyproject.toml",
        "/web/vendor/../../server/settings.py",
        "/web/",
        "/web/nothing.css",
    ],
)
def test_nothing_else_is_served(page_server: ServerProcess, path: str) -> None:
    answer = httpx.get(page_server.url + path)
    assert answer.status_code == 404
    assert "{" not in answer.text or answer.json()["code"] == "not-found"


def test_web_page_false_switches_the_page_and_the_reference_off(start_module_server: StartServer) -> None:
    server = start_module_server(server={"web_page": False})
    for path in ("/", "/docs", "/web/page.mjs"):
        assert httpx.get(server.url + path).status_code == 404
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert not {"/", "/docs", "/web/{path}"} & set(paths)
