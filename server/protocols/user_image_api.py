"""The user-image API: `PATCH /users/image/upload` with a multipart `file` and a Bearer token.

Answers 200 `{"data": {id, first_name, last_name, email, phone_number, profile_image}}`: the user
fields come from the token's claims where it has them (null otherwise), `profile_image` is the new
image's URL. The previous image is deleted by the store's swap. Errors answer
`{"error": message, "code": machine_code}`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .. import multipart
from .. import openapi as oa
from ..auth import Principal
from ..endpoint import Endpoints, render_json
from ..errors import BadRequest
from ..links import base_url
from ..services import Services
from ..settings import Settings

FILE_FIELD = "file"
# Each answer field, and the token claims that may hold it (OpenID Connect names first).
_CLAIMS = {
    "first_name": ("given_name", "first_name"),
    "last_name": ("family_name", "last_name"),
    "email": ("email",),
    "phone_number": ("phone_number", "phone"),
}
_api = Endpoints(render_json)


async def upload(request: Request, services: Services, principal: Principal) -> Response:
    limit = services.settings.limits.max_image_bytes
    form = await multipart.receive(request, FILE_FIELD, services.work_root, limit, services.body_pace)
    try:
        if not form.received:
            raise BadRequest("the form must have a 'file' field holding the image", code="missing-file")
        version = await services.avatar_setter.set_avatar(principal.user_id, form.path)
    finally:
        await form.discard()
    described = version.describe(base_url(request, services.settings))
    return JSONResponse({"data": _user(principal, described["urls"][str(max(version.sizes))])})


def routes(settings: Settings) -> list[BaseRoute]:
    return [Route("/users/image/upload", _api.authenticated(upload), methods=["PATCH"])]


def openapi_paths() -> oa.Doc:
    form = {
        "multipart/form-data": {
            "schema": {"type": "object", "required": ["file"], "properties": {"file": oa.BINARY["schema"]}}
        }
    }
    return {
        "/users/image/upload": {
            "patch": oa.operation(
                "Upload or replace the user's image (multipart field `file`)",
                "User image",
                {
                    "200": oa.json_response(oa.ref("UserData"), "The user, with the new image's URL"),
                    "400": oa.error("No `file` field, or not multipart"),
                    **oa.AUTH_ERRORS,
                    "413": oa.error("Too large"),
                    "415": oa.error("Not an allowed image type"),
                    "422": oa.error("The image could not be decoded"),
                },
                body=form,
            )
        }
    }


def _user(principal: Principal, image_url: str) -> dict[str, Any]:
    user: dict[str, Any] = {"id": principal.user_id}
    for name, claims in _CLAIMS.items():
        user[name] = next((principal.claims[c] for c in claims if isinstance(principal.claims.get(c), str)), None)
    user["profile_image"] = image_url
    return user
