"""Three server processes with separate storage roots, sharing only Redis and a SeaweedFS bucket,
serve one tus upload in turn; the one holding a PATCH is SIGKILLed mid-body and the client goes
on with another. The avatar is byte-exact against a local-disk run; nothing is left in the bucket."""

from __future__ import annotations

import asyncio
import io
import os
import secrets
import time

import httpx
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
