"""What an upload leaves in the bucket once it is abandoned: the reaper removes an expired
upload's objects and aborts its multipart upload; a tus termination or a chunk-API DELETE removes
them at once. Against a real server process on a real SeaweedFS."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import time

import httpx

from tests.support.s3 import Bucket
from tests.support.tus import TUS

MiB = 1024 * 1024
CHUNK_URL = "/accounts/profile-image"
OCTETS = {**TUS, "Content-Type": "application/offset+octet-stream"}


async def started_uploads(client: httpx.AsyncClient, base: str, auth: dict) -> tuple[str, str]:
    """A tus upload holding one 5 MiB multipart part and a tail object, and a chunk-API upload with
    one of its two chunks: their tus location and chunk-API id."""
    r = await client.post(base + "/files/", headers={**auth, **TUS, "Upload-Length": str(8 * MiB)})
    assert r.status_code == 201
    location = "/files/" + r.headers["location"].rsplit("/files/", 1)[1]
    r = await client.patch(
        base + location, content=os.urandom(6 * MiB), headers={**auth, **OCTETS, "Upload-Offset": "0"}
    )
    assert r.status_code == 204 and r.headers["upload-offset"] == str(6 * MiB)
    chunk = {
        "file_name": "me.jpg",
        "file": base64.b64encode(os.urandom(1000)).decode(),
        "content_type": "image/jpeg",
        "is_chunk": True,
        "chunk_index": 0,
        "total_chunks": 2,
    }
    r = await client.post(base + CHUNK_URL, json=chunk, headers=auth)
    assert r.status_code == 200
    return location, r.json()["upload_id"]


async def test_expired_uploads_objects_and_multipart_uploads_are_reaped(start_server, bucket: Bucket, token):
    s3 = bucket.storage_config()
    server = start_server(
        storage={"backend": "s3", "s3": s3}, uploads={"expire_seconds": 3, "reap_interval_seconds": 0.2}
    )
    auth = {"Authorization": f"Bearer {token(f'user-{secrets.token_hex(4)}')}"}
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        location, upload_id = await started_uploads(client, server.url, auth)
        objects, multipart = await bucket.leftovers(s3["prefix"] + "uploads/")
        assert multipart and len(objects) >= 2, (objects, multipart)  # the stores really hold something

        deadline = time.monotonic() + 30
        while (left := await bucket.leftovers(s3["prefix"] + "uploads/")) != ([], []):
            assert time.monotonic() < deadline, f"the reaper left in the bucket: {left}"
            await asyncio.sleep(0.1)
        assert (await client.head(location, headers={**auth, **TUS})).status_code in (404, 410)
        assert (await client.get(f"{CHUNK_URL}/uploads/{upload_id}", headers=auth)).status_code == 410


async def test_termination_removes_the_objects_at_once(start_server, bucket: Bucket, token):
    s3 = bucket.storage_config()
    server = start_server(storage={"backend": "s3", "s3": s3})
    auth = {"Authorization": f"Bearer {token(f'user-{secrets.token_hex(4)}')}"}
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        location, upload_id = await started_uploads(client, server.url, auth)
        objects, multipart = await bucket.leftovers(s3["prefix"] + "uploads/")
        assert multipart and len(objects) >= 2, (objects, multipart)

        assert (await client.delete(location, headers={**auth, **TUS})).status_code == 204
        assert (await client.delete(f"{CHUNK_URL}/uploads/{upload_id}", headers=auth)).status_code == 204
        # No waiting: the answer comes after the objects are gone.
        assert await bucket.leftovers(s3["prefix"] + "uploads/") == ([], [])
