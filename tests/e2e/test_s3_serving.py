"""Serving avatars from the bucket and living through its outage, against real server processes
on a real SeaweedFS: a 302 to storage.s3.public_base_url when it is set (the same cache headers),
/healthz and uploads answering 503 with Retry-After while the bucket is down, and uploads working
again once it is back."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.seaweed_process import SeaweedProcess
from tests.support import images, s3
from tests.support.encoding import b64

URL = "/accounts/profile-image"
CDN = "https://cdn.example.test/avatars-bucket"


def whole_image(colour: tuple[int, int, int]) -> dict:
    return {"file_name": "a.jpg", "file": b64(images.jpeg(colour=colour)), "content_type": "image/jpeg"}


def test_with_a_public_base_url_avatars_are_a_redirect_with_the_same_cache_headers(start_server, bucket, token):
    config = bucket.storage_config(public_base_url=CDN)
    server = start_server(storage={"backend": "s3", "s3": config})
    user = f"user-{secrets.token_hex(4)}"
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token(user)}"}) as client:
        r = client.post(URL, json=whole_image((200, 30, 30)))
        assert r.status_code == 200, r.text
        avatar = r.json()["avatar"]

        r = client.get(f"/avatars/{user}", params={"size": 128}, headers={"Accept": "image/webp"})
        assert r.status_code == 302
        key = f"{config['prefix']}avatars/"
        assert r.headers["location"].startswith(f"{CDN}/{key}") and r.headers["location"].endswith("/128.webp")
        assert r.headers["cache-control"] == "public, max-age=60"
        etag = r.headers["etag"]
        again = client.get(f"/avatars/{user}", params={"size": 128}, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.headers["etag"] == etag

        r = client.get(avatar["urls"]["128"])
        assert r.status_code == 302 and r.headers["cache-control"] == "public, max-age=31536000, immutable"
        # The redirect names the object the bucket really holds.
        objects = {o["Key"] for o in bucket_listing(bucket.endpoint_url, key)}
        assert r.headers["location"].removeprefix(f"{CDN}/") in objects


def bucket_listing(endpoint_url: str, prefix: str) -> list[dict]:
    """The bucket's objects under `prefix`, read with botocore's own synchronous client."""
    import botocore.session

    client = botocore.session.get_session().create_client(
        "s3",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=s3.ACCESS_KEY,
        aws_secret_access_key=s3.SECRET_KEY,
    )
    try:
        return client.list_objects_v2(Bucket=s3.BUCKET, Prefix=prefix).get("Contents", [])
    finally:
        client.close()


@pytest.fixture()
def own_seaweed(tmp_path: Path) -> Iterator[SeaweedProcess]:
    """A SeaweedFS of this test's own, which it may stop and start again (same data, same S3 port)."""
    process = SeaweedProcess(tmp_path / "seaweedfs", access_key_id=s3.ACCESS_KEY, secret_access_key=s3.SECRET_KEY)
    process.start()
    yield process
    process.stop(timeout=2)


def _own_bucket(seaweed: SeaweedProcess, **extra: object) -> dict[str, object]:
    """storage.s3 settings for the test's own SeaweedFS, with `extra` on top."""
    return {
        "endpoint_url": seaweed.endpoint_url,
        "bucket": s3.BUCKET,
        "access_key_id": s3.ACCESS_KEY,
        "secret_access_key": s3.SECRET_KEY,
        **extra,
    }


def until(check, what: str, seconds: float = 60):
    deadline = time.monotonic() + seconds
    while not (result := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
    return result


def test_while_the_bucket_is_down_healthz_and_uploads_answer_503_then_work_again(start_server, own_seaweed, token):
    settings = _own_bucket(own_seaweed, max_attempts=2)
    server = start_server(storage={"backend": "s3", "s3": settings})
    user = f"user-{secrets.token_hex(4)}"
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token(user)}"}, timeout=60) as client:
        r = client.get("/healthz")
        assert r.status_code == 200 and r.json()["storage"] is True
        assert client.post(URL, json=whole_image((10, 200, 10))).status_code == 200

        own_seaweed.stop(timeout=2)
        r = client.get("/healthz")
        assert r.status_code == 503 and r.json()["storage"] is False and r.json()["redis"] is True
        assert int(r.headers["retry-after"]) > 0
        r = client.post(URL, json=whole_image((10, 10, 200)))
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "storage-unavailable" and int(r.headers["retry-after"]) > 0
        r = client.get(f"/avatars/{user}", params={"size": 64})
        assert r.status_code == 503 and int(r.headers["retry-after"]) > 0

        own_seaweed.start()
        until(lambda: client.get("/healthz").status_code == 200, "the server never saw the bucket back")

        def retried() -> httpx.Response | None:
            # A restarted SeaweedFS answers HEAD (healthz) a moment before it takes writes again
            # (object_storage.py waits for the same at start): until then, 503 with Retry-After.
            r = client.post(URL, json=whole_image((10, 10, 200)))
            if r.status_code == 503:
                assert r.json()["code"] == "storage-unavailable" and int(r.headers["retry-after"]) > 0
                return None
            return r

        r = until(retried, "uploads never worked again")
        assert r.status_code == 200 and r.json()["complete"] is True, r.text
        assert client.get(f"/avatars/{user}", params={"size": 64}).status_code == 200


def test_an_avatar_the_bucket_will_not_store_leaves_the_upload_to_a_retry(start_server, own_seaweed, token):
    """The bucket refuses the avatar's objects (its avatars/ prefix made read-only in SeaweedFS)
    while it still takes the upload's: the request that completes the upload answers 503
    storage-unavailable with Retry-After, the upload is not failed, and once the bucket takes
    writes again the same request finishes it."""
    settings = _own_bucket(own_seaweed, prefix=s3.fresh_prefix(), max_attempts=1)
    server = start_server(storage={"backend": "s3", "s3": settings})
    user = f"user-{secrets.token_hex(4)}"
    data = images.jpeg(colour=(200, 0, 200))
    half = len(data) // 2
    chunks = [
        {
            "file_name": "a.jpg",
            "file": b64(part),
            "content_type": "image/jpeg",
            "is_chunk": True,
            "chunk_index": i,
            "total_chunks": 2,
        }
        for i, part in enumerate((data[:half], data[half:]))
    ]
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token(user)}"}, timeout=60) as client:
        upload_id = client.post(URL, json=chunks[0]).json()["upload_id"]
        chunks[1]["upload_id"] = upload_id
        s3.make_read_only(own_seaweed, settings["prefix"] + "avatars/")
        try:
            r = client.post(URL, json=chunks[1])
            assert r.status_code == 503, r.text
            assert r.json()["code"] == "storage-unavailable" and int(r.headers["retry-after"]) > 0
            status = client.get(f"{URL}/uploads/{upload_id}").json()
            assert status["state"] != "failed" and status["complete"] is not True, status
        finally:
            s3.make_read_only(own_seaweed, settings["prefix"] + "avatars/", read_only=False)

        r = until(
            lambda: (answer := client.post(URL, json=chunks[1])).status_code == 200 and answer,
            "the upload never completed once the bucket took writes again",
        )
        assert r.json()["complete"] is True and r.json()["state"] == "done", r.text
        assert client.get(f"/avatars/{user}", params={"size": 64}).status_code == 200


def test_a_tus_upload_whose_avatar_the_bucket_will_not_store_is_finished_once_it_does(start_server, own_seaweed, token):
    """The same for tus: the PATCH carrying the last bytes answers 503 with Retry-After, the upload
    is not failed, and once the bucket takes writes the client's HEAD (which has the server
    complete an upload whose bytes are all in) brings the avatar."""
    settings = _own_bucket(own_seaweed, prefix=s3.fresh_prefix(), max_attempts=1)
    server = start_server(storage={"backend": "s3", "s3": settings})
    user = f"user-{secrets.token_hex(4)}"
    data = images.jpeg(colour=(0, 200, 200))
    tus = {"Tus-Resumable": "1.0.0"}
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token(user)}"}, timeout=60) as client:
        r = client.post("/files/", headers={**tus, "Upload-Length": str(len(data))})
        location = "/files/" + r.headers["location"].rsplit("/files/", 1)[1]
        s3.make_read_only(own_seaweed, settings["prefix"] + "avatars/")
        try:
            r = client.patch(
                location,
                content=data,
                headers={**tus, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
            )
            assert r.status_code == 503, r.text
            assert int(r.headers["retry-after"]) > 0
            state = client.get(location, headers=tus).json()["state"]
            assert state != "failed", state
        finally:
            s3.make_read_only(own_seaweed, settings["prefix"] + "avatars/", read_only=False)

        def finished() -> bool:
            assert client.head(location, headers=tus).headers["upload-offset"] == str(len(data))
            state = client.get(location, headers=tus).json()["state"]
            assert state != "failed", state
            return state == "done"

        until(finished, "the upload never completed once the bucket took writes again")
        assert client.get(f"/avatars/{user}", params={"size": 64}).status_code == 200
