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
from dataclasses import dataclass, field
from urllib.parse import urlsplit

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
KiB, MiB = 1024, 1024 * 1024


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


@dataclass
class Result:
    workload: str
    seconds: float = 0.0
    uploads: int = 0
    bytes_acked: int = 0
    patches: int = 0
    patch_ms: list[float] = field(default_factory=list)
    errors: int = 0
    samples: list[str] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.samples) < 5:
            self.samples.append(what[:200])

    def percentile(self, p: float) -> float:
        if not self.patch_ms:
            return 0.0
        ordered = sorted(self.patch_ms)
        return ordered[min(len(ordered) - 1, round((len(ordered) - 1) * p))]

    def summary(self) -> dict[str, float | int | str]:
        return {
            "workload": self.workload,
            "uploads_s": round(self.uploads / self.seconds, 1) if self.seconds else 0.0,
            "MB_s": round(self.bytes_acked / self.seconds / 1e6, 1) if self.seconds else 0.0,
            "patch_p50_ms": round(self.percentile(0.5), 1),
            "patch_p99_ms": round(self.percentile(0.99), 1),
            "patches": self.patches,
            "errors": self.errors,
        }


class Connection:
    """One keep-alive HTTP/1.1 connection; requests on it are sequential."""

    def __init__(self, host: str, port: int, extra: dict[str, str]) -> None:
        self.host, self.port = host, port
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in extra.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes = b""
    ) -> tuple[int, dict[str, str]]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        assert self.reader is not None
        lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self.extra}{lines}"
        head += f"Content-Length: {len(body)}\r\n\r\n"
        self.writer.write(head.encode("latin-1") + body if len(body) < 64 * KiB else head.encode("latin-1"))
        if len(body) >= 64 * KiB:
            self.writer.write(body)
        await self.writer.drain()
        raw = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = raw.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        answer: dict[str, str] = {}
        for line in header_lines:
            if ":" in line:
                name, _, value = line.partition(":")
                answer[name.strip().lower()] = value.strip()
        if method != "HEAD":
            answer[":body"] = (await self._skip_body(answer))[:300].decode("latin-1")
        if answer.get("connection", "").lower() == "close":
            await self.close()
        return status, answer

    async def _skip_body(self, answer: dict[str, str]) -> bytes:
        """The answer's body (small: these are status answers), read so the connection can go on."""
        assert self.reader is not None
        if answer.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            for _ in range(10_000):  # bounded: the servers answer with a chunk or two at most
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                body += (await self.reader.readexactly(size + 2))[:-2]
                if size == 0:
                    return body
            raise ValueError("endless chunked answer")
        length = int(answer.get("content-length", "0") or 0)
        return await self.reader.readexactly(length) if length else b""

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None


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
