"""Fixtures the end-to-end modules share."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "client(server='server', auth=False): which server fixture the `client` fixture talks to, "
        "and whether it sends the test user's credentials on every request",
    )


@pytest.fixture()
def client(request: pytest.FixtureRequest, redis_backend: str) -> Iterator[httpx.Client]:
    """An HTTP client for the module's server (the `server` fixture unless a `client` mark names another).

    A module whose tests all act as the test user marks itself `pytest.mark.client(auth=True)`;
    the others pass credentials per request, so a test can also send none. (`redis_backend` is
    named so that the deployment of the module, `backends` in tests/conftest.py, reaches the server behind it.)
    """
    marker = request.node.get_closest_marker("client")
    options = marker.kwargs if marker is not None else {}
    target = request.getfixturevalue(options.get("server", "server"))
    headers = request.getfixturevalue("auth") if options.get("auth", False) else {}
    with httpx.Client(base_url=target.url, headers=headers, timeout=30) as http:
        yield http
