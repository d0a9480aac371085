"""A raw asyncio HTTP/1.1 client for the benchmarks: cheap enough not to be the bottleneck.

httpx spends most of a core at a few thousand requests per second on this kind of machine, which
would measure the client, not the server. A Connection writes each request with one `write` on a
keep-alive connection and parses only the status line and the headers. Shared by
tests/bench/tus_driver.py (tus), tests/bench/chunk_api_driver.py (the JSON chunk API) and
tests/bench/photos.py (W5). Loopback only.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
KiB, MiB = 1024, 1024 * 1024


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
        self.body = b""  # the last answer's whole body
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
            self.body = await self._skip_body(answer)
            answer[":body"] = self.body[:300].decode("latin-1")
        if answer.get("connection", "").lower() == "close":
            await self.close()
        return status, answer

    async def _skip_body(self, answer: dict[str, str]) -> bytes:
        """The answer's body (small: status answers or avatars), read so the connection can go on."""
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
