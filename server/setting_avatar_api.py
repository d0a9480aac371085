"""Seed 004: `PUT /user/setting/avatar` with the image as an `application/octet-stream` body.

A non-empty body becomes the avatar; an empty one switches the user to Gravatar (the avatar
endpoints then redirect to the Gravatar URL of the token's `email` claim). Answers
`{"code": 0, "msg": ""}`. A failure answers a non-zero `code` (the HTTP status), `msg`, and a
`correlation_id` that is also written to the server's log line for that request; `error`, the
internal detail, only when `server.debug` is on.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import aiofiles
import aiofiles.os
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from . import bodies, gravatar
from .auth import Principal
from .errors import BadRequest, problem_for

if TYPE_CHECKING:
    from .app import Services

PROTOCOL = "setting_avatar_api"
log = logging.getLogger(__name__)


def routes() -> list[BaseRoute]:
    return [Route("/user/setting/avatar", update, methods=["PUT"])]


async def update(request: Request) -> Response:
    services: Services = request.app.state.services
    path = services.work_root / f"setting-{secrets.token_hex(12)}"
    try:
        principal = services.auth.authenticate(request)
        if await _receive(request, services, path) == 0:
            await _choose_gravatar(services, principal)
        else:
            await services.set_avatar(principal.user_id, path)
    except Exception as exc:  # noqa: BLE001 - every failure gets this API's shape and an id
        return _failure(request, services, exc)
    finally:
        try:
            await aiofiles.os.remove(path)
        except FileNotFoundError:
            pass
    return JSONResponse({"code": 0, "msg": ""})


async def _receive(request: Request, services: Services, path: Path) -> int:
    """Stream the body into `path`; the number of bytes received."""
    limits = services.settings.limits
    received = 0
    async with aiofiles.open(path, "wb") as out:
        async for block in bodies.stream(request, limits.max_image_bytes, limits.body_timeout_seconds):
            await out.write(block)
            received += len(block)
    return received


async def _choose_gravatar(services: Services, principal: Principal) -> None:
    if not principal.email:
        raise BadRequest("Gravatar needs an email address, and the token carries none", "no-email")
    await gravatar.choose(services.redis, services.settings.redis.key_prefix, principal.user_id, principal.email)
    await services.avatars.remove(principal.user_id)


def _failure(request: Request, services: Services, exc: Exception) -> Response:
    correlation_id = str(uuid.uuid4())
    problem = problem_for(exc, services.settings.redis.retry_after_seconds)
    where = f"{request.method} {request.url.path}"
    if problem is None:
        log.error("%s failed: internal error correlation_id=%s", where, correlation_id, exc_info=exc)
        status, message, detail, headers = 500, "internal server error", repr(exc), {}
    else:
        log.warning(
            "%s failed: status=%d code=%s correlation_id=%s", where, problem.status, problem.code, correlation_id
        )
        status, message, detail, headers = problem.status, problem.message, problem.code, problem.headers
    body: dict[str, object] = {"code": status, "msg": message, "correlation_id": correlation_id}
    if services.settings.server.debug:
        body["error"] = detail
    return JSONResponse(body, status_code=status, headers=headers)
