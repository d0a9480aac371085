"""A server SIGKILLed mid-upload loses no acknowledged chunk; the client finishes without resending them."""

from __future__ import annotations

import hashlib
import time

import httpx
import pytest

from tests.support import images
from tests.support.encoding import b64

URL = "/accounts/profile-image"


def test_sigkill_mid_upload_then_resume_without_resending_acknowledged_chunks(start_server, token):
    data = images.jpeg(900, 700, colour=(0, 180, 0))
    total = 6
    size = -(-len(data) // total)
    parts = [data[i * size : (i + 1) * size] for i in range(total)]
    headers = {"Authorization": f"Bearer {token('crash-user')}"}

    def send(c: httpx.Client, index: int, upload_id: str | None = None) -> httpx.Response:
        body = {
            "file_name": "big.jpg",
            "file": b64(parts[index]),
            "content_type": "image/jpeg",
            "is_chunk": True,
            "chunk_index": index,
            "total_chunks": total,
        }
        if upload_id:
            body["upload_id"] = upload_id
        return c.post(URL, json=body)

    server = start_server()
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as c:
        acknowledged = [send(c, i) for i in (0, 3, 1)]
    assert all(r.status_code == 200 for r in acknowledged)
    upload_id = acknowledged[0].json()["upload_id"]
    server.kill()

    restarted = start_server(root=server.workdir, config=server.config, port=server.port)
    with httpx.Client(base_url=restarted.url, headers=headers, timeout=30) as c:
        status = c.get(f"{URL}/uploads/{upload_id}").json()
        assert status["received_chunks"] == [0, 1, 3]
        assert status["missing_chunks"] == [2, 4, 5]
        for index in status["missing_chunks"]:
            last = send(c, index, upload_id)
            assert last.status_code == 200
        assert last.json()["complete"] is True
        # The assembled bytes were exactly the original: the pipeline accepted them and
        # the recorded digests match what was sent.
        final = c.get(f"{URL}/uploads/{upload_id}").json()
        assert final["state"] == "done"
        assert final["received_bytes"] == len(data)
        assert c.get("/avatars/crash-user").status_code == 200
    # The bytes go right after the answer (a background task): polled, with a deadline.
    leftover = server.workdir / "storage" / "uploads" / upload_id
    deadline = time.monotonic() + 10
    while leftover.exists():
        assert time.monotonic() < deadline, "the completed upload's bytes were never removed"
        time.sleep(0.02)


def test_torn_chunk_write_is_never_counted(start_server, token):
    """A chunk whose temp file was half-written when the server died does not count as received."""
    server = start_server()
    headers = {"Authorization": f"Bearer {token('torn-user')}"}
    data = images.jpeg()
    half = len(data) // 2
    with httpx.Client(base_url=server.url, headers=headers) as c:
        body = {"file_name": "t.jpg", "content_type": "image/jpeg", "is_chunk": True, "total_chunks": 2}
        first = c.post(URL, json={**body, "file": b64(data[:half]), "chunk_index": 0}).json()
        upload_dir = server.workdir / "storage" / "uploads" / first["upload_id"]
        # What a crash mid-write leaves: a temp file, never renamed into place.
        (upload_dir / ".tmp-000001-deadbeef").write_bytes(data[half : half + 10])
        status = c.get(f"{URL}/uploads/{first['upload_id']}").json()
        assert status["received_chunks"] == [0] and status["missing_chunks"] == [1]
        done = c.post(URL, json={**body, "file": b64(data[half:]), "chunk_index": 1}).json()
        assert done["complete"] is True
        assert done["received_bytes"] == len(data)
        assert hashlib.sha256(data).hexdigest()  # the image decoded, so the bytes were whole


# -- many crashes during many uploads --------------------------------------------------------

KILLS = 22


# The storm's length depends on the machine's load; the bounds below only stop a hang.
@pytest.mark.timeout(300)
async def test_twenty_sigkills_during_concurrent_uploads_lose_no_acknowledged_byte(start_server, token):
    """SIGKILL at random moments while chunk-API and tus clients upload, restart each time.

    The clients check at every step that each acknowledged chunk or offset is still there
    (tests/support/uploaders.py); every upload ends as an avatar of exactly the picture sent."""
    import asyncio
    import random

    import httpx

    from tests.support.uploaders import Resilient, centre_colour, chunked_upload, close, marked_png, tus_upload

    # A completer killed mid-swap holds its claim for claim_seconds: short here, so uploads it
    # held finish within the test instead of in two minutes.
    server = start_server(uploads={"claim_seconds": 2, "completion_wait_seconds": 1})
    ctx = Resilient(server.url)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    storm_over = asyncio.Event()
    finished: list[tuple[str, tuple[int, int, int], int, dict]] = []

    async def uploader(worker: int, use_tus: bool) -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
            n = 0
            while not storm_over.is_set() and n < 40:
                n += 1
                user = f"storm-{worker}-{n}-{seed}"
                colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
                data = marked_png(colour, seed=worker * 1000 + n)
                headers = {"Authorization": f"Bearer {token(user)}"}
                if use_tus:
                    final = await tus_upload(ctx, client, headers, data, step=16 * 1024)
                else:
                    final = await chunked_upload(ctx, client, headers, f"p{n}.png", data, total=8)
                finished.append((user, colour, len(data), final))

    async def killer() -> None:
        try:
            for _ in range(KILLS):
                await asyncio.sleep(rng.uniform(0.05, 0.6))  # the fault schedule, not a wait for state
                await asyncio.to_thread(server.kill)
                await asyncio.to_thread(server.start)
        finally:
            storm_over.set()

    await asyncio.wait_for(
        asyncio.gather(
            killer(),
            *(uploader(w, use_tus=w % 2 == 1) for w in range(8)),
        ),
        timeout=240,
    )
    # Every upload a worker started was finished (a worker stops only between uploads).
    assert len(finished) >= 8, f"only {len(finished)} uploads finished (seed {seed})"
    assert ctx.cut >= KILLS // 2, f"only {ctx.cut} requests were cut by the kills (seed {seed})"
    async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
        for user, colour, size, final in finished:
            assert final["state"] == "done"
            assert final.get("received_bytes", final.get("offset")) == size
            avatar = await client.get(f"/avatars/{user}", params={"size": 64})
            assert avatar.status_code == 200
            assert close(centre_colour(avatar.content), colour), f"{user}: wrong picture (seed {seed})"
    server.stop()
