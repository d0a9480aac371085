"""The avatar-setting API: `PUT /user/setting/avatar` with the image as an
`application/octet-stream` body.

A non-empty body becomes the avatar; an empty one switches the user to Gravatar (the avatar
endpoints then redirect to the Gravatar URL of the token's `email` claim). Answers
`{"code": 0, "msg": ""}`. A failure, a bug included, answers a non-zero `code` (the HTTP
status), `msg`, and a `correlation_id` that is also written to the server's log line for that
request; `error`, the internal detail, only when `server.debug` is on.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import uuid
from pathlib import Path

import aiofiles
import aiofiles.os
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .. import bodies
from .. import openapi as oa
from ..auth import Principal
from ..endpoint import Endpoints
from ..errors import INTERNAL_ERROR, BadRequest, Problem
from ..services import Services
from ..settings import Settings

log = logging.getLogger(__name__)


async def _render(request: Request, services: Services, problem: Problem, exc: Exception) -> Response:
    correlation_id = str(uuid.uuid4())
    where = f"{request.method} {request.url.path}"
    if problem is INTERNAL_ERROR:
        log.error("%s failed: internal error correlation_id=%s", where, correlation_id, exc_info=exc)
        detail = repr(exc)
    else:
        log.warning(
            "%s failed: status=%d code=%s correlation_id=%s", where, problem.status, problem.code, correlation_id
        )
        detail = problem.code
    body: dict[str, object] = {"code": problem.status, "msg": problem.message, "correlation_id": correlation_id}
    if services.settings.server.debug:
        body["error"] = detail
    return JSONResponse(body, status_code=problem.status, headers=problem.headers)


# Every failure gets this API's shape and an id, a bug too.
_api = Endpoints(_render, renders_bugs=True)


async def update(request: Request, services: Services, principal: Principal) -> Response:
    path = services.work_root / f"setting-{secrets.token_hex(12)}"
    try:
        if await _receive(request, services, path) == 0:
            await _choose_gravatar(services, principal)
        else:
            await services.avatar_setter.set_avatar(principal.user_id, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            await aiofiles.os.remove(path)
    return JSONResponse({"code": 0, "msg": ""})


def routes(settings: Settings) -> list[BaseRoute]:
    return [Route("/user/setting/avatar", _api.authenticated(update), methods=["PUT"])]


async def _receive(request: Request, services: Services, path: Path) -> int:
    """Stream the body into `path`; the number of bytes received."""
    received = 0
    async with aiofiles.open(path, "wb") as out:
        async for block in bodies.stream(request, services.settings.limits.max_image_bytes, services.body_pace):
            await out.write(block)
            received += len(block)
    return received


async def _choose_gravatar(services: Services, principal: Principal) -> None:
    if not principal.email:
        raise BadRequest("Gravatar needs an email address, and the token carries none", code="no-email")
    await services.gravatar.choose(principal.user_id, principal.email)
    await services.avatars.remove(principal.user_id)


def openapi_paths() -> oa.Doc:
    failure = oa.json_response(oa.ref("SettingResponse"), "Failure: non-zero code, msg, correlation_id")
    return {
        "/user/setting/avatar": {
            "put": oa.operation(
                "Set the avatar from the body; an empty body switches to Gravatar",
                "Avatar setting",
                {
                    "200": oa.json_response(oa.ref("SettingResponse"), 'Success: {"code": 0, "msg": ""}'),
                    "400": failure,
                    "401": failure,
                    "413": failure,
                    "415": failure,
                    "422": failure,
                },
                body={"application/octet-stream": oa.BINARY},
            )
        }
    }
