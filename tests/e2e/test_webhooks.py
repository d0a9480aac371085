"""Webhooks against a real local HTTP receiver: signed, at least once, across receiver outages
and server crashes, and parked in the dead-letter stream when a receiver never recovers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import images
from tests.support.metrics import scrape, value
from tests.support.server import ServerProcess, StartServer
from tests.support.tus import TUS, create, eventually, patch, upload_id
from tests.support.webhooks import Receiver, verify

SECRET = "whsec-" + "5" * 32
FAST_RETRY = {"first_retry_seconds": 0.2, "max_retry_seconds": 0.5, "timeout_seconds": 2}


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    found = Receiver().start()
    yield found
    found.stop()


def _start(
    start_server: StartServer, receiver: Receiver, redis_url: str | None = None, **delivery: Any
) -> ServerProcess:
    cluster = {"redis_url": redis_url, "redis": {"mode": "cluster"}} if redis_url else {}
    return start_server(
        event_delivery={**FAST_RETRY, **delivery},
        server={"log_level": "info"},
        events=[{"url": receiver.url, "secret": SECRET}],
        **cluster,
    )


def _upload(server: ServerProcess, auth: dict[str, str], data: bytes, status: int = 204) -> str:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        url = create(client, auth, len(data))
        assert patch(client, url, auth, 0, data).status_code == status
        return upload_id(url)


def _of(events: list[dict[str, Any]], kind: str, upload: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind and e["data"].get("upload_id") == upload]


# On a Redis Cluster too: each event is staged with its upload's keys and relayed to the one
# stream (chunks/outbox.py), as no transaction may span two hash slots there.
@pytest.mark.parametrize("backend", ["standalone", "cluster"])
def test_every_event_is_signed_and_describes_what_happened(start_server, receiver, auth, user, backend, request):
    cluster_url = request.getfixturevalue("redis_cluster").url if backend == "cluster" else None
    server = _start(start_server, receiver, cluster_url)
    data = images.jpeg()
    finished = _upload(server, auth, data)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        abandoned = create(client, auth, 100)
        assert client.delete(abandoned, headers={**auth, "Tus-Resumable": "1.0.0"}).status_code == 204
        assert client.delete("/me/avatar", headers=auth).status_code in (200, 204)

    events = receiver.wait_for(
        lambda got: (
            bool(_of(got, "upload.terminated", upload_id(abandoned)))
            and any(e["type"] == "avatar.deleted" for e in got)
        )
    )
    for received in receiver.received:
        assert verify(SECRET, received.headers["webhook-signature"], received.body)
        assert not verify("another secret", received.headers["webhook-signature"], received.body)
    assert len({e["id"] for e in events}) == len(events)
    (created,) = _of(events, "upload.created", finished)
    assert created["data"]["user"] == user and created["data"]["length"] == len(data)
    (done,) = _of(events, "upload.finished", finished)
    (changed,) = [e for e in events if e["type"] == "avatar.changed"]
    assert changed["data"]["user"] == user
    assert changed["data"]["version"] == done["data"]["result"]["version"]
    assert changed["data"]["urls"]["128"].endswith(f"/{changed['data']['version']}/128.webp")
    assert set(created) == {"id", "type", "created_at", "data"}


def test_a_refused_image_is_reported_as_failed_with_its_code(start_server, receiver, auth):
    server = _start(start_server, receiver)
    refused = _upload(server, auth, images.text_file(), status=415)
    events = receiver.wait_for(lambda got: bool(_of(got, "upload.failed", refused)))
    (failed,) = _of(events, "upload.failed", refused)
    assert failed["data"]["error"]["code"] == "unsupported-format"


def test_a_receiver_down_through_a_server_crash_gets_every_event_after(start_server, receiver, auth, redis_client):
    server = _start(start_server, receiver)
    receiver.stop()
    uploads = [_upload(server, auth, images.jpeg()) for _ in range(3)]
    stream = f"{server.config['redis']['key_prefix']}:events"
    # Attempted and failed at least once: the events sit pending in the group.
    eventually(lambda: sum(g["pending"] for g in redis_client.xinfo_groups(stream)) >= 6, what="failed attempts")
    server.kill()
    receiver.start()
    start_server(root=server.workdir, config=server.config, port=server.port)

    events = receiver.wait_for(
        lambda got: all(_of(got, "upload.finished", u) and _of(got, "upload.created", u) for u in uploads), timeout=60
    )
    changed = {e["id"] for e in events if e["type"] == "avatar.changed"}
    assert len(changed) == 3
    for u in uploads:
        assert len({e["id"] for e in _of(events, "upload.created", u)}) == 1


def test_an_event_never_accepted_is_parked_and_counted(start_server, auth, redis_client):
    refusing = Receiver(status=500).start()
    try:
        server = _start(start_server, refusing, retry_for_seconds=1)
        _upload(server, auth, images.jpeg())
        dead = f"{server.config['redis']['key_prefix']}:events:dead"
        eventually(lambda: redis_client.xlen(dead) >= 3, timeout=30, what="dead letters")
        samples = scrape(server.url)
        assert value(samples, "avs_events_dead_lettered_total", endpoint="webhook-0") >= 3
        assert value(samples, "avs_events_dead_letters") >= 3
        assert len(refusing.received) >= 3
    finally:
        refusing.stop()


@pytest.mark.parametrize(
    ("status", "reply", "expected"),
    [(200, b"", 201), (403, b'{"message": "uploads are closed for maintenance"}', 403), (400, b"oops", 400)],
)
def test_the_pre_create_hook_accepts_or_refuses_a_new_upload(start_server, auth, user, status, reply, expected):
    hook = Receiver(status=status, body=reply).start()
    try:
        server = start_server(hooks={"pre_create_url": hook.url})
        response = httpx.post(f"{server.url}/files/", headers={**auth, **TUS, "Upload-Length": "10"})
        assert response.status_code == expected
        if status == 403:
            assert "uploads are closed for maintenance" in response.text
        (asked,) = hook.events()
        assert asked["type"] == "pre-create" and asked["upload"]["user"] == user
        assert asked["upload"]["length"] == 10
    finally:
        hook.stop()


@pytest.mark.parametrize(("fail_open", "expected"), [(False, 503), (True, 201)])
def test_an_unreachable_pre_create_hook_fails_closed_or_open(start_server, auth, fail_open, expected):
    down = Receiver()  # never started: connection refused
    server = start_server(hooks={"pre_create_url": down.url, "pre_create_fail_open": fail_open})
    response = httpx.post(f"{server.url}/files/", headers={**auth, **TUS, "Upload-Length": "10"})
    assert response.status_code == expected
    samples = scrape(server.url)
    assert value(samples, "tusd_hook_errors_total", hooktype="pre-create") == 1
    if expected == 503:
        assert "retry-after" in response.headers
