"""Hardening of the upload core against a real server process: deferred-length uploads count
their bytes, a 10,000-chunk upload keeps a fixed-size record, and an upload whose completer
was SIGKILLed becomes its user's avatar with no further request from the client."""

from __future__ import annotations

import asyncio
import random
import time

import httpx
import redis

from tests.support.encoding import b64
from tests.support.uploaders import centre_colour, close, marked_png

TUS = {"Tus-Resumable": "1.0.0"}
CHUNKS = "/accounts/profile-image"


def _offset(client: httpx.Client, location: str) -> int:
    head = client.head(location, headers=TUS)
    assert head.status_code == 200, head.text
    return int(head.headers["upload-offset"])


def _deferred_tus(client: httpx.Client) -> str:
    created = client.post("/files/", headers={**TUS, "Upload-Defer-Length": "1"})
    assert created.status_code == 201, created.text
    return created.headers["location"]


def _patch(client: httpx.Client, location: str, offset: int, data: bytes) -> httpx.Response:
    headers = {**TUS, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"}
    return client.patch(location, content=data, headers=headers)


def test_deferred_length_uploads_count_their_bytes_as_they_arrive(start_server, token):
    limit = 300_000
    server = start_server(limits={"max_bytes_in_flight": limit, "quota_retry_after_seconds": 5})
    auth = {"Authorization": f"Bearer {token('deferred-user')}"}
    piece = b"x" * 120_000
    with httpx.Client(base_url=server.url, headers=auth, timeout=30) as client:
        first, second, third = (_deferred_tus(client) for _ in range(3))
        assert _patch(client, first, 0, piece).status_code == 204
        assert _patch(client, second, 0, piece).status_code == 204
        refused = _patch(client, third, 0, piece)
        assert refused.status_code == 429, refused.text
        assert refused.json()["code"] == "too-many-bytes-in-flight"
        assert int(refused.headers["retry-after"]) > 0
        # Acknowledged bytes are intact; the refused upload holds at most what still fitted.
        assert _offset(client, first) == _offset(client, second) == len(piece)
        held = _offset(client, third)
        assert held <= limit - 2 * len(piece)
        # An IETF upload that says neither its length nor that it is complete is counted too.
        ietf = client.post(
            "/files/",
            content=piece,
            headers={"Upload-Draft-Interop-Version": "6", "Upload-Complete": "?0"},
        )
        assert ietf.status_code == 429, ietf.text
        assert ietf.json()["code"] == "too-many-bytes-in-flight"
        # Abandoning one frees its bytes: the refused upload continues where it stood.
        assert client.delete(first, headers=TUS).status_code == 204
        assert _patch(client, third, held, piece[held:]).status_code == 204
        assert _offset(client, third) == _offset(client, second) == len(piece)


def test_racing_chunks_of_one_upload_cannot_overshoot_the_bytes_limit(start_server, token):
    server = start_server(limits={"max_bytes_in_flight": 10_000})
    auth = {"Authorization": f"Bearer {token('racing-user')}"}

    async def run() -> list[int]:
        async with httpx.AsyncClient(base_url=server.url, headers=auth, timeout=30) as client:
            first = await client.post(CHUNKS, json=_chunk("race.png", 0, 40, b"r" * 1000))
            assert first.status_code == 200, first.text
            answers = await asyncio.gather(
                *(client.post(CHUNKS, json=_chunk("race.png", i, 40, b"r" * 1000)) for i in range(1, 40))
            )
            return [a.status_code for a in answers]

    statuses = asyncio.run(run())
    assert set(statuses) <= {200, 429}
    # Ten chunks of 1,000 bytes fill the limit: never more are acknowledged, however they race.
    assert statuses.count(200) == 9, statuses


def _chunk(name: str, index: int, total: int, data: bytes) -> dict:
    return {
        "file_name": name,
        "file": b64(data),
        "content_type": "image/png",
        "is_chunk": True,
        "chunk_index": index,
        "total_chunks": total,
    }


def test_a_ten_thousand_chunk_upload_keeps_a_fixed_size_record_and_small_answers(start_server, token, redis_url):
    server = start_server(limits={"requests_per_window": 0, "max_chunks": 10_000})
    prefix = server.config["redis"]["key_prefix"]
    auth = {"Authorization": f"Bearer {token('many-chunks')}"}
    store = redis.Redis.from_url(redis_url)
    sizes: dict[int, int] = {}
    with httpx.Client(base_url=server.url, headers=auth, timeout=30) as client:
        answer = None
        for index in range(1500):
            answer = client.post(CHUNKS, json=_chunk("many.png", index, 10_000, b"\x89"))
            assert answer.status_code == 200, answer.text
            if index + 1 in (10, 1500):
                upload_id = answer.json()["upload_id"]
                record = f"{prefix}:upload:{{{upload_id}}}"
                sizes[index + 1] = store.strlen(record)
        assert answer is not None
        body = answer.json()
        assert body["received_chunks"] == [[0, 1499]]
        assert body["missing_chunks"] == [[1500, 9999]]
        assert body["received_bytes"] == 1500
        assert len(answer.content) < 2000
        status = client.get(f"{CHUNKS}/uploads/{body['upload_id']}")
        assert status.json()["missing_chunks"] == [[1500, 9999]] and len(status.content) < 2000
    # The record does not grow with the chunks it has (a few bytes for larger counters).
    assert sizes[1500] <= sizes[10] + 8, sizes


def test_short_chunk_lists_stay_plain_lists(server, auth):
    with httpx.Client(base_url=server.url, headers=auth, timeout=30) as client:
        answer = client.post(CHUNKS, json=_chunk("few.png", 3, 5, b"\x89"))
        assert answer.json()["received_chunks"] == [3]
        assert answer.json()["missing_chunks"] == [0, 1, 2, 4]


USERS = 10


def test_uploads_whose_completer_was_killed_become_avatars_without_another_request(start_server, token):
    """SIGKILL during completions under load, then restart: every upload whose client saw its
    full length on HEAD (and so, like tus-js-client, stops) becomes its user's avatar."""
    server = start_server(uploads={"completion_sweep_seconds": 0.5, "claim_seconds": 3})
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    pictures = {
        f"sweep-{seed}-{n}": ((rng.randrange(256), rng.randrange(256), rng.randrange(256)), n) for n in range(USERS)
    }
    reported_full: set[str] = set()
    stop_killing = asyncio.Event()

    async def uploader(user: str) -> None:
        colour, n = pictures[user]
        data = marked_png(colour, side=700, seed=n)
        headers = {"Authorization": f"Bearer {token(user)}", **TUS}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as client:
            location = None
            while location is None:
                location = await _tolerant(client.post("/files/", headers={"Upload-Length": str(len(data))}), 201)
                location = location.headers["location"] if location is not None else None
            offset = 0
            while True:
                step = data[offset : offset + 32 * 1024]
                if step:
                    patch = {"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"}
                    await _tolerant(client.patch(location, content=step, headers=patch), 204)
                head = None
                while head is None:
                    head = await _tolerant(client.head(location), 200)
                offset = int(head.headers["upload-offset"])
                if offset == len(data):
                    reported_full.add(user)
                    return  # what tus-js-client does: onSuccess, and no further request

    async def killer() -> None:
        for _ in range(3):
            while not stop_killing.is_set() and len(reported_full) < 2:
                await asyncio.sleep(0.05)  # polling the clients' progress, not waiting for time
            await asyncio.sleep(rng.uniform(0.0, 0.4))  # the fault schedule
            await asyncio.to_thread(server.kill)
            await asyncio.to_thread(server.start)

    async def run() -> None:
        uploads = asyncio.gather(*(uploader(user) for user in pictures))
        await asyncio.wait_for(asyncio.gather(killer(), uploads), timeout=240)

    asyncio.run(run())
    assert len(reported_full) == USERS
    deadline = time.monotonic() + 60
    missing = set(reported_full)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        while missing and time.monotonic() < deadline:
            for user in sorted(missing):
                avatar = client.get(f"/avatars/{user}", params={"size": 64})
                if avatar.status_code == 200:
                    assert close(centre_colour(avatar.content), pictures[user][0]), f"{user} (seed {seed})"
                    missing.discard(user)
            time.sleep(0.2)  # polling with a deadline
    assert not missing, f"{len(missing)} uploads never became avatars (seed {seed})"


async def _tolerant(request, expected: int) -> httpx.Response | None:
    """The response if it is `expected`; None if the server died under it or answered a
    transient status while it restarts (the client then asks again)."""
    try:
        response = await request
    except httpx.TransportError:
        await asyncio.sleep(0.1)  # the server is restarting: pace the retries
        return None
    if response.status_code in (409, 423, 503):
        return None
    assert response.status_code == expected, f"{response.status_code}: {response.text[:300]}"
    return response
