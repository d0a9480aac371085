"""Locust users that behave like this server's clients (docs/loadtest.md):

- PhoneUser: tus in 64-256 KiB PATCHes on a flaky network: PATCHes cut mid-body, HEAD and resume,
  some uploads left halfway and picked up again minutes (here: seconds) later.
- WebUser: the avatar page's Uppy with its default settings: one POST, the whole file in one PATCH,
  retries after [0, 1, 3, 5] s with a HEAD first.
- AppUser: an app on the JSON chunk API: chunks out of order, some twice, some lost and sent again
  after asking the upload's status.
- ReaderUser: pages showing avatars, revalidating with If-None-Match.

Every answer is checked (loadtest/checks.py); a wrong one is a failure in Locust's report.
Run it with `make loadtest` / `python -m loadtest`, or `locust -f loadtest/locustfile.py` by hand.
"""

from __future__ import annotations

import base64
import json
import random
import secrets
from dataclasses import dataclass
from typing import Any, ClassVar

import gevent
from locust import HttpUser, between, events, task

from loadtest.checks import documented_codes
from loadtest.clients import TUS, Accounts, Api, Reported, expand, now
from loadtest.cut import cut_patch
from loadtest.images import Picture, centre_colour, load_pictures, matches
from loadtest.settings import LoadSettings

SETTINGS = LoadSettings()
KiB = 1024
_shared: dict[str, Any] = {}


@events.init.add_listener
def _load(environment: Any, **_: Any) -> None:
    """Once per Locust process: the pictures, the tokens and the documented error codes."""
    _shared["pictures"] = load_pictures(SETTINGS.images_dir, SETTINGS.image_scale)
    tokens = json.loads(SETTINGS.tokens_file.read_text()) if SETTINGS.tokens_file.exists() else {}
    _shared["accounts"] = Accounts(tokens)
    _shared["codes"] = documented_codes()


def _metadata(**values: str) -> str:
    return ",".join(f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in values.items())


class _Uploader(HttpUser):
    abstract = True
    wait_time = between(*SETTINGS.think_seconds)

    def on_start(self) -> None:
        self.rng = random.Random(SETTINGS.seed)
        self.api = Api(self, _shared["codes"], SETTINGS.request_timeout, self.rng)
        self.accounts: Accounts = _shared["accounts"]
        self.account = self.accounts.take()
        self.api.auth = {"Authorization": f"Bearer {self.accounts.tokens[self.account]}"}
        self.last_colour: tuple[int, int, int] | None = None

    def on_stop(self) -> None:
        self.accounts.release(self.account)

    def pick(self, kinds: tuple[str, ...] | None = None) -> Picture:
        """A picture in another colour than this client's last, so a stale avatar cannot pass."""
        choices = [
            p for p in _shared["pictures"] if p.colour != self.last_colour and (kinds is None or p.kind.name in kinds)
        ]
        picture = self.rng.choice(choices)
        self.last_colour = picture.colour
        self.accounts.sent[self.account].add(picture.colour)
        return picture

    def tus_create(self, picture: Picture, metadata: str) -> str | None:
        headers = TUS | {"Upload-Length": str(len(picture.data)), "Upload-Metadata": metadata}
        response = self.api.call("POST", "/files/", "/files/", {201}, headers=headers)
        if response is None:
            return None
        location = response.headers.get("Location", "")
        self.api.check(location.startswith(("http://", "https://", "/")), "tus location", f"Location {location!r}")
        return location if location.startswith("http") else self.host + location

    def tus_finish(self, url: str, picture: Picture, started: float) -> None:
        response = self.api.call("GET", url, "/files/[id] status", {200})
        if response is None:
            return
        status = response.json()
        self.api.check(status.get("state") == "done", "tus done", f"finished upload is {status.get('state')}")
        self.api.verify_avatar(self.account, self.accounts, status.get("avatar"), picture, started)


@dataclass
class TusUpload:
    url: str
    picture: Picture
    offset: int
    started: float
    give_up_at: int | None
    due: float = 0.0


class PhoneUser(_Uploader):
    weight = SETTINGS.weights.get("phone", 0)

    def on_start(self) -> None:
        super().on_start()
        self.parked: list[TusUpload] = []

    @task
    def upload(self) -> None:
        try:
            if self.parked and self.parked[0].due <= now():
                upload = self.parked.pop(0)
                self.head(upload, upper=upload.offset, resumed=True)
            else:
                picture = self.pick()
                metadata = _metadata(filename=picture.file_name, filetype=picture.kind.content_type)
                url = self.tus_create(picture, metadata)
                if url is None:
                    return
                length = len(picture.data)
                give_up = self.rng.randrange(1, length) if self.rng.random() < SETTINGS.give_up_rate else None
                upload = TusUpload(url, picture, 0, now(), give_up)
            self.push(upload)
        except Reported:
            pass

    def push(self, upload: TusUpload) -> None:
        data = upload.picture.data
        for _ in range(10_000):  # bounded: every round sends a chunk or learns the offset
            if upload.offset >= len(data):
                return self.tus_finish(upload.url, upload.picture, upload.started)
            if upload.give_up_at is not None and upload.offset >= upload.give_up_at:
                upload.give_up_at = None
                upload.due = now() + self.rng.uniform(*SETTINGS.comeback_seconds)
                self.parked.append(upload)  # the user walks away; the next task may come back to it
                return None
            size = int(self.rng.uniform(*SETTINGS.chunk_kib) * KiB)
            chunk = data[upload.offset : upload.offset + size]
            headers = TUS | {"Upload-Offset": str(upload.offset), "Content-Type": "application/offset+octet-stream"}
            if self.rng.random() < SETTINGS.cut_rate:
                keep = self.rng.randrange(0, len(chunk))
                seconds = cut_patch(upload.url, self.api.auth | headers, chunk, keep, self.rng)
                self.environment.events.request.fire(
                    request_type="PATCH",
                    name="/files/[id] cut mid-body",
                    response_time=seconds * 1000,
                    response_length=keep,
                    exception=None,
                    context={},
                )
                gevent.sleep(self.rng.uniform(*SETTINGS.offline_seconds))
                self.head(upload, upper=upload.offset + keep)
                continue
            response = self.api.call("PATCH", upload.url, "/files/[id]", {204}, headers=headers, data=chunk)
            if response is None:  # refused; a 408 or 429 may have kept part of the body
                self.head(upload, upper=upload.offset + len(chunk))
                continue
            offset = int(response.headers.get("Upload-Offset", -1))
            self.api.check(
                offset == upload.offset + len(chunk),
                "tus offset",
                f"PATCH of {len(chunk)} at {upload.offset} answered {offset}",
            )
            upload.offset = offset
        raise Reported("upload did not finish in 10,000 rounds")

    def head(self, upload: TusUpload, upper: int, resumed: bool = False) -> None:
        """Ask where the upload stands: never behind what was acknowledged, never past what was sent."""
        for _ in range(20):
            response = self.api.call("HEAD", upload.url, "/files/[id]", {200}, headers=TUS)
            if response is None:
                continue
            offset = int(response.headers.get("Upload-Offset", -1))
            self.api.check(
                upload.offset <= offset <= upper,
                "offsets never go backwards",
                f"HEAD says {offset}; acknowledged {upload.offset}, sent up to {upper}",
            )
            upload.offset = offset
            self.api.report.passed("resumed after leaving" if resumed else "offset after a cut")
            return
        raise Reported("HEAD refused 20 times")


class WebUser(_Uploader):
    """Uppy's Tus plugin with its defaults: no chunkSize (one PATCH), retryDelays [0, 1000, 3000, 5000]."""

    weight = SETTINGS.weights.get("web", 0)
    RETRY_DELAYS: ClassVar[tuple[float, ...]] = (0, 1, 3, 5)

    @task
    def upload(self) -> None:
        try:
            picture = self.pick()
            started = now()
            name = picture.file_name
            metadata = _metadata(
                relativePath="null",
                name=name,
                type=picture.kind.content_type,
                filetype=picture.kind.content_type,
                filename=name,
            )
            url = self.tus_create(picture, metadata)
            if url is None:
                return
            offset = 0
            for delay in (*self.RETRY_DELAYS, None):
                headers = TUS | {"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"}
                response = self.api.call(
                    "PATCH", url, "/files/[id] whole file", {204}, headers=headers, data=picture.data[offset:]
                )
                if response is not None:
                    return self.tus_finish(url, picture, started)
                if delay is None:
                    return None
                gevent.sleep(delay)
                head = self.api.call("HEAD", url, "/files/[id]", {200}, headers=TUS)
                if head is not None:
                    seen = int(head.headers.get("Upload-Offset", -1))
                    self.api.check(
                        offset <= seen <= len(picture.data), "offsets never go backwards", f"{seen} after {offset}"
                    )
                    offset = seen
        except Reported:
            pass
        return None


class AppUser(_Uploader):
    weight = SETTINGS.weights.get("app", 0)

    @task
    def upload(self) -> None:
        try:
            self.chunked_upload()
        except Reported:
            pass

    def send(self, picture: Picture, pieces: list[bytes], index: int, client_id: str) -> dict[str, Any] | None:
        document = {
            "file_name": picture.file_name,
            "content_type": picture.kind.content_type,
            "is_chunk": True,
            "chunk_index": index,
            "total_chunks": len(pieces),
            "upload_id": client_id,
            "file": base64.b64encode(pieces[index]).decode(),
        }
        for _ in range(10):
            response = self.api.call(
                "POST", "/accounts/profile-image", "/accounts/profile-image chunk", {200}, json=document
            )
            if response is not None:
                body: dict[str, Any] = response.json()
                self.api.check(
                    index in expand(body.get("received_chunks", [])) or body.get("complete"),
                    "chunk recorded",
                    f"chunk {index} not in {body}",
                )
                return body
        raise Reported("chunk refused 10 times")

    def chunked_upload(self) -> None:
        picture = self.pick()
        started = now()
        size = int(SETTINGS.json_chunk_kib * KiB)
        pieces = [picture.data[i : i + size] for i in range(0, len(picture.data), size)]
        order = list(range(len(pieces)))
        self.rng.shuffle(order)
        lost = {i for i in order[:-1] if self.rng.random() < SETTINGS.loss_rate}
        client_id = f"app-{secrets.token_hex(8)}"
        body: dict[str, Any] | None = None
        acknowledged: set[int] = set()
        for index in order:
            if index in lost:
                continue  # the request never reached the server
            body = self.send(picture, pieces, index, client_id)
            acknowledged.add(index)
            if not body.get("complete") and self.rng.random() < SETTINGS.duplicate_rate:
                again = self.send(picture, pieces, index, client_id)  # the answer was lost: sent twice
                self.api.check(
                    again.get("duplicate") is True, "duplicate chunk", f"a resent chunk is not a duplicate: {again}"
                )
                self.api.report.passed("duplicate chunk")
        if lost:
            assert body is not None
            status = self.api.call(
                "GET",
                f"/accounts/profile-image/uploads/{body['upload_id']}",
                "/accounts/profile-image/uploads/[id]",
                {200},
            )
            if status is None:
                return
            missing = expand(status.json().get("missing_chunks", []))
            self.api.check(missing == lost, "missing chunks", f"lost {sorted(lost)}, server misses {sorted(missing)}")
            self.api.report.passed("missing chunks")
            for index in sorted(lost):
                body = self.send(picture, pieces, index, client_id)
        assert body is not None
        self.api.check(body.get("complete") is True, "chunked upload complete", f"all chunks sent, answer {body}")
        self.api.verify_avatar(self.account, self.accounts, body.get("avatar"), picture, started)


class ReaderUser(HttpUser):
    """A page showing avatars: GET /avatars/{user} with If-None-Match, as a browser revalidates."""

    weight = SETTINGS.weights.get("reader", 0)
    wait_time = between(0.2, 1)

    def on_start(self) -> None:
        self.rng = random.Random(SETTINGS.seed)
        self.api = Api(self, _shared["codes"], SETTINGS.request_timeout, self.rng)
        self.accounts: Accounts = _shared["accounts"]
        self.etags: dict[str, str] = {}

    @task
    def read(self) -> None:
        if not self.accounts.with_avatar:
            return  # nothing uploaded yet
        account = self.rng.choice(self.accounts.with_avatar)
        headers = {"Accept": "image/webp,image/*"}
        if account in self.etags:
            headers["If-None-Match"] = self.etags[account]
        try:
            response = self.api.call(
                "GET", f"/avatars/{account}?size=64", "/avatars/[user]", {200, 304}, headers=headers
            )
            if response is None:
                return
            etag = response.headers.get("ETag")
            self.api.check(bool(etag), "reader etag", f"{response.status_code} without ETag")
            if response.status_code == 304:
                self.api.check(
                    etag == self.etags.get(account), "reader etag", f"304 with {etag}, asked {self.etags.get(account)}"
                )
                return
            seen = centre_colour(response.content)
            sent = self.accounts.sent[account]
            self.api.check(
                any(matches(seen, c) for c in sent),
                "reader pixels",
                f"{account}'s avatar shows {seen}, sent {sorted(sent)}",
            )
            self.etags[account] = etag
        except Reported:
            pass
