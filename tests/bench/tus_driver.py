"""A raw asyncio HTTP/1.1 tus client for `make bench-tus`: cheap enough not to be the bottleneck.

httpx spends most of a core at a few thousand requests per second on this kind of machine, which
would measure the client, not the server. This client writes each request with one `write` on a
keep-alive connection and parses only the status line and the headers it needs. Loopback only.

Each upload: POST (Upload-Length) -> Location, then PATCHes at increasing offsets; every
answer's Upload-Offset must be the old offset plus the chunk. Afterwards a HEAD per upload
must answer its full length (nothing acknowledged was lost).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from tests.bench.rawhttp import LOOPBACK, Connection, KiB, MiB, Result


@dataclass(frozen=True)
class Workload:
    name: str
    uploads: int
    size: int
    chunk: int
    concurrency: int

    def scaled(self, scale: float) -> Workload:
        uploads = max(self.concurrency if scale >= 1 else 1, int(self.uploads * scale))
        return Workload(self.name, uploads, self.size, self.chunk, min(self.concurrency, uploads))


WORKLOADS = {
    "W1": Workload("W1", 200, 256 * KiB, 256 * KiB, 50),
    "W2": Workload("W2", 20, 32 * MiB, 1 * MiB, 4),
    "W3": Workload("W3", 500, 1 * MiB, 64 * KiB, 100),
}


TUS = {"Tus-Resumable": "1.0.0"}
FINAL_OK = {204, 415, 422}  # the project answers the last PATCH of random bytes "not an image"


async def _one_upload(conn: Connection, base: str, w: Workload, payload: bytes, out: Result, index: int) -> str | None:
    status, headers = await conn.request("POST", base, {**TUS, "Upload-Length": str(w.size)})
    if status != 201 or "location" not in headers:
        out.error(f"POST {status}")
        return None
    location = urlsplit(headers["location"]).path
    offset = 0
    while offset < w.size:
        chunk = payload[offset : offset + w.chunk]
        started = time.perf_counter()
        status, headers = await conn.request(
            "PATCH",
            location,
            {**TUS, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"},
            chunk,
        )
        out.patch_ms.append((time.perf_counter() - started) * 1000)
        out.patches += 1
        last = offset + len(chunk) >= w.size
        if status not in (FINAL_OK if last else {204}):
            out.error(f"PATCH {index}@{offset}: {status} {headers.get(':body', '')}")
            return None
        if status == 204 and headers.get("upload-offset") != str(offset + len(chunk)):
            out.error(f"PATCH {index}@{offset}: offset {headers.get('upload-offset')}")
            return None
        offset += len(chunk)
        out.bytes_acked += len(chunk)
    out.uploads += 1
    return location


async def run(url: str, w: Workload, headers: dict[str, str] | None = None, timeout: float = 120) -> Result:
    parts = urlsplit(url)
    if parts.hostname not in LOOPBACK:
        raise ValueError("the bench only talks to loopback servers")
    host, port, base = parts.hostname, parts.port or 80, parts.path
    payload = os.urandom(w.size)
    out = Result(w.name)
    queue = list(range(w.uploads))
    locations: list[str] = []

    async def worker() -> None:
        conn = Connection(host, port, headers or {})
        try:
            while queue:
                index = queue.pop()
                try:
                    location = await _one_upload(conn, base, w, payload, out, index)
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    out.error(f"{type(exc).__name__}: {exc}")
                    await conn.close()
                    continue
                if location:
                    locations.append(location)
        finally:
            await conn.close()

    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(w.concurrency))), timeout)
    out.seconds = time.perf_counter() - started
    await _verify(host, port, headers or {}, locations, w.size, out)
    return out


async def _verify(host: str, port: int, headers: dict[str, str], locations: list[str], size: int, out: Result) -> None:
    """Every finished upload answers its whole length: nothing acknowledged was lost."""
    conn = Connection(host, port, headers)
    try:
        for location in locations:
            status, answer = await conn.request("HEAD", location, TUS)
            if status == 200 and answer.get("upload-offset") != str(size):
                out.error(f"HEAD {location}: {answer.get('upload-offset')} of {size}")
    finally:
        await conn.close()
