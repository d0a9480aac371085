"""`make bench`: load and soak runs against a real server process, printing numbers.

Scenarios (from issue 6): 200 avatars of 256 KiB at concurrency 50; 20 images of 32 MiB in
1 MiB chunks at concurrency 4; 500 uploads of 1 MiB in 64 KiB tus PATCHes at concurrency 100
with 10 % of requests cut mid-body and retried; 1000 uploads open at once (server memory);
a soak (AVS_BENCH_SOAK_SECONDS, default 600) watching memory for a growth trend.
Every upload's avatar is checked against the picture sent: zero lost or corrupted uploads.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import threading
import time
from dataclasses import dataclass, field

import httpx
import psutil
import pytest

from tests.support.config import server_config
from tests.support.encoding import b64
from tests.support.server import ServerProcess
from tests.support.uploaders import centre_colour, close, marked_png

pytestmark = [pytest.mark.bench, pytest.mark.timeout(3600)]
MiB = 1024 * 1024
URL = "/accounts/profile-image"
TUS = {"Tus-Resumable": "1.0.0"}
SOAK_SECONDS = float(os.environ.get("AVS_BENCH_SOAK_SECONDS", "600"))


class PeakMemory:
    """Samples the server's RSS in a thread while a scenario runs."""

    def __init__(self, pid: int):
        self.process = psutil.Process(pid)
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.process.memory_info().rss)
            self._stop.wait(0.1)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return max(self.samples, default=0) / MiB


@dataclass
class Stats:
    name: str
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    cut: int = 0
    dropped: int = 0  # connections the server or the network dropped; the client resumed
    uploads: int = 0
    bytes: int = 0

    def report(self, seconds: float, peak_mb: float) -> str:
        q = statistics.quantiles(self.latencies, n=100) if len(self.latencies) >= 2 else [0.0] * 99
        line = (
            f"{self.name}: {self.uploads} uploads, {len(self.latencies)} requests in {seconds:.1f} s = "
            f"{len(self.latencies) / seconds:.1f} req/s, {self.bytes / MiB / seconds:.1f} MiB/s; "
            f"latency p50 {q[49] * 1000:.0f} ms p95 {q[94] * 1000:.0f} ms p99 {q[98] * 1000:.0f} ms; "
            f"errors {self.errors}; cut {self.cut}; dropped+resumed {self.dropped}; server peak RSS {peak_mb:.0f} MB"
        )
        print("\n" + line)
        return line


@pytest.fixture(scope="module")
def bench_server(tmp_path_factory, redis_url):
    root = tmp_path_factory.mktemp("bench")
    config = server_config(
        root,
        redis_url,
        limits={"max_image_bytes": 40 * MiB, "max_pixels": 40_000_000},
        uploads={"reap_interval_seconds": 60},
    )
    config["server"]["log_level"] = "error"
    process = ServerProcess(root, config).start()
    yield process
    process.stop()


async def timed(stats: Stats, call):
    started = time.monotonic()
    response = await call()
    stats.latencies.append(time.monotonic() - started)
    if response.status_code >= 400:
        stats.errors += 1
    return response


async def verify(client: httpx.AsyncClient, user: str, colour) -> None:
    avatar = await client.get(f"/avatars/{user}", params={"size": 64})
    assert avatar.status_code == 200 and close(centre_colour(avatar.content), colour), f"{user}: lost or corrupted"


def measured(stats: Stats, server, scenario) -> float:
    """Run one scenario against `server`, print its line, and return the server's peak RSS in MB."""
    with PeakMemory(server.process.pid) as memory:
        started = time.monotonic()
        run(scenario)
    stats.report(time.monotonic() - started, memory.peak_mb)
    return memory.peak_mb


def run(coro):
    return asyncio.run(coro)


def test_200_avatars_of_256_kib_at_concurrency_50(bench_server, token):
    stats = Stats("200 x 256 KiB whole images, concurrency 50")
    gate = asyncio.Semaphore(50)

    async def one(i: int, client: httpx.AsyncClient) -> None:
        user = f"b1-{i}"
        colour = (i % 256, (i * 7) % 256, (i * 13) % 256)
        data = marked_png(colour, side=296, seed=i)  # ~256 KiB of PNG
        async with gate:
            r = await timed(
                stats,
                lambda: client.post(
                    URL,
                    headers={"Authorization": f"Bearer {token(user)}"},
                    json={"file_name": "a.png", "file": b64(data), "content_type": "image/png"},
                ),
            )
        assert r.status_code == 200, r.text
        stats.uploads += 1
        stats.bytes += len(data)
        await verify(client, user, colour)

    async def main() -> None:
        async with httpx.AsyncClient(
            base_url=bench_server.url, timeout=120, limits=httpx.Limits(max_connections=60)
        ) as client:
            await asyncio.gather(*(one(i, client) for i in range(200)))

    measured(stats, bench_server, main())
    assert stats.errors == 0


def test_20_images_of_32_mib_in_1_mib_chunks_at_concurrency_4(bench_server, token):
    stats = Stats("20 x 32 MiB in 1 MiB chunks, concurrency 4")
    gate = asyncio.Semaphore(4)
    # One big noise picture per colour would take minutes to make; 20 share 4 pictures.
    # side 3870: 32.3 MiB of PNG (the solid centre compresses away; 3300 gave only 23.5 MiB).
    pictures = [
        (c, marked_png(c, side=3870, seed=n))
        for n, c in enumerate([(250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0)])
    ]

    async def one(i: int, client: httpx.AsyncClient) -> None:
        user = f"b2-{i}"
        colour, data = pictures[i % 4]
        parts = [data[o : o + MiB] for o in range(0, len(data), MiB)]
        headers = {"Authorization": f"Bearer {token(user)}"}
        async with gate:
            for index, part in enumerate(parts):
                body = {
                    "file_name": "big.png",
                    "file": b64(part),
                    "content_type": "image/png",
                    "is_chunk": True,
                    "chunk_index": index,
                    "total_chunks": len(parts),
                }
                r = await timed(stats, lambda: client.post(URL, headers=headers, json=body))
                assert r.status_code == 200, r.text
                stats.bytes += len(part)
        assert r.json()["complete"] is True
        stats.uploads += 1
        await verify(client, user, colour)

    async def main() -> None:
        async with httpx.AsyncClient(base_url=bench_server.url, timeout=300) as client:
            await asyncio.gather(*(one(i, client) for i in range(20)))

    measured(stats, bench_server, main())
    assert stats.errors == 0


def test_500_uploads_of_1_mib_in_64_kib_patches_with_10_percent_cut_at_concurrency_100(bench_server, token):
    stats = Stats("500 x 1 MiB tus in 64 KiB PATCHes, 10 % cut, concurrency 100")
    gate = asyncio.Semaphore(100)
    rng = random.Random(6)

    async def cut_body(block: bytes):
        yield block[: len(block) // 2]
        raise ConnectionResetError("cut mid-body on purpose")

    async def one(i: int, client: httpx.AsyncClient) -> None:
        user = f"b3-{i}"
        colour = ((i * 3) % 256, (i * 5) % 256, (i * 11) % 256)
        data = marked_png(colour, side=605, seed=i)  # ~1 MiB
        headers = {"Authorization": f"Bearer {token(user)}", **TUS}
        async with gate:
            r = await timed(stats, lambda: client.post("/files/", headers={**headers, "Upload-Length": str(len(data))}))
            location = "/files/" + r.headers["location"].rsplit("/files/", 1)[1]
            offset = 0
            finished = False  # a PATCH answered 204 with the full length: the upload completed
            for _ in range(200):
                if offset == len(data):
                    break
                block = data[offset : offset + 64 * 1024]
                patch = {
                    **headers,
                    "Upload-Offset": str(offset),
                    "Content-Type": "application/offset+octet-stream",
                    "Content-Length": str(len(block)),
                }
                if rng.random() < 0.1:
                    stats.cut += 1
                    try:
                        await client.patch(location, content=cut_body(block), headers=patch)
                    except (httpx.HTTPError, ConnectionResetError):
                        pass
                    head = await timed(stats, lambda: client.head(location, headers=headers))
                    offset = int(head.headers["upload-offset"])
                    continue
                try:
                    r = await timed(stats, lambda: client.patch(location, content=block, headers=patch))
                except httpx.TransportError:
                    stats.dropped += 1
                    head = await timed(stats, lambda: client.head(location, headers=headers))
                    offset = int(head.headers["upload-offset"])
                    continue
                if r.status_code == 423:  # the cut request still held the upload: ask again
                    stats.errors -= 1
                    head = await timed(stats, lambda: client.head(location, headers=headers))
                    offset = int(head.headers["upload-offset"])
                    continue
                assert r.status_code == 204, r.text
                offset = int(r.headers["upload-offset"])
                finished = offset == len(data)
                stats.bytes += len(block)
            if not finished:
                # All bytes are stored (HEAD says so) but the PATCH that carried the last ones was
                # cut or dropped, so its completion may have stopped with it. An empty PATCH at the
                # full offset finishes the upload or answers with its outcome, as a tus client must.
                r = await timed(
                    stats,
                    lambda: client.patch(
                        location,
                        content=b"",
                        headers={
                            **headers,
                            "Upload-Offset": str(len(data)),
                            "Content-Type": "application/offset+octet-stream",
                        },
                    ),
                )
                assert r.status_code == 204, r.text
        stats.uploads += 1
        await verify(client, user, colour)

    async def main() -> None:
        async with httpx.AsyncClient(
            base_url=bench_server.url, timeout=120, limits=httpx.Limits(max_connections=110)
        ) as client:
            await asyncio.gather(*(one(i, client) for i in range(500)))

    measured(stats, bench_server, main())
    assert stats.errors == 0 and stats.uploads == 500


def test_1000_uploads_open_at_once_stay_under_200_mb(bench_server, token):
    stats = Stats("1000 open tus uploads (64 KiB each, unfinished)")
    gate = asyncio.Semaphore(100)

    async def one(i: int, client: httpx.AsyncClient) -> None:
        headers = {"Authorization": f"Bearer {token(f'b4-{i % 100}')}", **TUS}
        async with gate:
            for _ in range(3):
                try:
                    r = await timed(
                        stats,
                        lambda: client.post(
                            "/files/",
                            headers={
                                **headers,
                                "Upload-Length": str(MiB),
                                "Content-Type": "application/offset+octet-stream",
                            },
                            content=os.urandom(64 * 1024),
                        ),
                    )
                    if r.status_code != 503:  # an overloaded Redis round trip: retry as told
                        break
                    stats.errors -= 1
                    stats.dropped += 1
                except httpx.TransportError:
                    stats.dropped += 1
            assert r.status_code == 201, r.text
            stats.uploads += 1

    async def main() -> None:
        async with httpx.AsyncClient(base_url=bench_server.url, timeout=120) as client:
            await asyncio.gather(*(one(i, client) for i in range(1000)))

    peak_mb = measured(stats, bench_server, main())
    assert peak_mb < 200


def test_soak_memory_stays_flat(bench_server, token):
    stats = Stats(f"soak {SOAK_SECONDS:.0f} s, 256 KiB whole images, concurrency 20")
    process = psutil.Process(bench_server.process.pid)
    samples: list[tuple[float, int]] = []
    pictures = [marked_png((i * 40 % 256, 100, 200), side=296, seed=i) for i in range(8)]

    async def worker(w: int, client: httpx.AsyncClient, until: float) -> None:
        n = 0
        while time.monotonic() < until:
            n += 1
            headers = {"Authorization": f"Bearer {token(f'soak-{w}-{n % 50}')}"}
            r = await timed(
                stats,
                lambda: client.post(
                    URL,
                    headers=headers,
                    json={"file_name": "s.png", "file": b64(pictures[n % 8]), "content_type": "image/png"},
                ),
            )
            stats.uploads += r.status_code == 200

    async def sampler(until: float) -> None:
        while time.monotonic() < until:
            samples.append((time.monotonic(), process.memory_info().rss))
            await asyncio.sleep(1)

    async def main() -> None:
        until = time.monotonic() + SOAK_SECONDS
        async with httpx.AsyncClient(base_url=bench_server.url, timeout=120) as client:
            await asyncio.gather(sampler(until), *(worker(w, client, until) for w in range(20)))

    started = time.monotonic()
    run(main())
    rss = [r for _, r in samples]
    third = max(1, len(rss) // 3)
    early, late = statistics.mean(rss[third : 2 * third] or rss), statistics.mean(rss[2 * third :] or rss)
    stats.report(time.monotonic() - started, max(rss) / MiB)
    print(f"soak memory: middle third {early / MiB:.0f} MB, last third {late / MiB:.0f} MB")
    assert stats.errors == 0
    assert late <= early * 1.10, "server memory grows over the soak"
