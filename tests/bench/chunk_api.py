"""The JSON chunk API against tus on one server, same shapes: `python -m tests.bench.chunk_api` (`make bench`).

POST /accounts/profile-image with JSON `file_name`, base64 `file`, `content_type`, `is_chunk`,
`chunk_index`, `total_chunks` (and the `upload_id` the first answer gave), chunk after chunk, under
the raw HTTP/1.1 connection of tests/bench/rawhttp.py; then the tus driver (tests/bench/tus_driver.py)
on the same server with the same shape. The payload is random bytes: the last chunk answers 415/422
"not an image", and its bytes count, as they do for tus. Prints JSON-API MB/s as a ratio of tus MB/s
(target >= 0.6): each repetition's, and their median.

    BENCH_SCALE=0.2 .venv/bin/python -m tests.bench.chunk_api   # fewer uploads, same shapes
    BENCH_REPS=5 ...                                             # repetitions (3), JSON and tus in turn
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import statistics
import sys
import time
from urllib.parse import urlsplit

from tests.bench import tus_driver
from tests.bench.rawhttp import Connection, KiB, MiB, Result
from tests.bench.tus_compare import serving
from tests.bench.tus_driver import Workload

URL = "/accounts/profile-image"
SHAPES = {
    # W3 of tus_driver: many small chunks, 100 uploads at once.
    "W3": Workload("W3", 500, 1 * MiB, 64 * KiB, 100),
    # W2-like: 1 MiB chunks (1 MiB uploads would be one chunk each, so 8 MiB ones), 4 at once.
    "W2": Workload("W2", 20, 8 * MiB, 1 * MiB, 4),
}
FINAL_OK = {200, 415, 422}


async def _one_upload(conn: Connection, w: Workload, parts: list[bytes], out: Result, index: int) -> None:
    total, upload_id = len(parts), None
    for i, encoded in enumerate(parts):
        fields = {"file_name": f"bench{index}.jpg", "content_type": "image/jpeg", "is_chunk": True}
        fields |= {"chunk_index": i, "total_chunks": total} | ({"upload_id": upload_id} if upload_id else {})
        # The base64 text is spliced in rather than json.dumps'ed: the driver stays cheap.
        body = b"".join((json.dumps(fields)[:-1].encode(), b', "file": "', encoded, b'"}'))
        started = time.perf_counter()
        status, headers = await conn.request("POST", URL, {"Content-Type": "application/json"}, body)
        out.patch_ms.append((time.perf_counter() - started) * 1000)
        out.patches += 1
        last = i == total - 1
        if status not in (FINAL_OK if last else {200}):
            out.error(f"chunk {index}/{i}: {status} {headers.get(':body', '')}")
            return
        if upload_id is None and not last:
            upload_id = json.loads(conn.body)["upload_id"]
        out.bytes_acked += w.chunk
    out.uploads += 1


async def run(url: str, w: Workload, headers: dict[str, str], timeout: float = 600) -> Result:
    parts_url = urlsplit(url)
    host, port = parts_url.hostname or "127.0.0.1", parts_url.port or 80
    payload = os.urandom(w.size)
    parts = [base64.b64encode(payload[i : i + w.chunk]) for i in range(0, w.size, w.chunk)]
    out = Result(f"{w.name} JSON")
    queue = list(range(w.uploads))

    async def worker() -> None:
        conn = Connection(host, port, headers)
        try:
            while queue:
                index = queue.pop()
                try:
                    await _one_upload(conn, w, parts, out, index)
                except (OSError, asyncio.IncompleteReadError, ValueError, KeyError) as exc:
                    out.error(f"{type(exc).__name__}: {exc}")
                    await conn.close()
        finally:
            await conn.close()

    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(w.concurrency))), timeout)
    out.seconds = time.perf_counter() - started
    return out


def main() -> int:
    scale = float(os.environ.get("BENCH_SCALE", "1"))
    reps = int(os.environ.get("BENCH_REPS", "3"))
    names = os.environ.get("BENCH_WORKLOADS", "W3 W2").split()
    rows, failed = [], False
    with serving("project") as (url, headers, _pid, _store):
        base = f"http://{urlsplit(url).netloc}"
        for name in names:
            w = SHAPES[name].scaled(scale)
            # JSON and tus take turns, so the machine's drift (it is shared) falls on both alike.
            runs = []
            for _ in range(reps):
                json_result = asyncio.run(run(base, w, headers))
                tus_result = asyncio.run(tus_driver.run(url, w, headers))
                runs.append((json_result.summary(), tus_result.summary()))
                failed |= bool(json_result.errors or tus_result.errors)
                for sample in [*json_result.samples, *tus_result.samples]:
                    print("  ", sample, file=sys.stderr)
            rows.append((w, runs))
    print("| shape | JSON API MB/s | p50 / p99 ms | tus MB/s | p50 / p99 ms | JSON / tus | errors |")
    print("|---|---|---|---|---|---|---|")
    for w, runs in rows:
        ratios = [_ratio(j, t) for j, t in runs]
        for j, t in runs:
            print(
                f"| {w.name}: {w.uploads} x {w.size // KiB} KiB in {w.chunk // KiB} KiB chunks, {w.concurrency} at once"
                f" | {j['MB_s']} | {j['patch_p50_ms']} / {j['patch_p99_ms']} | {t['MB_s']}"
                f" | {t['patch_p50_ms']} / {t['patch_p99_ms']} | {_ratio(j, t):.2f}x | {int(j['errors']) + int(t['errors'])} |"
            )
        print(f"| {w.name}, median of {len(runs)} | | | | | **{statistics.median(ratios):.2f}x** | |")
    print("\ntarget: JSON API >= 0.6x tus MB/s on the same chunk sizes")
    return 1 if failed else 0


def _ratio(json_summary: dict[str, float | int | str], tus_summary: dict[str, float | int | str]) -> float:
    tus_mbs = float(tus_summary["MB_s"])
    return float(json_summary["MB_s"]) / tus_mbs if tus_mbs else 0.0


if __name__ == "__main__":
    sys.exit(main())
