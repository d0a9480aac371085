"""Per-user limits: open uploads, bytes in flight and request rate, each a 429 with Retry-After."""

from __future__ import annotations

import time

import httpx
import pytest
import redis

from tests.support.encoding import b64

URL = "/accounts/profile-image"
TUS = {"Tus-Resumable": "1.0.0"}
pytestmark = pytest.mark.client(server="limited", auth=True)


@pytest.fixture(scope="module")
def limited(start_module_server):
    return start_module_server(
        limits={
            "max_open_uploads": 2,
            "max_bytes_in_flight": 10_000,
            "requests_per_window": 40,
            "rate_window_seconds": 60,
            "quota_retry_after_seconds": 7,
        }
    )


def first_chunk(name: str, size: int = 100) -> dict:
    return {
        "file_name": name,
        "file": b64(b"x" * size),
        "content_type": "image/jpeg",
        "is_chunk": True,
        "chunk_index": 0,
        "total_chunks": 2,
    }


def test_a_third_open_upload_is_429_until_one_is_abandoned(client):
    first = client.post(URL, json=first_chunk("a.jpg"))
    assert client.post(URL, json=first_chunk("b.jpg")).status_code == 200
    third = client.post(URL, json=first_chunk("c.jpg"))
    assert third.status_code == 429
    assert third.json()["code"] == "too-many-uploads"
    assert third.headers["retry-after"] == "7"
    # Continuing an upload already open is not a new one.
    again = client.post(URL, json=first_chunk("a.jpg"))
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert client.delete(f"{URL}/uploads/{first.json()['upload_id']}").status_code == 204
    assert client.post(URL, json=first_chunk("c.jpg")).status_code == 200


def test_bytes_in_flight_past_the_limit_are_429_and_nothing_is_stored(client):
    upload = client.post(URL, json=first_chunk("big.jpg", 6000))
    assert upload.status_code == 200
    over = client.post(URL, json=first_chunk("more.jpg", 6000))
    assert over.status_code == 429
    assert over.json()["code"] == "too-many-bytes-in-flight"
    assert int(over.headers["retry-after"]) > 0
    # The refused upload holds no bytes: a small one still fits beside the first.
    assert client.post(URL, json=first_chunk("small.jpg", 1000)).status_code == 200


def test_a_tus_upload_declaring_more_than_the_bytes_limit_is_429(client):
    r = client.post("/files/", headers={**TUS, "Upload-Length": "20000"})
    assert r.status_code == 429
    assert r.json()["code"] == "too-many-bytes-in-flight"
    assert r.headers["tus-resumable"] == "1.0.0"
    assert client.post("/files/", headers={**TUS, "Upload-Length": "2000"}).status_code == 201


def test_past_the_request_rate_a_user_gets_429_and_others_are_served(limited, client, token):
    statuses = [client.get(f"{URL}/uploads/{'x' * 32}").status_code for _ in range(45)]
    assert statuses[:40] == [404] * 40
    assert set(statuses[40:]) == {429}
    r = client.get(f"{URL}/uploads/{'x' * 32}")
    assert r.json()["code"] == "rate-limited"
    assert 1 <= int(r.headers["retry-after"]) <= 60
    other = {"Authorization": f"Bearer {token('someone-else')}"}
    assert httpx.get(f"{limited.url}{URL}/uploads/{'x' * 32}", headers=other).status_code == 404
    # Public and unauthenticated requests are not counted against the user.
    assert httpx.get(f"{limited.url}/healthz").status_code == 200


def test_the_rate_window_ends_and_the_user_is_served_again(start_server, token):
    server = start_server(limits={"requests_per_window": 3, "rate_window_seconds": 1})
    headers = {"Authorization": f"Bearer {token('rate-user')}"}
    with httpx.Client(base_url=server.url, headers=headers) as c:
        statuses = [c.get("/me/avatar").status_code for _ in range(5)]
        assert 429 in statuses
        deadline = time.monotonic() + 5
        while c.get("/me/avatar").status_code == 429:
            assert time.monotonic() < deadline, "the rate window never ended"
            time.sleep(0.1)


def test_a_busy_caller_is_served_from_leased_tokens_and_still_stops_at_the_limit(start_server, token, redis_url):
    # 300 a window: leases of up to 3 tokens; a long window, so that none comes back during the
    # test. The rate script is the only one that asks Redis for the time, so TIME's calls count
    # the round trips the limiter made.
    server = start_server(limits={"requests_per_window": 300, "rate_window_seconds": 3000})
    admin = redis.Redis.from_url(redis_url)
    headers = {"Authorization": f"Bearer {token('busy-user')}"}
    try:
        before = admin.info("commandstats").get("cmdstat_time", {}).get("calls", 0)
        with httpx.Client(base_url=server.url, headers=headers) as c:
            statuses = [c.get(f"{URL}/uploads/{'x' * 32}").status_code for _ in range(310)]
        asked = admin.info("commandstats")["cmdstat_time"]["calls"] - before
    finally:
        admin.close()
    assert statuses[:300] == [404] * 300 and set(statuses[300:]) == {429}  # exactly the limit
    assert asked < 150, asked  # one round trip a request was 310
