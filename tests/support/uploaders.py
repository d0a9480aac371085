"""Clients that keep uploading through server crashes: what a phone on a flaky network does.

Each one asks where its upload stands, sends what is missing, and on a dropped connection
waits for the server to come back (polling /healthz with a deadline) and asks again. They also
check the promise as they go: every chunk or offset the server acknowledged is still there
whenever they ask, and the finished avatar shows the picture they sent.
"""

from __future__ import annotations

import asyncio
import io
import random
import time
from dataclasses import dataclass

import httpx
from PIL import Image

from tests.support.encoding import b64

CHUNK_URL = "/accounts/profile-image"
TUS = {"Tus-Resumable": "1.0.0"}
# Answers a client may meet while the server crashes and restarts; anything else fails the test.
_TRANSIENT = {423, 503}


def marked_png(colour: tuple[int, int, int], side: int = 200, seed: int = 0) -> bytes:
    """A PNG of noise (so it does not compress to nothing) with a solid centre of `colour`.

    PNG carries a CRC per chunk and an Adler-32 over the pixels: one torn or missing byte and
    the server refuses the image, so a finished avatar in the right colour means every byte
    arrived exactly as sent."""
    rng = random.Random(seed)
    im = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    quarter = side // 4
    im.paste(colour, (quarter, quarter, side - quarter, side - quarter))
    out = io.BytesIO()
    im.save(out, "PNG", compress_level=1)
    return out.getvalue()


def centre_colour(avatar: bytes) -> tuple[int, ...]:
    im = Image.open(io.BytesIO(avatar)).convert("RGB")
    return im.getpixel((im.width // 2, im.height // 2))


def close(a: tuple[int, ...], b: tuple[int, ...], tolerance: int = 30) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b))


class Broken(AssertionError):
    pass


@dataclass
class Resilient:
    """Shared by the clients: the server's URL and how long a restart may take."""

    url: str
    outage_seconds: float = 30.0
    cut: int = 0  # requests whose connection died under them

    async def request(self, client: httpx.AsyncClient, method: str, path: str, **kwargs) -> httpx.Response | None:
        """The response, or None when the connection failed (the server died); then wait for it."""
        try:
            response = await client.request(method, path, **kwargs)
        except httpx.TransportError:
            self.cut += 1
            await self.wait_for_server(client)
            return None
        if response.status_code >= 500 and response.status_code != 503:
            raise Broken(f"{method} {path} answered {response.status_code}: {response.text[:300]}")
        return response

    async def wait_for_server(self, client: httpx.AsyncClient) -> None:
        deadline = time.monotonic() + self.outage_seconds
        while time.monotonic() < deadline:
            try:
                if (await client.get("/healthz", timeout=1.0)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
        raise Broken("the server did not come back")


async def chunked_upload(
    ctx: Resilient, client: httpx.AsyncClient, headers: dict[str, str], name: str, data: bytes, total: int
) -> dict:
    """Upload `data` in `total` chunks through crashes; returns the final status."""
    size = -(-len(data) // total)
    parts = [data[i * size : (i + 1) * size] for i in range(total)]
    acknowledged: set[int] = set()
    upload_id: str | None = None
    received: set[int] = set()
    for _ in range(2000):  # bounded: every pass either makes progress or meets a crash
        if upload_id is not None:
            status = await ctx.request(client, "GET", f"{CHUNK_URL}/uploads/{upload_id}", headers=headers)
            if status is None or status.status_code in _TRANSIENT:
                continue
            if status.status_code != 200:
                raise Broken(f"status of {upload_id}: {status.status_code} {status.text[:300]}")
            described = status.json()
            received = set(described["received_chunks"])
            if not acknowledged <= received:
                raise Broken(f"acknowledged chunks {sorted(acknowledged - received)} of {upload_id} were lost")
            if described["state"] == "done":
                return described
            if described["state"] == "failed":
                raise Broken(f"upload {upload_id} failed: {described['failure']}")
        # Resending the last chunk of a fully received upload asks the server to finish it.
        for index in [i for i in range(total) if i not in received] or [total - 1]:
            body = {
                "file_name": name,
                "file": b64(parts[index]),
                "content_type": "image/png",
                "is_chunk": True,
                "chunk_index": index,
                "total_chunks": total,
            }
            if upload_id is not None:
                body["upload_id"] = upload_id
            r = await ctx.request(client, "POST", CHUNK_URL, json=body, headers=headers)
            if r is None or r.status_code in _TRANSIENT:
                break
            if r.status_code != 200:
                raise Broken(f"chunk {index} of {name}: {r.status_code} {r.text[:300]}")
            answer = r.json()
            upload_id = answer["upload_id"]
            acknowledged.add(index)
            if answer["state"] == "done":
                return answer
    raise Broken(f"{name} never finished")


async def tus_upload(
    ctx: Resilient, client: httpx.AsyncClient, headers: dict[str, str], data: bytes, step: int
) -> dict:
    """Upload `data` with tus in PATCHes of `step` bytes through crashes; returns the final status."""
    headers = {**headers, **TUS}
    location: str | None = None
    acknowledged = 0
    for _ in range(2000):
        if location is None:
            r = await ctx.request(client, "POST", "/files/", headers={**headers, "Upload-Length": str(len(data))})
            if r is None or r.status_code in _TRANSIENT:
                continue
            if r.status_code != 201:
                raise Broken(f"creation: {r.status_code} {r.text[:300]}")
            location = "/files/" + r.headers["location"].rsplit("/files/", 1)[1]
        head = await ctx.request(client, "HEAD", location, headers=headers)
        if head is None or head.status_code in _TRANSIENT:
            continue
        if head.status_code != 200:
            raise Broken(f"HEAD {location}: {head.status_code}")
        offset = int(head.headers["upload-offset"])
        if offset < acknowledged:
            raise Broken(f"{location}: offset {offset} is behind the acknowledged {acknowledged}")
        if offset == len(data):
            status = await ctx.request(client, "GET", location, headers=headers)
            if status is None or status.status_code in _TRANSIENT:
                continue
            described = status.json()
            if described["state"] == "done":
                return described
            if described["state"] == "failed":
                raise Broken(f"{location} failed: {described['failure']}")
        r = await ctx.request(
            client,
            "PATCH",
            location,
            content=data[offset : offset + step],
            headers={
                **headers,
                "Upload-Offset": str(offset),
                "Content-Type": "application/offset+octet-stream",
            },
        )
        if r is None or r.status_code in _TRANSIENT or r.status_code == 409:
            continue  # 409: a lost answer moved the offset on; HEAD tells where
        if r.status_code != 204:
            raise Broken(f"PATCH {location} at {offset}: {r.status_code} {r.text[:300]}")
        acknowledged = int(r.headers["upload-offset"])
    raise Broken(f"{location} never finished")
