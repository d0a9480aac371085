"""Serving avatars: the image by user (short cache + ETag), by version (immutable), and `/me/avatar`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from . import gravatar
from .errors import json_error
from .links import base_url

if TYPE_CHECKING:
    from avatars import RenditionFile

    from .app import Services

UNVERSIONED_CACHE = "public, max-age=60"
VERSIONED_CACHE = "public, max-age=31536000, immutable"
_EXTENSIONS = {"webp": "image/webp", "jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png"}


def routes() -> list[BaseRoute]:
    return [
        Route("/avatars/{user_id}", avatar, methods=["GET", "HEAD"]),
        Route("/avatars/{user_id}/{version}/{file_name}", versioned_avatar, methods=["GET", "HEAD"]),
        Route("/me/avatar", my_avatar, methods=["GET"]),
        Route("/me/avatar", delete_my_avatar, methods=["DELETE"]),
    ]


def _not_found(message: str = "this user has no avatar") -> Response:
    return JSONResponse({"error": message, "code": "avatar-not-found"}, status_code=404)


def _bad_request(message: str, code: str) -> Response:
    return JSONResponse({"error": message, "code": code}, status_code=400)


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


async def avatar(request: Request) -> Response:
    services: Services = request.app.state.services
    size: int | None = None
    if "size" in request.query_params:
        value = request.query_params["size"]
        if not (value.isascii() and value.isdigit()) or not 0 < len(value) <= 5 or int(value) == 0:
            return _bad_request("size must be a positive integer", "invalid-size")
        size = int(value)
    rendition = await services.avatars.rendition(
        request.path_params["user_id"],
        size,
        request.headers.get("accept"),
    )
    if rendition is None:
        return await _gravatar_or_not_found(services, request.path_params["user_id"], size)
    return _serve(request, rendition, UNVERSIONED_CACHE)


async def _gravatar_or_not_found(services: Services, user_id: str, size: int | None) -> Response:
    """A user without a stored image who chose Gravatar (seed 004) is sent there."""
    chosen = await gravatar.chosen(services.redis, services.settings.redis.key_prefix, user_id)
    if chosen is None:
        return _not_found()
    # Not cached long: the choice ends as soon as the user stores an image.
    return RedirectResponse(gravatar.sized(chosen, size), status_code=302, headers={"Cache-Control": UNVERSIONED_CACHE})


async def versioned_avatar(request: Request) -> Response:
    services: Services = request.app.state.services
    stem, _, extension = request.path_params["file_name"].partition(".")
    media_type = _EXTENSIONS.get(extension.lower())
    if not stem.isdigit() or len(stem) > 5 or media_type is None:
        return _not_found("no such avatar file")
    rendition = await services.avatars.rendition(
        request.path_params["user_id"],
        int(stem),
        media_type,
        version=request.path_params["version"],
    )
    if rendition is None or rendition.size != int(stem) or rendition.media_type != media_type:
        return _not_found("no such avatar file")
    return _serve(request, rendition, VERSIONED_CACHE)


async def my_avatar(request: Request) -> Response:
    services: Services = request.app.state.services
    try:
        principal = services.auth.authenticate(request)
    except Exception as exc:  # noqa: BLE001
        return json_error(exc)
    current = await services.avatars.current(principal.user_id)
    if current is None:
        return await _gravatar_or_not_found(services, principal.user_id, None)
    return JSONResponse(current.describe(base_url(request, services.settings)))


async def delete_my_avatar(request: Request) -> Response:
    services: Services = request.app.state.services
    try:
        principal = services.auth.authenticate(request)
    except Exception as exc:  # noqa: BLE001
        return json_error(exc)
    removed = await services.avatars.remove(principal.user_id)
    # Deleting the avatar also ends a Gravatar choice (seed 004): the user wants none.
    prefix = services.settings.redis.key_prefix
    if await gravatar.chosen(services.redis, prefix, principal.user_id) is not None:
        await gravatar.clear(services.redis, prefix, principal.user_id)
        removed = True
    if not removed:
        return _not_found()
    return Response(status_code=204)
