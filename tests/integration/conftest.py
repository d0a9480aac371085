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
