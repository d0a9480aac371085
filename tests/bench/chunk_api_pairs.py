"""The JSON chunk API and tus on one server, with each one's CPU per chunk, for one or more
checkouts in turn: `python -m tests.bench.chunk_api_pairs project` (`base` measures the checkout
at BENCH_BASE_DIR, see tests/bench/tus_compare.py `serving`; `base project base project`
alternates them, which on a shared machine says more than two runs far apart).

    BENCH_SHAPE=W2 BENCH_SCALE=2 BENCH_BASE_DIR=<checkout> .venv/bin/python -m tests.bench.chunk_api_pairs base project

Prints, per server: JSON-API and tus MB/s, the whole process tree's CPU ms per chunk, errors,
and JSON / tus.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

from tests.bench import chunk_api, tus_driver
from tests.bench.rawhttp import Result
from tests.bench.tus_compare import TreeMeter, serving


def _measure(pid: int, run: Callable[[], Coroutine[Any, Any, Result]]) -> tuple[float, float, int]:
    with TreeMeter(pid) as meter:
        before = meter.start_cpu()
        result = asyncio.run(run())
        time.sleep(0.15)
        cpu = meter.cpu_seconds - before
    return float(result.summary()["MB_s"]), 1000 * cpu / max(result.patches, 1), result.errors


def main() -> int:
    w = chunk_api.SHAPES[os.environ.get("BENCH_SHAPE", "W2")].scaled(float(os.environ.get("BENCH_SCALE", "2")))
    failed = False
    for kind in sys.argv[1:] or ["project"]:
        with serving(kind) as (url, headers, pid, _store):
            base = f"http://{urlsplit(url).netloc}"
            j = _measure(pid, lambda: chunk_api.run(base, w, headers))
            t = _measure(pid, lambda: tus_driver.run(url, w, headers))
        failed |= bool(j[2] or t[2])
        print(
            f"{kind}: {w.name} JSON {j[0]:.1f} MB/s {j[1]:.2f} ms CPU/chunk | tus {t[0]:.1f} MB/s {t[1]:.2f} ms"
            f" CPU/chunk | errors {j[2] + t[2]} | JSON / tus {j[0] / t[0] if t[0] else 0:.2f}x",
            flush=True,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
