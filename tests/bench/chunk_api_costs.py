"""What one JSON-API chunk costs the server: Redis commands, CPU, and (optionally) where the CPU goes.

    .venv/bin/python -m tests.bench.chunk_api_costs                    # counts and CPU ms per chunk
    BENCH_PROFILE=1 .venv/bin/python -m tests.bench.chunk_api_costs    # and a py-spy summary (--gil)

Redis commands are counted with INFO commandstats (like tests/bench/redis_calls.py for tus) over
20 uploads of 16 chunks of 64 KiB sent one at a time: the first chunk (opens the upload), the
steady-state ones, and the last (completes it; the random bytes are refused as "not an image").
CPU is the whole process tree's (server, image workers, embedded Redis) over the W3 shape of
tests/bench/chunk_api.py (BENCH_SHAPE=W2: its 1 MiB chunks) at BENCH_SCALE (0.2 by default),
divided by the chunks sent; and the same for FIRST_CHUNKS first chunks alone (each opens an upload).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import redis

from tests.bench import chunk_api
from tests.bench.profile_patch import _frames, start_py_spy
from tests.bench.rawhttp import Connection
from tests.bench.tus_compare import ROOT, TreeMeter, serving

UPLOADS, CHUNKS, CHUNK = 20, 16, 64 * 1024
# First chunks alone, for their CPU: enough that the process tree's CPU counters resolve it.
FIRST_CHUNKS = 800


def _stats(client: redis.Redis) -> dict[str, int]:
    info = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in info.items()}


async def _count(port: int, headers: dict[str, str], client: redis.Redis) -> list[dict[str, int]]:
    conn = Connection("127.0.0.1", port, headers)
    encoded = base64.b64encode(os.urandom(CHUNK)).decode()
    ids: list[str | None] = [None] * UPLOADS
    phases = []
    for phase in (range(1), range(1, CHUNKS - 1), range(CHUNKS - 1, CHUNKS)):
        client.config_resetstat()
        for i in phase:
            for u in range(UPLOADS):
                fields = {"file_name": f"c{u}.jpg", "content_type": "image/jpeg", "is_chunk": True}
                fields |= {"chunk_index": i, "total_chunks": CHUNKS} | ({"upload_id": ids[u]} if ids[u] else {})
                body = json.dumps(fields)[:-1].encode() + b', "file": "' + encoded.encode() + b'"}'
                status, _ = await conn.request("POST", chunk_api.URL, {"Content-Type": "application/json"}, body)
                assert status in ({200} if i < CHUNKS - 1 else chunk_api.FINAL_OK), status
                if ids[u] is None:
                    ids[u] = json.loads(conn.body)["upload_id"]
        phases.append(_stats(client))
    await conn.close()
    return phases


async def _first_chunks(port: int, headers: dict[str, str], count: int, connections: int = 4) -> int:
    """`count` first chunks (each opens an upload under a new file name) over `connections`
    connections at once: the first chunk's own CPU, which the W3 run spreads over 16 chunks."""
    encoded = base64.b64encode(os.urandom(CHUNK)).decode()

    async def send(start: int, n: int) -> None:
        conn = Connection("127.0.0.1", port, headers)
        for u in range(start, start + n):
            fields = {"file_name": f"first{u}.jpg", "content_type": "image/jpeg", "is_chunk": True}
            body = json.dumps(fields | {"chunk_index": 0, "total_chunks": CHUNKS})[:-1].encode()
            body += b', "file": "' + encoded.encode() + b'"}'
            status, _ = await conn.request("POST", chunk_api.URL, {"Content-Type": "application/json"}, body)
            assert status == 200, status
        await conn.close()

    each = count // connections
    await asyncio.gather(*(send(c * each, each) for c in range(connections)))
    return each * connections


def _print(what: str, stats: dict[str, int], n: int) -> None:
    print(f"{what}: {sum(stats.values()) / n:.2f} commands")
    for name, calls in sorted(stats.items(), key=lambda kv: -kv[1]):
        print(f"  {name:12} {calls / n:.2f}")


def _profile_summary(out: Path) -> None:
    inclusive: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    total = 0
    for line in out.read_text().splitlines():
        frames, count = _frames(line)
        if frames:
            total += count
            leaf[frames[-1]] += count
            for f in set(frames):
                inclusive[f] += count
    print(f"{total} samples\ninclusive:")
    for name, n in inclusive.most_common(50):
        print(f"  {100 * n / total:5.1f}%  {name}")
    print("leaf:")
    for name, n in leaf.most_common(25):
        print(f"  {100 * n / total:5.1f}%  {name}")


def main() -> int:
    # BENCH_SHAPE=W2 measures the 1 MiB-chunk shape instead of the 64 KiB one.
    w = chunk_api.SHAPES[os.environ.get("BENCH_SHAPE", "W3")].scaled(float(os.environ.get("BENCH_SCALE", "0.2")))
    profile = ROOT / "var" / "bench" / "chunk-api-profile.txt"
    profile.parent.mkdir(parents=True, exist_ok=True)
    # BENCH_KIND=base measures the checkout at BENCH_BASE_DIR instead (tus_compare.serving).
    with serving(os.environ.get("BENCH_KIND", "project")) as (url, headers, pid, store):
        port = urlsplit(url).port or 80
        client = redis.Redis(unix_socket_path=str(store / "redis" / "redis.sock"))
        first, middle, last = asyncio.run(_count(port, headers, client))
        with TreeMeter(pid) as meter:
            before = meter.start_cpu()
            firsts = asyncio.run(_first_chunks(port, headers, FIRST_CHUNKS))
            time.sleep(0.15)
            first_cpu = meter.cpu_seconds - before
        spy = None
        if os.environ.get("BENCH_PROFILE"):
            spy = start_py_spy(pid, profile, gil=True)
            time.sleep(1.0)
        with TreeMeter(pid) as meter:
            before = meter.start_cpu()
            result = asyncio.run(chunk_api.run(f"http://127.0.0.1:{port}", w, headers))
            time.sleep(0.15)
            cpu = meter.cpu_seconds - before
        if spy is not None:
            spy.send_signal(2)
            spy.communicate(timeout=30)
    _print(f"first chunk ({UPLOADS})", first, UPLOADS)
    _print(f"steady-state chunk ({UPLOADS * (CHUNKS - 2)})", middle, UPLOADS * (CHUNKS - 2))
    _print(f"completing chunk ({UPLOADS})", last, UPLOADS)
    print(f"{result.summary()}\nserver CPU: {1000 * cpu / max(result.patches, 1):.2f} ms per chunk")
    print(f"server CPU: {1000 * first_cpu / firsts:.2f} ms per first chunk ({firsts} first chunks of 64 KiB)")
    if spy is not None and profile.exists():
        _profile_summary(profile)
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main())
