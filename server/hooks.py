"""The blocking pre-create hook: an HTTP call made before a new upload is accepted.

`hooks.pre_create_url` gets a POST with `{"type": "pre-create", "upload": {...}}` (the same
upload description events carry) for every new upload, from every protocol (the core asks it
through `chunks.Uploads`' gate). A 2xx answer accepts the upload. A 4xx answer refuses it: the
client gets that status class and the hook's `{"message": ...}`, with the code
`rejected-by-hook`. No answer within `pre_create_timeout_seconds`, or a 5xx, accepts the upload
when `pre_create_fail_open` is true and refuses it with 503 (`hook-unavailable`) otherwise.
"""

from __future__ import annotations

import logging

import httpx

import chunks
from chunks.outbox import upload_data

from .errors import BadRequest, ContentTooLarge, Forbidden, HookUnavailable, UnsupportedMediaType
from .metrics import Metrics
from .settings import HookSettings

log = logging.getLogger(__name__)

HOOK_TYPE = "pre-create"
_REFUSAL_BY_STATUS: dict[int, type[BadRequest]] = {
    400: BadRequest,
    413: ContentTooLarge,
    415: UnsupportedMediaType,
}
_MAX_MESSAGE = 300


class PreCreateHook:
    def __init__(self, settings: HookSettings, metrics: Metrics) -> None:
        self.settings, self.metrics = settings, metrics
        self.client = httpx.AsyncClient(timeout=settings.pre_create_timeout_seconds, follow_redirects=False)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def __call__(self, session: chunks.UploadSession) -> None:
        self.metrics.hook_invocations.labels(HOOK_TYPE).inc()
        try:
            response = await self.client.post(
                self.settings.pre_create_url, json={"type": HOOK_TYPE, "upload": upload_data(session)}
            )
        except httpx.HTTPError as exc:
            self._unavailable(f"no answer ({type(exc).__name__})")
            return
        if 200 <= response.status_code < 300:
            return
        if 400 <= response.status_code < 500:
            raise _REFUSAL_BY_STATUS.get(response.status_code, Forbidden)(_message(response), code="rejected-by-hook")
        self._unavailable(f"status {response.status_code}")

    def _unavailable(self, why: str) -> None:
        self.metrics.hook_errors.labels(HOOK_TYPE).inc()
        if self.settings.pre_create_fail_open:
            log.warning("pre-create hook failed (%s); upload accepted (fail-open)", why)
            return
        log.warning("pre-create hook failed (%s); upload refused (fail-closed)", why)
        raise HookUnavailable("the upload could not be checked right now; try again shortly", code="hook-unavailable")


def _message(response: httpx.Response) -> str:
    try:
        given = response.json().get("message")
    except (ValueError, AttributeError):
        given = None
    if isinstance(given, str) and given.strip():
        return given.strip()[:_MAX_MESSAGE]
    return "this upload was refused"
