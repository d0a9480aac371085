"""Serving avatars: the image by user (short cache + ETag), by version (immutable), and `/me/avatar`.

Always on, whichever upload protocols are switched on. Errors answer
`{"error": message, "code": machine_code}`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from avatars import RenditionFile

from .. import gravatar
from .. import openapi as oa
from ..auth import Principal
from ..endpoint import Endpoints, render_json
from ..errors import BadRequest, NotFound
from ..links import base_url
from ..services import Services
from ..settings import Settings

UNVERSIONED_CACHE = "public, max-age=60"
VERSIONED_CACHE = "public, max-age=31536000, immutable"
_EXTENSIONS = {"webp": "image/webp", "jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png"}
_api = Endpoints(render_json)


def _no_avatar(message: str = "this user has no avatar") -> NotFound:
    return NotFound(message, code="avatar-not-found")


def _serve(request: Request, rendition: RenditionFile, cache_control: str) -> Response:
    headers = {
        "ETag": rendition.etag,
        "Cache-Control": cache_control,
        "X-Content-Type-Options": "nosniff",
        "Vary": "Accept",
        "Content-Security-Policy": "default-src 'none'",
    }
    if _etag_matches(request.headers.get("if-none-match", ""), rendition.etag):
        return Response(status_code=304, headers=headers)
    return FileResponse(rendition.path, media_type=rendition.media_type, headers=headers)


def _etag_matches(header: str, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    # If-None-Match uses the weak comparison (RFC 9110 13.1.2).
    candidates = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return etag.removeprefix("W/") in candidates


async def avatar(request: Request, services: Services) -> Response:
    size: int | None = None
    if "size" in request.query_params:
        value = request.query_params["size"]
        if not (value.isascii() and value.isdigit()) or not 0 < len(value) <= 5 or int(value) == 0:
            raise BadRequest("size must be a positive integer", code="invalid-size")
        size = int(value)
    user_id = request.path_params["user_id"]
    rendition = await services.avatars.rendition(user_id, size, request.headers.get("accept"))
    if rendition is None:
        return await _gravatar(services, user_id, size)
    return _serve(request, rendition, UNVERSIONED_CACHE)


async def _gravatar(services: Services, user_id: str, size: int | None) -> Response:
    """A user without a stored image who chose Gravatar is sent there."""
    chosen = await services.gravatar.chosen(user_id)
    if chosen is None:
        raise _no_avatar()
    # Not cached long: the choice ends as soon as the user stores an image.
    return RedirectResponse(gravatar.sized(chosen, size), status_code=302, headers={"Cache-Control": UNVERSIONED_CACHE})


async def versioned_avatar(request: Request, services: Services) -> Response:
    stem, _, extension = request.path_params["file_name"].partition(".")
    media_type = _EXTENSIONS.get(extension.lower())
    if not (stem.isascii() and stem.isdigit()) or len(stem) > 5 or media_type is None:
        raise _no_avatar("no such avatar file")
    rendition = await services.avatars.rendition(
        request.path_params["user_id"], int(stem), media_type, version=request.path_params["version"]
    )
    if rendition is None or rendition.size != int(stem) or rendition.media_type != media_type:
        raise _no_avatar("no such avatar file")
    return _serve(request, rendition, VERSIONED_CACHE)


async def my_avatar(request: Request, services: Services, principal: Principal) -> Response:
    current = await services.avatars.current(principal.user_id)
    if current is None:
        return await _gravatar(services, principal.user_id, None)
    return JSONResponse(current.describe(base_url(request, services.settings)))


async def delete_my_avatar(request: Request, services: Services, principal: Principal) -> Response:
    removed = await services.avatars.remove(principal.user_id)
    # Deleting the avatar also ends a Gravatar choice: the user wants none.
    if await services.gravatar.clear(principal.user_id):
        removed = True
    if not removed:
        raise _no_avatar()
    return Response(status_code=204)


def routes(settings: Settings) -> list[BaseRoute]:
    return [
        Route("/avatars/{user_id}", _api.public(avatar), methods=["GET", "HEAD"]),
        Route("/avatars/{user_id}/{version}/{file_name}", _api.public(versioned_avatar), methods=["GET", "HEAD"]),
        Route("/me/avatar", _api.authenticated(my_avatar), methods=["GET"]),
        Route("/me/avatar", _api.authenticated(delete_my_avatar), methods=["DELETE"]),
    ]


_IMAGE = {
    "description": "The image (WebP, or JPEG/PNG for clients that do not accept WebP)",
    "content": {"image/webp": {}, "image/jpeg": {}, "image/png": {}},
}
_CHOSE_GRAVATAR = {
    "description": "The user chose Gravatar (PUT /user/setting/avatar with an empty body): redirect to it",
    "headers": oa.header_schemas("Location"),
}


def openapi_paths() -> oa.Doc:
    return {**_by_user_paths(), **_my_avatar_paths()}


def _by_user_paths() -> oa.Doc:
    user, image, chose_gravatar = oa.path_param("user_id", "The user's id"), _IMAGE, _CHOSE_GRAVATAR
    size = {
        "name": "size",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 99999},
    }
    return {
        "/avatars/{user_id}": {
            "get": oa.operation(
                "A user's current avatar (short cache, ETag)",
                "Avatars",
                {
                    "200": image,
                    "302": chose_gravatar,
                    "304": {"description": "Not modified"},
                    "400": oa.error("Invalid size"),
                    "404": oa.error("No avatar"),
                },
                auth=False,
                params=[user, size],
            )
        },
        "/avatars/{user_id}/{version}/{file_name}": {
            "get": oa.operation(
                "One version's rendition, e.g. 256.webp (immutable)",
                "Avatars",
                {"200": image, "304": {"description": "Not modified"}, "404": oa.error("No such file")},
                auth=False,
                params=[
                    user,
                    oa.path_param("version", "Version id"),
                    oa.path_param("file_name", "<size>.<webp|jpg|png>"),
                ],
            )
        },
    }


def _my_avatar_paths() -> oa.Doc:
    return {
        "/me/avatar": {
            "get": oa.operation(
                "The caller's avatar description",
                "Avatars",
                {
                    "200": oa.json_response(oa.ref("Avatar")),
                    "302": _CHOSE_GRAVATAR,
                    **oa.AUTH_ERRORS,
                    "404": oa.error("No avatar"),
                },
            ),
            "delete": oa.operation(
                "Remove the caller's avatar (and any Gravatar choice)",
                "Avatars",
                {"204": {"description": "Removed"}, **oa.AUTH_ERRORS, "404": oa.error("No avatar")},
            ),
        },
    }
