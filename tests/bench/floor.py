"""The floor under this server's CPU per PATCH: the same driver against tus sinks that do nothing.

    .venv/bin/python -m tests.bench.floor            # W3 at BENCH_SCALE (default 0.5)

Three sinks served by uvicorn exactly as `python -m server` serves (uvloop, httptools), each
answering POST 201 with a Location, PATCH 204 with the new Upload-Offset and HEAD 200, keeping
offsets in a dict and throwing the bytes away:

  asgi        a bare ASGI callable: what uvicorn and the event loop cost per request;
  starlette   the same as one Starlette route (Request, Response, the router, Starlette's two
              exception middlewares): what the framework adds;
  project     this server, for comparison (tests/bench/tus_compare.py `serving`).

Each is measured by CPU seconds of its process tree per PATCH, under tests/bench/tus_driver.py.
docs/performance.md uses the difference to say how much of a PATCH is the server's own work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

from tests.bench.tus_compare import ROOT, TreeMeter, serving
from tests.bench.tus_driver import WORKLOADS, run

SINKS = ("asgi", "starlette")


def _answer(
    method: str, path: str, headers: dict[bytes, bytes], offsets: dict[str, int], received: int
) -> tuple[int, list[tuple[bytes, bytes]]]:
    tus = [(b"tus-resumable", b"1.0.0")]
    if method == "POST":
        upload_id = secrets.token_urlsafe(16)
        offsets[upload_id] = 0
        return 201, [*tus, (b"location", f"/files/{upload_id}".encode())]
    upload_id = path.rsplit("/", 1)[-1]
    if method == "PATCH":
        offsets[upload_id] = int(headers.get(b"upload-offset", b"0")) + received
    return (204 if method == "PATCH" else 200), [*tus, (b"upload-offset", str(offsets.get(upload_id, 0)).encode())]


def asgi_app() -> object:
    offsets: dict[str, int] = {}

    async def app(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        if scope["type"] != "http":
            return
        received = 0
        while True:
            message = await receive()  # type: ignore[operator]
            received += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        status, headers = _answer(scope["method"], scope["path"], dict(scope["headers"]), offsets, received)
        await send({"type": "http.response.start", "status": status, "headers": headers})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b""})  # type: ignore[operator]

    return app


def starlette_app() -> object:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    offsets: dict[str, int] = {}

    async def endpoint(request: Request) -> Response:
        received = 0
        async for block in request.stream():
            received += len(block)
        raw = {k.encode(): v.encode() for k, v in request.headers.items()}
        status, headers = _answer(request.method, request.url.path, raw, offsets, received)
        return Response(status_code=status, headers={k.decode(): v.decode() for k, v in headers})

    methods = ["POST", "PATCH", "HEAD"]
    return Starlette(
        routes=[Route("/files/", endpoint, methods=methods), Route("/files/{id}", endpoint, methods=methods)]
    )


def _serve_sink(kind: str, port: int) -> None:
    import uvicorn

    app = asgi_app() if kind == "asgi" else starlette_app()
    uvicorn.run(
        app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning", access_log=False
    )  # type: ignore[arg-type]


@contextlib.contextmanager
def _sink(kind: str) -> Iterator[tuple[str, int]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen([sys.executable, "-m", "tests.bench.floor", "--serve", kind, str(port)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/files/", proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        _serve_sink(sys.argv[2], int(sys.argv[3]))
        return 0
    w = WORKLOADS["W3"].scaled(float(os.environ.get("BENCH_SCALE", "0.5")))
    rows = []
    for kind in (*SINKS, "project"):
        with contextlib.ExitStack() as stack:
            if kind == "project":
                url, headers, pid, _ = stack.enter_context(serving("project"))
            else:
                (url, pid), headers = stack.enter_context(_sink(kind)), {}
            meter = stack.enter_context(TreeMeter(pid))
            before = meter.start_cpu()
            result = asyncio.run(run(url, w, headers))
            time.sleep(0.15)
            cpu = meter.cpu_seconds - before
        row = {"sink": kind, **result.summary(), "cpu_ms_per_patch": round(cpu * 1000 / max(1, result.patches), 3)}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    print("\n| W3 under the same driver | MB/s | CPU ms/PATCH |\n|---|---|---|")
    for row in rows:
        print(f"| {row['sink']} | {row['MB_s']} | {row['cpu_ms_per_patch']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
