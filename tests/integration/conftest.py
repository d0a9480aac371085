"""Fixtures of the integration tests: the upload core on a real redis-server and real files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.core import Core, open_core


@pytest.fixture()
async def core(redis_url: str, tmp_path: Path) -> AsyncIterator[Core]:
    """Uploads and Completion with small limits, on a fresh key prefix and storage root."""
    async with open_core(redis_url, tmp_path) as built:
        yield built


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that look at the local avatar store's files (`local_store`) have nothing to look at
    on another backend: they are left out of those runs rather than reported as skipped."""
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("store") if callspec is not None else None
        uses_files = "local_store" in getattr(item, "fixturenames", ())
        (dropped if uses_files and backend not in (None, "local") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
