"""`python -m loadtest` (`make loadtest`): Locust, headless, against LOADTEST_URL or a local server.

Without LOADTEST_URL it starts `python -m server` with the embedded Redis on a free loopback port,
with per-user limits raised for load, and stops it afterwards. It mints tokens for LOADTEST_ACCOUNTS
users, scrapes /metrics before and after, measures the CPU the load tool and the server used
(psutil), and leaves report.html, Locust's CSVs and summary.json under LOADTEST_OUT
(var/loadtest/). It exits with Locust's code: non-zero when any request or check failed.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from loadtest.images import load_pictures
from loadtest.settings import ROOT, LoadSettings

# Local server: limits that a few simulated users with many requests each must not reach (the
# load test measures the server, not its refusals); everything else as config.yaml says.
LOCAL_LIMITS = {
    "requests_per_window": 1_000_000,
    "anonymous_requests_per_window": 0,
    "max_open_uploads": 1000,
    "max_bytes_in_flight": 8 * 1024**3,
}


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def start_local_server(workdir: Path, secret: str) -> tuple[subprocess.Popen[bytes], str]:
    from server.redis_process import free_port

    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    port = free_port()
    config = {
        "server": {"host": "127.0.0.1", "port": port, "log_level": "warning"},
        "redis": {"url": "embedded", "embedded_dir": str(workdir / "redis")},
        "storage": {"root": str(workdir / "storage")},
        "auth": {"jwt_secret": secret},
        "limits": LOCAL_LIMITS,
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AVS_")}
    log = open(workdir / "server.log", "ab")  # noqa: SIM115 - the child keeps writing it
    process = subprocess.Popen(
        [sys.executable, "-m", "server", "--config", str(workdir / "config.yaml")],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the local server exited with {process.returncode}; see {workdir / 'server.log'}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.terminate()
    raise SystemExit(f"the local server did not become healthy; see {workdir / 'server.log'}")


def mint_tokens(count: int, secret: str, ttl: int) -> dict[str, str]:
    from server.auth import issue_token
    from server.settings import AuthSettings

    auth = AuthSettings(jwt_secret=secret)
    run = secrets.token_hex(3)  # fresh users per run: earlier avatars never answer for this one
    return {f"load-{run}-{i:04d}": issue_token(auth, f"load-{run}-{i:04d}", ttl=ttl) for i in range(count)}


def scrape(url: str, path: Path) -> bool:
    headers = {}
    if token := os.environ.get("LOADTEST_METRICS_TOKEN"):
        headers["Authorization"] = f"Bearer {token}"
    try:
        response = httpx.get(f"{url}/metrics", headers=headers, timeout=10)
    except httpx.HTTPError:
        return False
    if response.status_code != 200:
        return False
    path.write_text(response.text)
    return True


def cpu_seconds(process: psutil.Process) -> float:
    """User and system CPU of a process and its children (the server's image workers, Redis)."""
    total = 0.0
    for each in [process, *process.children(recursive=True)]:
        try:
            times = each.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def run_locust(url: str, out: Path, users: int, seconds: int, env: dict[str, str]) -> tuple[int, float, float]:
    """Locust's exit code and the CPU seconds it used; its progress goes to this terminal."""
    spawn_rate = os.environ.get("LOADTEST_SPAWN_RATE", str(max(1, users // 2)))
    command = [
        sys.executable, "-m", "locust", "-f", str(ROOT / "loadtest" / "locustfile.py"),
        "--headless", "--host", url, "--users", str(users), "--spawn-rate", spawn_rate,
        "--run-time", f"{seconds}s", "--stop-timeout", os.environ.get("LOADTEST_STOP_TIMEOUT", "30"),
        "--html", str(out / "report.html"), "--csv", str(out / "locust"), "--csv-full-history",
        "--loglevel", "WARNING",
    ]  # fmt: skip
    started = time.monotonic()
    process = psutil.Popen(command, cwd=ROOT, env=env)
    used = 0.0
    while process.poll() is None:  # sampled: the children are gone once it exits
        used = max(used, cpu_seconds(process))
        time.sleep(0.5)
    return process.returncode, used, time.monotonic() - started


def summarise(out: Path) -> dict[str, Any]:
    import csv

    rows = list(csv.DictReader((out / "locust_stats.csv").open()))
    total = next((r for r in rows if r["Name"] == "Aggregated"), None)
    checks = {r["Name"]: int(r["Request Count"]) - int(r["Failure Count"]) for r in rows if r["Type"] == "CHECK"}
    refused = {r["Name"]: int(r["Request Count"]) for r in rows if r["Type"] == "REFUSED"}
    return {
        "requests": int(total["Request Count"]) if total else 0,
        "failures": int(total["Failure Count"]) if total else 0,
        "requests_per_second": float(total["Requests/s"]) if total else 0.0,
        "checks_passed": checks,
        "refused": refused,
    }


def main() -> int:
    settings = LoadSettings()
    out = Path(os.environ.get("LOADTEST_OUT", ROOT / "var" / "loadtest"))
    out.mkdir(parents=True, exist_ok=True)
    users = _env_int("LOADTEST_USERS", 10)
    seconds = _env_int("LOADTEST_SECONDS", 60)
    accounts = _env_int("LOADTEST_ACCOUNTS", users)
    url = os.environ.get("LOADTEST_URL", "").rstrip("/")
    load_pictures(settings.images_dir, settings.image_scale)  # made once, before the clock starts
    server = None
    secret = os.environ.get("LOADTEST_JWT_SECRET", "")
    if not url:
        secret = secret or secrets.token_hex(32)
        server, url = start_local_server(out / "server", secret)
        print(f"loadtest: local server {url} (pid {server.pid}), embedded Redis, work dir {out / 'server'}")
    tokens_file = Path(os.environ.get("LOADTEST_TOKENS_FILE", out / "tokens.json"))
    if secret:
        tokens_file.write_text(json.dumps(mint_tokens(accounts, secret, ttl=seconds + 3600)))
    elif not tokens_file.exists():
        raise SystemExit("set LOADTEST_JWT_SECRET (the server's auth.jwt_secret) or LOADTEST_TOKENS_FILE")
    try:
        had_metrics = scrape(url, out / "metrics-before.txt")
        server_cpu = cpu_seconds(psutil.Process(server.pid)) if server else 0.0
        env = os.environ | {"LOADTEST_TOKENS_FILE": str(tokens_file), "LOADTEST_IMAGES": str(settings.images_dir)}
        code, locust_cpu, wall = run_locust(url, out, users, seconds, env)
        server_cpu = cpu_seconds(psutil.Process(server.pid)) - server_cpu if server else None
        if had_metrics:
            scrape(url, out / "metrics-after.txt")
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
    summary = summarise(out) | {
        "url": url,
        "users": users,
        "accounts": accounts,
        "seconds": seconds,
        "wall_seconds": round(wall, 1),
        "cores": psutil.cpu_count(),
        "locust_cpu_seconds": round(locust_cpu, 1),
        "server_cpu_seconds": None if server_cpu is None else round(server_cpu, 1),
        "metrics": had_metrics,
        "locust_exit_code": code,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"loadtest: {json.dumps(summary)}")
    print(f"loadtest: report {out / 'report.html'}, CSVs {out}/locust_*.csv, summary {out / 'summary.json'}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
