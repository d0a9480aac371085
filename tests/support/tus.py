"""Small helpers for speaking tus and the IETF draft with httpx in tests."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx

T = TypeVar("T")
TUS = {"Tus-Resumable": "1.0.0"}
OFFSET_STREAM = {"Content-Type": "application/offset+octet-stream"}


def metadata(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


def create(client: httpx.Client, auth: dict[str, str], length: int | None, **headers: str) -> str:
    """POST /files/ and return the new upload's URL (asserting the tus creation MUSTs)."""
    sent = {**auth, **TUS, **headers}
    if length is None:
        sent.setdefault("Upload-Defer-Length", "1")
    else:
        sent["Upload-Length"] = str(length)
    response = client.post("/files/", headers=sent)
    assert response.status_code == 201, response.text
    assert response.headers["tus-resumable"] == "1.0.0"
    assert response.headers["upload-expires"].endswith("GMT")
    return response.headers["location"]


def patch(
    client: httpx.Client, url: str, auth: dict[str, str], offset: int, data: bytes, **headers: str
) -> httpx.Response:
    return client.patch(
        url,
        content=data,
        headers={
            **auth,
            **TUS,
            **OFFSET_STREAM,
            "Upload-Offset": str(offset),
            **headers,
        },
    )


def head(client: httpx.Client, url: str, auth: dict[str, str]) -> httpx.Response:
    return client.head(url, headers={**auth, **TUS})


def checksum(algorithm: str, data: bytes) -> str:
    return f"{algorithm} {base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"


def upload_id(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def stored_bytes(storage_root: Path, url: str) -> bytes:
    """The bytes the server holds for an unfinished upload (what a later PATCH builds on)."""
    return (storage_root / "uploads" / upload_id(url) / "data").read_bytes()


def eventually(check: Callable[[], T | None], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll `check` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
