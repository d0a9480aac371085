"""Where a PATCH's CPU goes: py-spy samples the server while a W3-like load runs (docs/performance.md).

    .venv/bin/python -m tests.bench.profile_patch          # BENCH_SCALE=0.2 of W3 by default

Prints the functions with the most samples, inclusive (the function or anything it called) and
by leaf (where the CPU itself was spent), for the server's main process (the event loop and its
threads). py-spy needs ptrace rights over the server, which a child of this script has.
"""

from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.bench.tus_compare import ROOT, serving
from tests.bench.tus_driver import WORKLOADS, run


def _frames(line: str) -> tuple[list[str], int]:
    stacks, _, count = line.rpartition(" ")
    frames = [
        f.split(" (")[0] + " " + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1]
        for f in stacks.split(";")
        if " (" in f
    ]
    return frames, int(count)


def start_py_spy(pid: int, out: Path, *, gil: bool) -> subprocess.Popen[bytes]:
    """py-spy recording `pid`'s threads into `out` (raw collapsed stacks, 200 Hz) until SIGINT.
    `gil`: only samples of the thread holding the GIL, so time a thread spends waiting to take it
    back after a syscall is not counted as its work."""
    command = [str(ROOT / ".venv" / "bin" / "py-spy"), "record", "-p", str(pid), "-r", "200", "-f", "raw"]
    command += ["-o", str(out), "--nonblocking", "--threads", *(["--gil"] if gil else [])]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def main() -> int:
    w = WORKLOADS[os.environ.get("BENCH_PROFILE_WORKLOAD", "W3")].scaled(float(os.environ.get("BENCH_SCALE", "0.2")))
    out = Path(os.environ.get("BENCH_PROFILE", ROOT / "var" / "bench" / "patch-profile.txt"))
    out.parent.mkdir(parents=True, exist_ok=True)
    with serving("project") as (url, headers, pid, _):
        proc = start_py_spy(pid, out, gil=bool(os.environ.get("BENCH_PROFILE_GIL")))
        time.sleep(1.0)
        result = asyncio.run(run(url, w, headers))
        proc.send_signal(2)
        _, err = proc.communicate(timeout=30)
    if not out.exists():
        print(err.decode()[-2000:])
        return 1
    inclusive: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    total = 0
    for line in out.read_text().splitlines():
        frames, count = _frames(line)
        if not frames:
            continue
        total += count
        leaf[frames[-1]] += count
        for f in set(frames):
            inclusive[f] += count
    print(f"{result.summary()}\n{total} samples")
    print("inclusive:")
    for name, n in inclusive.most_common(45):
        print(f"  {100 * n / total:5.1f}%  {name}")
    print("leaf:")
    for name, n in leaf.most_common(25):
        print(f"  {100 * n / total:5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
