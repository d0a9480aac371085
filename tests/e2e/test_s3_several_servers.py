"""Three server processes with separate storage roots, sharing only Redis and a SeaweedFS bucket,
serve one tus upload (and one chunk-API upload) in turn; the one holding a request is SIGKILLed
mid-body and the client goes on with another. The avatar is byte-exact against a local-disk run;
nothing is left in the bucket."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import secrets
import time

import httpx
import psutil
from PIL import Image

from tests.support.s3 import Bucket
from tests.support.tus import TUS

MiB = 1024 * 1024


def noisy_png(side: int = 1500) -> bytes:
    """About 6.5 MiB of incompressible pixels: more than one 5 MiB S3 part."""
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(out, "PNG", compress_level=0)
    return out.getvalue()


async def stalled(data: bytes, release: asyncio.Event):
    for start in range(0, len(data), 256 * 1024):
        yield data[start : start + 256 * 1024]
    await release.wait()  # the rest never comes: the server is killed while it waits


async def offset_of(client: httpx.AsyncClient, base: str, location: str, auth: dict) -> int:
    r = await client.head(base + location, headers={**auth, **TUS})
    assert r.status_code == 200, r.status_code
    return int(r.headers["upload-offset"])


async def finished_avatar(client: httpx.AsyncClient, base: str, location: str, user: str, auth: dict) -> bytes:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = (await client.get(base + location, headers={**auth, **TUS})).json()
        if status["state"] == "done":
            r = await client.get(f"{base}/avatars/{user}?size=256", headers={"Accept": "image/webp"})
            assert r.status_code == 200
            return r.content
        assert status["state"] != "failed", status
        await asyncio.sleep(0.1)
    raise AssertionError("the upload never finished")


async def test_a_tus_upload_across_three_servers_survives_a_killed_patch(start_server, bucket: Bucket, token):
    data = noisy_png()
    assert len(data) > 5 * MiB
    s3 = bucket.storage_config()
    shared = {"key_prefix": f"t{secrets.token_hex(4)}"}
    servers = [start_server(storage={"backend": "s3", "s3": s3}, redis=shared) for _ in range(3)]
    user = f"user-{secrets.token_hex(4)}"
    auth = {"Authorization": f"Bearer {token(user)}"}
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.post(servers[0].url + "/files/", headers={**auth, **TUS, "Upload-Length": str(len(data))})
        assert r.status_code == 201
        location = "/files/" + r.headers["location"].rsplit("/files/", 1)[1]
        r = await client.patch(
            servers[1].url + location,
            content=data[: 2 * MiB],
            headers={**auth, **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
        )
        assert r.status_code == 204

        release = asyncio.Event()
        held = asyncio.create_task(
            client.patch(
                servers[2].url + location,
                content=stalled(data[2 * MiB : 6 * MiB], release),
                headers={
                    **auth,
                    **TUS,
                    "Upload-Offset": str(2 * MiB),
                    "Content-Type": "application/offset+octet-stream",
                },
            )
        )
        deadline = time.monotonic() + 30
        while await offset_of(client, servers[0].url, location, auth) < 5 * MiB:  # a part went to S3
            assert time.monotonic() < deadline, "the held PATCH never checkpointed"
            await asyncio.sleep(0.05)
        servers[2].kill()
        release.set()
        await asyncio.gather(held, return_exceptions=True)

        # The rest from the two live servers in turn; the killed holder's lock runs out first.
        turn, deadline = 0, time.monotonic() + 60
        while (offset := await offset_of(client, servers[turn % 2].url, location, auth)) < len(data):
            assert time.monotonic() < deadline, "the upload did not continue"
            r = await client.patch(
                servers[turn % 2].url + location,
                content=data[offset : offset + MiB],
                headers={
                    **auth,
                    **TUS,
                    "Upload-Offset": str(offset),
                    "Content-Type": "application/offset+octet-stream",
                },
            )
            assert r.status_code in (204, 409, 423), (r.status_code, r.text)
            if r.status_code == 423:
                await asyncio.sleep(0.1)
            turn += 1
        avatar = await finished_avatar(client, servers[1].url, location, user, auth)

        local = start_server()
        other = f"user-{secrets.token_hex(4)}"
        other_auth = {"Authorization": f"Bearer {token(other)}"}
        r = await client.post(local.url + "/files/", headers={**other_auth, **TUS, "Upload-Length": str(len(data))})
        local_location = "/files/" + r.headers["location"].rsplit("/files/", 1)[1]
        r = await client.patch(
            local.url + local_location,
            content=data,
            headers={**other_auth, **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
        )
        assert r.status_code == 204
        assert avatar == await finished_avatar(client, local.url, local_location, other, other_auth)

    deadline = time.monotonic() + 30
    while (left := await bucket.leftovers(s3["prefix"] + "uploads/")) != ([], []):
        assert time.monotonic() < deadline, f"left in the bucket: {left}"
        await asyncio.sleep(0.1)


# -- the chunk API ------------------------------------------------------------------------------

CHUNK_URL = "/accounts/profile-image"


def chunk_body(part: bytes, index: int, total: int) -> dict:
    return {
        "file_name": "me.png",
        "file": base64.b64encode(part).decode(),
        "content_type": "image/png",
        "is_chunk": True,
        "chunk_index": index,
        "total_chunks": total,
    }


async def stalled_json(body: dict, release: asyncio.Event):
    """The JSON body cut in the middle of the chunk's base64: the rest never comes."""
    raw = json.dumps(body).encode()
    yield raw[: len(raw) // 2]
    await release.wait()


async def send_chunk(client: httpx.AsyncClient, base: str, body: dict, auth: dict) -> httpx.Response:
    """One chunk, sent again while a dead server's lock on the upload runs out (423)."""
    deadline = time.monotonic() + 60
    while True:
        r = await client.post(base + CHUNK_URL, json=body, headers=auth)
        if r.status_code != 423:
            return r
        assert time.monotonic() < deadline, "the upload stayed locked"
        await asyncio.sleep(0.1)


async def test_a_chunk_upload_across_three_servers_survives_a_killed_request(start_server, bucket: Bucket, token):
    data = noisy_png(700)
    parts = [data[i : i + 256 * 1024] for i in range(0, len(data), 256 * 1024)]
    total = len(parts)
    assert total >= 5
    s3 = bucket.storage_config()
    shared = {"key_prefix": f"t{secrets.token_hex(4)}"}
    servers = [start_server(storage={"backend": "s3", "s3": s3}, redis=shared) for _ in range(3)]
    user = f"user-{secrets.token_hex(4)}"
    auth = {"Authorization": f"Bearer {token(user)}"}
    bodies = [chunk_body(part, i, total) for i, part in enumerate(parts)]
    async with httpx.AsyncClient(timeout=30) as client:
        # Out of order, each from another server.
        r = await send_chunk(client, servers[0].url, bodies[total - 1], auth)
        assert r.status_code == 200, r.text
        for body in bodies:
            body["upload_id"] = r.json()["upload_id"]
        r = await send_chunk(client, servers[1].url, bodies[0], auth)
        assert r.status_code == 200 and r.json()["received_chunks"] == [0, total - 1], r.text

        release = asyncio.Event()
        held = asyncio.create_task(
            client.post(
                servers[2].url + CHUNK_URL,
                content=stalled_json(bodies[1], release),
                headers={**auth, "Content-Type": "application/json"},
            )
        )
        await wait_for_request_in(servers[2])
        servers[2].kill()
        release.set()
        await asyncio.gather(held, return_exceptions=True)

        # The rest, the killed request's chunk first, alternating between the two live servers.
        for turn, index in enumerate(range(1, total - 1)):
            r = await send_chunk(client, servers[turn % 2].url, bodies[index], auth)
            assert r.status_code == 200, r.text
        done = r.json()
        assert done["complete"] is True and done["state"] == "done", done
        r = await client.get(f"{servers[1].url}/avatars/{user}?size=256", headers={"Accept": "image/webp"})
        assert r.status_code == 200
        avatar = r.content

        local = start_server()
        other = f"user-{secrets.token_hex(4)}"
        r = await client.post(
            local.url + CHUNK_URL,
            json={"file_name": "me.png", "file": base64.b64encode(data).decode(), "content_type": "image/png"},
            headers={"Authorization": f"Bearer {token(other)}"},
        )
        assert r.status_code == 200 and r.json()["complete"] is True, r.text
        r = await client.get(f"{local.url}/avatars/{other}?size=256", headers={"Accept": "image/webp"})
        assert r.status_code == 200
        assert avatar == r.content

    deadline = time.monotonic() + 30
    while (left := await bucket.leftovers(s3["prefix"] + "uploads/")) != ([], []):
        assert time.monotonic() < deadline, f"left in the bucket: {left}"
        await asyncio.sleep(0.1)


async def wait_for_request_in(server) -> None:
    """Until the server process has the held request's connection open (its socket, seen by psutil)."""
    deadline = time.monotonic() + 10
    while not any(
        c.status == psutil.CONN_ESTABLISHED and c.laddr.port == server.port
        for c in psutil.Process(server.process.pid).net_connections("tcp")
    ):
        assert time.monotonic() < deadline, "the held request never reached the server"
        await asyncio.sleep(0.02)
