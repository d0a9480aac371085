"""What the simulated clients share: one request with its answer judged, the accounts they upload
as, and the final check that an upload became exactly the avatar that was sent."""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import gevent

from .checks import Reporter, WrongAnswer, judge, retry_after
from .images import Picture, centre_colour, matches

TUS = {"Tus-Resumable": "1.0.0"}


class Reported(Exception):
    """A wrong answer already in the report: the flow stops, the simulated client goes on."""


class Accounts:
    """The users the load runs as, shared by the simulated clients of one Locust process.

    An account held by one simulated client is exclusive: its avatar must be exactly that client's
    last upload. When there are fewer accounts than clients, several share one, and a newer upload
    by another may replace an avatar before its uploader looks (its versioned URL then answers 404)."""

    def __init__(self, tokens: dict[str, str]):
        self.tokens = tokens
        self.names = sorted(tokens)
        self.holders: dict[str, int] = defaultdict(int)
        self.sent: dict[str, set[tuple[int, int, int]]] = defaultdict(set)
        self.with_avatar: list[str] = []
        self._next = 0

    def take(self) -> str:
        if not self.names:
            raise RuntimeError("no tokens: run `python -m loadtest` or set LOADTEST_TOKENS_FILE (docs/loadtest.md)")
        name = self.names[self._next % len(self.names)]
        self._next += 1
        self.holders[name] += 1
        return name

    def release(self, name: str) -> None:
        self.holders[name] -= 1

    def shared(self, name: str) -> bool:
        return self.holders[name] > 1

    def finished(self, name: str) -> None:
        if name not in self.with_avatar:
            self.with_avatar.append(name)


class Api:
    """One simulated client's view of the server, through Locust's HTTP session."""

    def __init__(self, user: Any, codes: frozenset[str], timeout: float, rng: random.Random):
        self.client = user.client
        self.host = user.host.rstrip("/")
        self.codes = codes
        self.report = Reporter(user.environment)
        self.timeout = timeout
        self.rng = rng
        self.auth: dict[str, str] = {}

    def call(
        self,
        method: str,
        url: str,
        name: str,
        expected: Iterable[int],
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> Any:
        """The response when its status is `expected`; None after a documented refusal (reported as
        REFUSED, then waited out); a wrong answer is a failure in the report, then `Reported`."""
        expected = frozenset(expected)
        with self.client.request(
            method,
            url,
            name=name,
            headers=self.auth | (headers or {}),
            timeout=self.timeout,
            catch_response=True,
            allow_redirects=False,
            **kwargs,
        ) as response:
            try:
                refusal = judge(response.status_code, response.content or b"", expected, self.codes)
            except WrongAnswer as error:
                response.failure(error)
                raise Reported from error
            response.success()
        if refusal is None:
            return response
        self.report.refused(refusal)
        gevent.sleep(retry_after(response.headers))
        return None

    def check(self, holds: bool, name: str, message: str) -> None:
        if not holds:
            self.report.wrong(name, WrongAnswer(message))
            raise Reported(message)

    def verify_avatar(self, account: str, accounts: Accounts, avatar: Any, picture: Picture, started: float) -> None:
        """The avatar an upload reports is the picture that was sent (centre pixel of a served
        rendition), and, when nobody else uploads as this account, it is the account's current one."""
        self.check(isinstance(avatar, dict) and "version" in avatar, "avatar described", f"no avatar in {avatar!r}")
        version, url = avatar["version"], avatar["urls"]["64"]
        shared = accounts.shared(account)
        expected = {200, 404} if shared else {200}
        for _ in range(5):
            response = self.call("GET", url, "/avatars/[user]/[version]/64.webp", expected)
            if response is not None:
                break
        else:
            return
        if response.status_code == 404:  # replaced by another upload as the same account
            self.report.passed("avatar superseded")
            return
        seen = centre_colour(response.content)
        self.check(matches(seen, picture.colour), "avatar pixels", f"sent {picture.colour}, avatar shows {seen}")
        self.report.passed("avatar pixels", started)
        accounts.finished(account)
        if shared:
            return
        me = self.call("GET", "/me/avatar", "/me/avatar", {200})
        if me is not None:
            current = me.json().get("version")
            self.check(current == version, "avatar version", f"upload made {version}, /me/avatar says {current}")
            self.report.passed("avatar version")


def expand(listing: list[Any]) -> set[int]:
    """A chunk list as the chunk API answers it: indices, or [first, last] runs once longer than 64."""
    indices: set[int] = set()
    for entry in listing:
        if isinstance(entry, list):
            indices.update(range(entry[0], entry[1] + 1))
        else:
            indices.add(entry)
    return indices


def now() -> float:
    return time.perf_counter()
