"""What every simulated client checks about each answer, and how a wrong one reaches Locust's report.

A wrong answer (a status or body the API does not promise, an offset that went backwards, an avatar
that is not the picture sent) is reported through `events.request` with an exception: it counts in
the report's failures, not only as a slow request. A refusal the API documents as part of normal
operation under load (423 `upload-locked`, 429, 503 with `Retry-After`, 408 `body-timeout`) is not
wrong: it is reported as a request of type `REFUSED` named after its code, so it shows in the
statistics without failing the run.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Where the codes are documented: the README's error tables and docs/*.md (tus, images, operations...).
_DOCS = ("README.md", "docs/*.md")
# Codes are lower-case words joined by hyphens (`forbidden`, `upload-locked`); docs/errors.md lists them all.
_CODE = re.compile(r"`([a-z0-9]+(?:-[a-z0-9]+)*)`")
# Answers the API documents for a busy or limiting server: the client waits and tries again.
REFUSAL_STATUSES = frozenset({408, 423, 429, 503})
# Statuses with no JSON code of their own (304 is a cache hit).
_STATUSES_WITHOUT_CODE = frozenset({304})


class WrongAnswer(AssertionError):
    """The server answered something it does not promise."""


def documented_codes(root: Path = ROOT, openapi: dict[str, Any] | None = None) -> frozenset[str]:
    """Every machine-readable code the documentation names: `kebab-case` words in backticks in the
    README and docs/*.md, and any such word in the descriptions of /openapi.json."""
    texts: list[str] = []
    for pattern in _DOCS:
        texts.extend(path.read_text(encoding="utf-8") for path in sorted(root.glob(pattern)))
    if openapi is not None:
        texts.append(json.dumps(openapi))
    return frozenset(code for text in texts for code in _CODE.findall(text))


def error_code(body: bytes) -> str | None:
    """The machine code of an error body: `code` in the chunk API's and tus' JSON, and in the IETF
    draft's problem details."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    code = document.get("code") if isinstance(document, dict) else None
    return code if isinstance(code, str) else None


def judge(status: int, body: bytes, expected: Iterable[int], codes: frozenset[str]) -> str | None:
    """None when `status` is one of `expected`; the code of a documented refusal; else WrongAnswer."""
    if status in expected:
        return None
    code = error_code(body)
    if status >= 400 and status not in _STATUSES_WITHOUT_CODE:
        if code is None:
            raise WrongAnswer(f"{status} without a machine-readable code: {body[:200]!r}")
        if code not in codes:
            raise WrongAnswer(f"{status} with the undocumented code {code!r}")
    if status in REFUSAL_STATUSES:
        return code or str(status)
    raise WrongAnswer(f"unexpected {status} {code or ''}: {body[:200]!r}".strip())


def retry_after(headers: Any, cap: float = 5.0) -> float:
    """The server's Retry-After in seconds, capped so a load test keeps moving."""
    try:
        return min(cap, max(0.1, float(headers.get("Retry-After", "1"))))
    except ValueError:
        return 1.0


class Reporter:
    """Sends checks and refusals to Locust's statistics (`environment.events.request`)."""

    def __init__(self, environment: Any):
        self.environment = environment

    def _fire(self, request_type: str, name: str, exception: Exception | None, started: float | None = None) -> None:
        elapsed = 0.0 if started is None else (time.perf_counter() - started) * 1000
        self.environment.events.request.fire(
            request_type=request_type,
            name=name,
            response_time=elapsed,
            response_length=0,
            exception=exception,
            context={},
        )

    def passed(self, name: str, started: float | None = None) -> None:
        """A check that held (e.g. `avatar pixels`); its time is the whole upload when given."""
        self._fire("CHECK", name, None, started)

    def wrong(self, name: str, error: Exception) -> None:
        self._fire("CHECK", name, error if isinstance(error, WrongAnswer) else WrongAnswer(str(error)))

    def refused(self, code: str) -> None:
        self._fire("REFUSED", code, None)
