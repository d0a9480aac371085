"""Fixtures for the browser tests: the machine's Chromium driven by Playwright, and a page server.

Playwright's own browser download cannot be used here, so the tests launch Debian's Chromium
(`apt-get install chromium`) through `executable_path`. Without one they skip, and the run
ends with a loud line saying so; with `CI_REQUIRE_BROWSER=1` (set by `.ci/run`) a missing
browser fails them instead.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.avatar_page import AvatarPage
from tests.support.server import ServerProcess, StartServer

MiB = 1024 * 1024
# The page server's limits, small so that the refusals are quick to provoke.
MAX_IMAGE_BYTES = 3 * MiB
MAX_PIXELS = 2_000_000

# The machine has no internet: nothing may try to reach out (updates, sync, field trials).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
_skipped: list[str] = []


def find_chromium() -> str | None:
    """$CHROMIUM, else Debian's /usr/bin/chromium, else a chromium on the PATH."""
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextlib.contextmanager
def launch_chromium(*extra_args: str) -> Iterator[Any]:
    """A headless Chromium (Playwright Browser) with CHROMIUM_ARGS and `extra_args`; skips without one."""
    executable = find_chromium()
    if executable is None:
        reason = "no Chromium found (install it: apt-get install chromium, or set CHROMIUM=/path)"
        if os.environ.get("CI_REQUIRE_BROWSER") == "1":
            pytest.fail(f"CI_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
        _skipped.append(reason)
        pytest.skip(f"browser tests skipped: {reason}")
    from playwright.sync_api import sync_playwright

    # launch() gives every browser a fresh, throw-away user data dir; each test gets its own context.
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=[*CHROMIUM_ARGS, *extra_args]
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """A headless Chromium, launched once per test module.

    Per module rather than per session: Playwright's sync API runs its own event loop, which
    must not stay alive while other modules' asyncio tests run."""
    with launch_chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def page_server(start_module_server: StartServer) -> ServerProcess:
    return start_module_server(limits={"max_image_bytes": MAX_IMAGE_BYTES, "max_pixels": MAX_PIXELS})


@pytest.fixture()
def open_page(chromium: Any, page_server: ServerProcess, tmp_path: Path) -> Iterator[Callable[..., AvatarPage]]:
    """`open_page(**context_options)`: a fresh browser context (own storage) on the page server.

    Screenshots go to the test's tmp_path; any Content-Security-Policy violation fails the test."""
    pages: list[AvatarPage] = []
    shot_numbers = itertools.count(1)

    def open_(**context_options: Any) -> AvatarPage:
        context_options.setdefault("viewport", {"width": 1100, "height": 900})
        context = chromium.new_context(**context_options)
        context.set_default_timeout(15_000)
        page = AvatarPage(context.new_page(), page_server.url, tmp_path, shot_numbers=shot_numbers)
        pages.append(page)
        return page

    yield open_
    for page in pages:
        page.page.context.close()
    for page in pages:
        assert page.csp_violations == [], "the page broke its own Content-Security-Policy"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _skipped:
        terminalreporter.write_sep("!", "BROWSER TESTS SKIPPED", red=True, bold=True)
        terminalreporter.write_line(
            f"tests/browser did not run: {_skipped[0]}. Set CI_REQUIRE_BROWSER=1 to make this a failure.",
            red=True,
            bold=True,
        )
