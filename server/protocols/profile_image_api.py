"""The profile-image API: `GET`, `POST` and `DELETE /v1/users/{userId}/profile/profile-image`.

`POST` with a multipart `file` sets the image at once. `POST` with JSON `{"url": ...}` answers
202 with a placeholder whose `status` is `downloading`; the image is fetched in the background
(see `server.fetch`) and `status` becomes `ready`, or `failed` with a `reason`. The fetch's
state lives in Redis (`server.pending_fetches`), so any server process answers the client's
polling `GET`. Validation errors answer 400 `{"code": "validation-failure", "message",
"fieldErrors": [...]}`; other errors `{"code", "message"}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiofiles.os
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from avatars import AvatarVersion, ImageRejected, ImageTooLarge

from .. import bodies, fetch, multipart
from .. import openapi as oa
from ..auth import Principal
from ..bodies import BodyTooLarge
from ..endpoint import Endpoints
from ..errors import BadRequest, Forbidden, NotFound, Problem
from ..links import base_url
from ..pending_fetches import PendingFetch
from ..services import Services
from ..settings import Settings

FILE_FIELD = "file"
_MAX_JSON = 16 * 1024
log = logging.getLogger(__name__)


class ValidationFailure(BadRequest):
    """A request this API refuses as invalid; `field`/`field_code` name the field at fault."""

    def __init__(self, message: str, *, field: str | None = None, field_code: str = ""):
        super().__init__(message, code="validation-failure")
        self.field_errors = [{"field": field, "code": field_code}] if field else []


async def _render(request: Request, services: Services, problem: Problem, exc: Exception) -> Response:
    if isinstance(exc, BodyTooLarge):
        exc = ValidationFailure(exc.message, field=FILE_FIELD, field_code="file-too-large")
    elif isinstance(exc, ImageRejected):
        code = "file-too-large" if isinstance(exc, ImageTooLarge) else "invalid-file-format"
        exc = ValidationFailure(exc.message, field=FILE_FIELD, field_code=code)
    if isinstance(exc, ValidationFailure):
        body = {"code": exc.code, "message": exc.message, "fieldErrors": exc.field_errors}
        return JSONResponse(body, status_code=400)
    return JSONResponse({"code": problem.code, "message": problem.message}, problem.status, headers=problem.headers)


_api = Endpoints(_render)


def _own(request: Request, principal: Principal) -> str:
    if request.path_params["userId"] != principal.user_id:
        raise Forbidden("a profile image can only be managed by its own user", code="forbidden")
    return principal.user_id


async def show(request: Request, services: Services, principal: Principal) -> Response:
    user_id = _own(request, principal)
    pending = await services.pending_fetches.get(user_id)
    if pending is not None:
        return JSONResponse(_pending_image(pending))
    current = await services.avatars.current(user_id)
    if current is None:
        raise NotFound("this user has no profile image", code="not-found")
    return JSONResponse(_ready_image(current, base_url(request, services.settings)))


async def replace(request: Request, services: Services, principal: Principal) -> Response:
    user_id = _own(request, principal)
    if multipart.is_multipart(request):
        version = await _from_form(request, services, user_id)
        return JSONResponse(_ready_image(version, base_url(request, services.settings)))
    pending = await _start_fetch(request, services, user_id)
    return JSONResponse(_pending_image(pending), status_code=202)


async def remove(request: Request, services: Services, principal: Principal) -> Response:
    user_id = _own(request, principal)
    services.pending_fetches.cancel(user_id)
    # Under the user's lock: a download finishing now either swapped before this (and its
    # image is removed here) or sees that it was forgotten and swaps nothing.
    async with services.pending_fetches.locked(user_id):
        fetching = await services.pending_fetches.forget(user_id)
        removed = await services.avatars.remove(user_id)
    if not (fetching or removed):
        raise NotFound("this user has no profile image", code="not-found")
    return Response(status_code=204)


def routes(settings: Settings) -> list[BaseRoute]:
    path = "/v1/users/{userId}/profile/profile-image"
    return [
        Route(path, _api.authenticated(show), methods=["GET"]),
        Route(path, _api.authenticated(replace), methods=["POST"]),
        Route(path, _api.authenticated(remove), methods=["DELETE"]),
    ]


async def _from_form(request: Request, services: Services, user_id: str) -> AvatarVersion:
    limit = services.settings.limits.max_image_bytes
    form = await multipart.receive(request, FILE_FIELD, services.work_root, limit, services.body_pace)
    try:
        if not form.received:
            raise ValidationFailure("the form has no 'file' field", field=FILE_FIELD, field_code="field-missing")
        if form.size == 0:
            raise ValidationFailure("the file is empty", field=FILE_FIELD, field_code="invalid-file-format")
        # An image sent now supersedes a download still running.
        services.pending_fetches.cancel(user_id)
        await services.pending_fetches.forget(user_id)
        return await services.avatar_setter.set_avatar(user_id, form.path)
    finally:
        await form.discard()


async def _start_fetch(request: Request, services: Services, user_id: str) -> PendingFetch:
    raw = await bodies.read(request, _MAX_JSON, services.body_pace)
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        raise ValidationFailure("send multipart/form-data with a 'file', or a JSON object with a 'url'") from None
    url = document.get("url") if isinstance(document, dict) else None
    if url is None or url == "":
        raise ValidationFailure("the 'url' of the image is missing", field="url", field_code="field-missing")
    if not isinstance(url, str):
        raise ValidationFailure("'url' must be a string", field="url", field_code="invalid-url")
    try:
        fetch.check_url(url)
    except fetch.InvalidUrl as exc:
        raise ValidationFailure(exc.message, field="url", field_code="invalid-url") from None
    services.pending_fetches.admit(user_id)
    pending = await services.pending_fetches.start(user_id, url)
    task = services.tasks.spawn(_fetch(services, user_id, url, pending), name=f"profile-image-fetch-{pending.id}")
    services.pending_fetches.track(user_id, task)
    return pending


class _Superseded(Exception):
    """A DELETE or a newer image came while the download was processed: it must not swap."""


def _still_current(services: Services, user_id: str, pending: PendingFetch) -> Callable[[], Any]:
    @contextlib.asynccontextmanager
    async def guard() -> AsyncIterator[None]:
        async with services.pending_fetches.locked(user_id):
            if not await services.pending_fetches.is_latest(user_id, pending.id):
                raise _Superseded
            current = await services.avatars.current(user_id)
            # An image stored by any API after this download began is newer than it.
            if current is not None and current.updated_at > pending.started_at:
                raise _Superseded
            yield

    return guard


async def _fetch(services: Services, user_id: str, url: str, pending: PendingFetch) -> None:
    """The background half of `POST {"url": ...}`: download, process, swap, and record the outcome.

    A bug leaves the default failure recorded (the task runner logs it), so the client's polling
    ends in `failed` rather than in a placeholder that says `downloading` until it expires."""
    fetch_id = pending.id
    path = services.work_root / f"fetch-{fetch_id}"
    failure: tuple[str, str] | None = ("internal-error", "the image could not be stored")
    try:
        await fetch.download(url, path, services.settings.limits.max_image_bytes, services.settings.fetch)
        if await services.pending_fetches.is_latest(user_id, fetch_id):
            await services.avatar_setter.set_avatar(user_id, path, guard=_still_current(services, user_id, pending))
        failure = None
    except _Superseded:
        failure = None  # nothing to record: the newer state already speaks for itself
    except fetch.FetchFailed as exc:
        failure = (exc.code, exc.message)
    except ImageRejected as exc:
        failure = ("file-too-large" if isinstance(exc, ImageTooLarge) else "invalid-file-format", exc.message)
    except asyncio.CancelledError:
        failure = ("interrupted", "the server stopped before the image was downloaded")
        raise
    finally:
        await asyncio.shield(_settle(services, user_id, fetch_id, failure))
        with contextlib.suppress(FileNotFoundError):
            await aiofiles.os.remove(path)


async def _settle(services: Services, user_id: str, fetch_id: str, failure: tuple[str, str] | None) -> None:
    try:
        await services.pending_fetches.settle(user_id, fetch_id, failure)
    except RedisError:
        log.warning("could not record the outcome of a profile-image fetch", exc_info=True)


def _pending_image(pending: PendingFetch) -> dict[str, Any]:
    image: dict[str, Any] = {"id": pending.id, "status": pending.status, "sourceUrl": pending.source_url, "url": None}
    if pending.reason_code:
        image["reason"] = {"code": pending.reason_code, "message": pending.reason_message}
    return image


def _ready_image(version: AvatarVersion, base: str) -> dict[str, Any]:
    described = version.describe(base)
    return {
        "id": version.version,
        "status": "ready",
        "url": described["urls"][str(max(version.sizes))],
        "urls": described["urls"],
        "width": version.width,
        "height": version.height,
        "contentType": described["content_type"],
        "updatedAt": described["updated_at"],
    }


def openapi_paths() -> oa.Doc:
    tag = "Profile-image resource"
    user = oa.path_param("userId", "The caller's own user id")
    refused = {**oa.AUTH_ERRORS, "403": oa.error("Another user's profile image", "CodedError")}
    form = {"type": "object", "required": ["file"], "properties": {"file": oa.BINARY["schema"]}}
    url = {"type": "object", "required": ["url"], "properties": {"url": {"type": "string", "format": "uri"}}}
    not_found = oa.error("No profile image", "CodedError")
    return {
        "/v1/users/{userId}/profile/profile-image": {
            "get": oa.operation(
                "The profile image, or the placeholder of a download (poll until status changes)",
                tag,
                {"200": oa.json_response(oa.ref("ProfileImage")), **refused, "404": not_found},
                params=[user],
            ),
            "post": oa.operation(
                "Set the profile image: multipart `file` (at once) or JSON `url` (fetched in the background)",
                tag,
                {
                    "200": oa.json_response(oa.ref("ProfileImage"), "Multipart: the image is set"),
                    "202": oa.json_response(oa.ref("ProfileImage"), "URL: a placeholder with status downloading"),
                    "400": oa.error("validation-failure, with fieldErrors", "ValidationFailure"),
                    **refused,
                    "503": oa.error("too-many-fetches: the server runs its maximum of downloads", "CodedError"),
                },
                body={"multipart/form-data": {"schema": form}, "application/json": {"schema": url}},
                params=[user],
            ),
            "delete": oa.operation(
                "Remove the profile image",
                tag,
                {"204": {"description": "Removed"}, **refused, "404": not_found},
                params=[user],
            ),
        }
    }
