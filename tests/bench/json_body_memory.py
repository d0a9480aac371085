"""Peak memory of a server process taking large JSON chunk bodies: prints numbers, asserts nothing.

    .venv/bin/python -m tests.bench.json_body_memory [--source DIR] [--mib 20] [--parallel 1,8,50]

Starts `python -m server` from `--source` (this checkout by default; point it at an older
checkout to compare) with its own redis-server, sends one chunk of `--mib` MiB as base64 JSON,
then N at once for each N of `--parallel`, and prints the server's peak RSS (VmHWM) after each
step, and how many of the parallel requests were answered 200 and 503 (the memory budget).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from server.auth import issue_token
from server.redis_process import RedisProcess, free_port
from server.settings import AuthSettings

ROOT = Path(__file__).resolve().parents[2]
SECRET = "bench-secret-" + "0" * 32
MiB = 1024 * 1024


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _body(payload: bytes, upload_id: str) -> bytes:
    document = {
        "file_name": f"{upload_id}.png",
        "content_type": "image/png",
        "file": base64.b64encode(payload).decode(),
        "is_chunk": True,
        "chunk_index": 0,
        "total_chunks": 2,
        "upload_id": upload_id,
    }
    return json.dumps(document).encode()


async def _send(url: str, token: str, bodies: list[bytes]) -> list[int]:
    async with httpx.AsyncClient(base_url=url, timeout=300, headers={"Authorization": f"Bearer {token}"}) as client:
        answers = await asyncio.gather(
            *(
                client.post("/accounts/profile-image", content=b, headers={"Content-Type": "application/json"})
                for b in bodies
            ),
            return_exceptions=True,
        )
    return [a.status_code if isinstance(a, httpx.Response) else 0 for a in answers]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", default=str(ROOT), help="checkout whose server to run")
    parser.add_argument("--mib", type=int, default=20, help="payload MiB per body (base64 makes it 4/3 larger)")
    parser.add_argument("--parallel", default="1,8,50")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="avs-bench-"))
    redis = RedisProcess(work / "redis", port=free_port(), appendonly=False)
    redis.start()
    port = free_port()
    config = {
        "server": {"host": "127.0.0.1", "log_level": "warning"},
        "redis": {"url": redis.url},
        "storage": {"root": str(work / "storage")},
        "auth": {"jwt_secret": SECRET},
        "limits": {
            "max_chunk_bytes": args.mib * MiB,
            "max_image_bytes": 2 * args.mib * MiB,
            "max_bytes_in_flight": 0,
            "max_open_uploads": 0,
            "requests_per_window": 0,
        },
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AVS_")}
    server = subprocess.Popen(
        [sys.executable, "-m", "server", "--config", str(work / "config.yaml"), "--port", str(port)],
        cwd=args.source,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        token = issue_token(AuthSettings(jwt_secret=SECRET), "bench-user")
        payload = secrets.token_bytes(args.mib * MiB)
        size = len(_body(payload, "probe"))
        print(f"source {args.source}; body {size / MiB:.1f} MiB ({args.mib} MiB as base64 JSON)")
        print(f"idle: peak RSS {_status_kib(server.pid, 'VmHWM') / 1024:.0f} MiB")
        for count in (int(n) for n in args.parallel.split(",")):
            bodies = [_body(payload, f"u{count}-{i}") for i in range(count)]
            statuses = asyncio.run(_send(url, token, bodies))
            del bodies
            peak = _status_kib(server.pid, "VmHWM") / 1024
            summary = ", ".join(f"{s}: {statuses.count(s)}" for s in sorted(set(statuses)))
            print(f"{count:3d} at once: peak RSS {peak:.0f} MiB; answers {summary}")
    finally:
        server.terminate()
        server.wait(30)
        redis.stop()


if __name__ == "__main__":
    main()
