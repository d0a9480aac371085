"""Redis commands per tus request, counted with INFO commandstats (docs/performance.md).

    .venv/bin/python -m tests.bench.redis_calls        # 20 uploads x 16 PATCHes of 64 KiB

Starts the project fresh (embedded Redis), creates the uploads, sends the PATCHes, and prints
each command's calls per POST and per PATCH (the counters reset between the phases). The last PATCH of each upload completes it
(image pipeline, settle), so a steady-state PATCH is the "middle" figure printed separately.
"""

from __future__ import annotations

import asyncio
import os
import sys

import redis

from tests.bench.tus_compare import serving
from tests.bench.tus_driver import TUS, Connection

UPLOADS, PATCHES, CHUNK = 20, 16, 64 * 1024


def _stats(client: redis.Redis) -> dict[str, int]:
    info = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in info.items()}


async def _patch_all(conn: Connection, locations: list[str], start: int, stop: int) -> None:
    body = b"\0" * CHUNK
    for k in range(start, stop):
        for location in locations:
            headers = {**TUS, "Upload-Offset": str(k * CHUNK), "Content-Type": "application/offset+octet-stream"}
            status, _ = await conn.request("PATCH", location, headers, body)
            assert status in (204, 415, 422), status


def main() -> int:
    # BENCH_KIND=base counts the checkout at BENCH_BASE_DIR instead (tus_compare.serving).
    with serving(os.environ.get("BENCH_KIND", "project")) as (url, headers, _, store):
        client = redis.Redis(unix_socket_path=str(store / "redis" / "redis.sock"))
        path = url.split("127.0.0.1", 1)[1].split("/", 1)[1]
        port = int(url.split(":")[2].split("/")[0])

        async def go() -> list[dict[str, int]]:
            conn = Connection("127.0.0.1", port, headers)
            locations = []
            client.config_resetstat()
            for _ in range(UPLOADS):
                status, answer = await conn.request("POST", "/" + path, {**TUS, "Upload-Length": str(PATCHES * CHUNK)})
                assert status == 201, status
                locations.append("/" + answer["location"].split("/", 3)[3])
            post = _stats(client)
            client.config_resetstat()
            await _patch_all(conn, locations, 0, PATCHES - 1)
            middle = _stats(client)
            client.config_resetstat()
            await _patch_all(conn, locations, PATCHES - 1, PATCHES)
            last = _stats(client)
            await conn.close()
            return [post, middle, last]

        post, middle, last = asyncio.run(go())
    _print(f"POST ({UPLOADS})", post, UPLOADS)
    _print(f"steady-state PATCH ({UPLOADS * (PATCHES - 1)})", middle, UPLOADS * (PATCHES - 1))
    _print(f"completing PATCH ({UPLOADS})", last, UPLOADS)
    return 0


def _print(what: str, stats: dict[str, int], n: int) -> None:
    print(f"{what}: {sum(stats.values()) / n:.2f} commands")
    for name, calls in sorted(stats.items(), key=lambda kv: -kv[1]):
        print(f"  {name:12} {calls / n:.2f}")


if __name__ == "__main__":
    sys.exit(main())
