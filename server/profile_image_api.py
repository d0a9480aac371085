"""Seed 003: `GET`, `POST` and `DELETE /v1/users/{userId}/profile/profile-image`.

`POST` with a multipart `file` sets the image at once. `POST` with JSON `{"url": ...}` answers
202 with a placeholder whose `status` is `downloading`; the image is fetched in the background
(see `server.fetch`) and `status` becomes `ready`, or `failed` with a `reason`. The fetch's
state lives in Redis, so any server process answers the client's polling `GET`.
Validation errors answer 400 `{"code": "validation-failure", "message", "fieldErrors": [...]}`;
other errors `{"code", "message"}`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

import aiofiles.os
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from avatars import AvatarVersion, ImageRejected, ImageTooLarge

from . import bodies, fetch, multipart
from .auth import Principal
from .bodies import BodyTooLarge
from .errors import BadRequest, problem_for
from .links import base_url

if TYPE_CHECKING:
    from .app import Services

PROTOCOL = "profile_image_api"
FILE_FIELD = "file"
_MAX_JSON = 16 * 1024
_FAILED_TTL = 24 * 3600
log = logging.getLogger(__name__)

# Settle a fetch only if it is still the user's latest: a newer POST or a DELETE supersedes it.
_SETTLE = """
if redis.call('HGET', KEYS[1], 'id') ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) return 1 end
redis.call('HSET', KEYS[1], 'status', 'failed', 'reasonCode', ARGV[2], 'reasonMessage', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""


class ValidationFailure(Exception):
    def __init__(self, message: str, field: str | None = None, code: str = ""):
        super().__init__(message)
        self.message = message
        self.field_errors = [{"field": field, "code": code}] if field else []


def routes() -> list[BaseRoute]:
    path = "/v1/users/{userId}/profile/profile-image"
    return [
        Route(path, show, methods=["GET"]),
        Route(path, replace, methods=["POST"]),
        Route(path, remove, methods=["DELETE"]),
    ]


def _key(services: Services, user_id: str) -> str:
    return f"{services.settings.redis.key_prefix}:profile-image-fetch:{user_id}"


def _owner(request: Request, services: Services) -> Principal:
    principal = services.auth.authenticate(request)
    if request.path_params["userId"] != principal.user_id:
        raise BadRequest("a profile image can only be managed by its own user", "forbidden", 403)
    return principal


def _error(exc: Exception, services: Services) -> Response:
    if isinstance(exc, BodyTooLarge):
        exc = ValidationFailure(exc.message, FILE_FIELD, "file-too-large")
    elif isinstance(exc, ImageRejected):
        code = "file-too-large" if isinstance(exc, ImageTooLarge) else "invalid-file-format"
        exc = ValidationFailure(exc.message, FILE_FIELD, code)
    if isinstance(exc, ValidationFailure):
        return JSONResponse(
            {"code": "validation-failure", "message": exc.message, "fieldErrors": exc.field_errors}, status_code=400
        )
    problem = problem_for(exc, services.settings.redis.retry_after_seconds)
    if problem is None:
        raise exc
    return JSONResponse({"code": problem.code, "message": problem.message}, problem.status, headers=problem.headers)


async def show(request: Request) -> Response:
    services: Services = request.app.state.services
    try:
        principal = _owner(request, services)
        state = await services.redis.hgetall(_key(services, principal.user_id))
        if state:
            return JSONResponse(_pending_image(state))
        current = await services.avatars.current(principal.user_id)
        if current is None:
            raise BadRequest("this user has no profile image", "not-found", 404)
    except Exception as exc:  # noqa: BLE001 - rendered, or re-raised as a bug, by _error
        return _error(exc, services)
    return JSONResponse(_ready_image(current, base_url(request, services.settings)))


async def replace(request: Request) -> Response:
    services: Services = request.app.state.services
    try:
        principal = _owner(request, services)
        if multipart.is_multipart(request):
            version = await _from_form(request, services, principal.user_id)
            return JSONResponse(_ready_image(version, base_url(request, services.settings)))
        state = await _start_fetch(request, services, principal.user_id)
    except Exception as exc:  # noqa: BLE001
        return _error(exc, services)
    return JSONResponse(_pending_image(state), status_code=202)


async def remove(request: Request) -> Response:
    services: Services = request.app.state.services
    try:
        principal = _owner(request, services)
        fetching = await services.redis.delete(_key(services, principal.user_id))
        removed = await services.avatars.remove(principal.user_id)
        if not (fetching or removed):
            raise BadRequest("this user has no profile image", "not-found", 404)
    except Exception as exc:  # noqa: BLE001
        return _error(exc, services)
    return Response(status_code=204)


async def _from_form(request: Request, services: Services, user_id: str) -> AvatarVersion:
    limits = services.settings.limits
    form = await multipart.receive(
        request, FILE_FIELD, services.work_root, limits.max_image_bytes, limits.body_timeout_seconds
    )
    try:
        if not form.received:
            raise ValidationFailure("the form has no 'file' field", FILE_FIELD, "field-missing")
        if form.size == 0:
            raise ValidationFailure("the file is empty", FILE_FIELD, "invalid-file-format")
        # An image sent now supersedes a download still running.
        await services.redis.delete(_key(services, user_id))
        return await services.set_avatar(user_id, form.path)
    finally:
        await form.discard()


async def _start_fetch(request: Request, services: Services, user_id: str) -> dict[bytes, bytes]:
    raw = await bodies.read(request, _MAX_JSON, services.settings.limits.body_timeout_seconds)
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        raise ValidationFailure("send multipart/form-data with a 'file', or a JSON object with a 'url'") from None
    url = document.get("url") if isinstance(document, dict) else None
    if url is None or url == "":
        raise ValidationFailure("the 'url' of the image is missing", "url", "field-missing")
    if not isinstance(url, str):
        raise ValidationFailure("'url' must be a string", "url", "invalid-url")
    try:
        fetch.check_url(url)
    except fetch.InvalidUrl as exc:
        raise ValidationFailure(exc.message, "url", "invalid-url") from None
    fetch_id = secrets.token_hex(12)
    state = {
        b"id": fetch_id.encode(),
        b"status": b"downloading",
        b"sourceUrl": url.encode(),
        b"startedAt": str(time.time()).encode(),
    }
    key = _key(services, user_id)
    # Expires on its own if the process doing the fetch dies: the client is not told "downloading" forever.
    await services.redis.hset(key, mapping=state)
    await services.redis.expire(key, int(services.settings.fetch.timeout_seconds * 2) + 60)
    services.spawn(_fetch(services, user_id, url, fetch_id), name=f"profile-image-fetch-{fetch_id}")
    return state


async def _fetch(services: Services, user_id: str, url: str, fetch_id: str) -> None:
    """The background half of `POST {"url": ...}`: download, process, swap, and record the outcome."""
    path = services.work_root / f"fetch-{fetch_id}"
    reason = ("", "")
    try:
        await fetch.download(url, path, services.settings.limits.max_image_bytes, services.settings.fetch)
        if await services.redis.hget(_key(services, user_id), "id") == fetch_id.encode():
            await services.set_avatar(user_id, path)
    except fetch.FetchFailed as exc:
        reason = (exc.code, exc.message)
    except ImageRejected as exc:
        reason = ("file-too-large" if isinstance(exc, ImageTooLarge) else "invalid-file-format", exc.message)
    except asyncio.CancelledError:
        reason = ("interrupted", "the server stopped before the image was downloaded")
        raise
    except Exception:
        log.exception("fetching a profile image failed")
        reason = ("internal-error", "the image could not be stored")
    finally:
        await asyncio.shield(_settle(services, user_id, fetch_id, reason))
        try:
            await aiofiles.os.remove(path)
        except FileNotFoundError:
            pass


async def _settle(services: Services, user_id: str, fetch_id: str, reason: tuple[str, str]) -> None:
    settle = services.redis.register_script(_SETTLE)
    try:
        await settle(keys=[_key(services, user_id)], args=[fetch_id, reason[0], reason[1], _FAILED_TTL])
    except Exception:
        log.warning("could not record the outcome of a profile-image fetch", exc_info=True)


def _pending_image(state: dict[bytes, bytes]) -> dict[str, Any]:
    image: dict[str, Any] = {
        "id": state[b"id"].decode(),
        "status": state[b"status"].decode(),
        "sourceUrl": state.get(b"sourceUrl", b"").decode(),
        "url": None,
    }
    if b"reasonCode" in state:
        image["reason"] = {"code": state[b"reasonCode"].decode(), "message": state[b"reasonMessage"].decode()}
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
