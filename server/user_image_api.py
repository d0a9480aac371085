"""Seed 002: `PATCH /users/image/upload` with a multipart `file` and a Bearer token.

Answers 200 `{"data": {id, first_name, last_name, email, phone_number, profile_image}}`: the user
fields come from the token's claims where it has them (null otherwise), `profile_image` is the new
image's URL. The previous image is deleted by the store's swap. Errors answer
`{"error": message, "code": machine_code}`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from . import multipart
from .auth import Principal
from .errors import BadRequest, json_error
from .links import base_url

if TYPE_CHECKING:
    from .app import Services

PROTOCOL = "user_image_api"
FILE_FIELD = "file"
# Each answer field, and the token claims that may hold it (OpenID Connect names first).
_CLAIMS = {
    "first_name": ("given_name", "first_name"),
    "last_name": ("family_name", "last_name"),
    "email": ("email",),
    "phone_number": ("phone_number", "phone"),
}


def routes() -> list[BaseRoute]:
    return [Route("/users/image/upload", upload, methods=["PATCH"])]


async def upload(request: Request) -> Response:
    services: Services = request.app.state.services
    form: multipart.FormUpload | None = None
    try:
        principal = services.auth.authenticate(request)
        form = await multipart.receive(
            request,
            FILE_FIELD,
            services.work_root,
            services.settings.limits.max_image_bytes,
            services.settings.limits.body_timeout_seconds,
        )
        if not form.received:
            raise BadRequest("the form must have a 'file' field holding the image", "missing-file")
        version = await services.set_avatar(principal.user_id, form.path)
    except Exception as exc:  # noqa: BLE001 - rendered, or re-raised as a bug, by json_error
        return json_error(exc, services.settings.redis.retry_after_seconds)
    finally:
        if form is not None:
            await form.discard()
    described = version.describe(base_url(request, services.settings))
    return JSONResponse({"data": _user(principal, described["urls"][str(max(version.sizes))])})


def _user(principal: Principal, image_url: str) -> dict[str, Any]:
    user: dict[str, Any] = {"id": principal.user_id}
    for name, claims in _CLAIMS.items():
        user[name] = next((principal.claims[c] for c in claims if isinstance(principal.claims.get(c), str)), None)
    user["profile_image"] = image_url
    return user
