"""Serving avatars: the image by user (short cache + ETag), by version (immutable), and `/me/avatar`.

Always on, whichever upload protocols are switched on. Errors answer
`{"error": message, "code": machine_code}`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from avatars import RenditionBody, RenditionFile

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


# A rendition opened here is read from what was opened (a file descriptor, an object's body): a
# swap that removes it (or its whole version) after the open cannot cut the answer short or turn it into 500.
_READ_BLOCK = 64 * 1024
# A size is picked to the nearest configured square, so any positive number is fine; only text
# that is not a number, zero, or more digits than any size could need is refused.
MAX_SIZE_DIGITS = 9


class OpenFileResponse(Response):
    """The bytes of an already opened rendition (a file, or an object streamed from the bucket),
    then it closed; headers only for HEAD."""

    def __init__(self, body: RenditionBody, length: int, media_type: str, headers: dict[str, str]):
        super().__init__(None, 200, {**headers, "Content-Length": str(length)}, media_type)
        self.body_source = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            if scope.get("method", "GET").upper() == "HEAD":
                await send({"type": "http.response.body", "body": b""})
                return
            while True:
                block = await self.body_source.read(_READ_BLOCK)
                if not block:
                    break
                await send({"type": "http.response.body", "body": block, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            self.body_source.close()


async def _opened(
    find: Callable[[], Awaitable[RenditionFile | None]], if_none_match: str
) -> tuple[RenditionFile, RenditionBody | None, int] | None:
    """The rendition `find` names, opened (one served from a URL, or answered 304 because the
    client holds it, is not opened). A swap between finding and opening removes the old
    version's files: ask again, and the pointer names the new version (bounded: a user whose
    avatar is replaced faster than this loop runs gets 404, never 500)."""
    for _ in range(5):
        rendition = await find()
        if rendition is None:
            return None
        if rendition.url or _etag_matches(if_none_match, rendition.etag):
            return rendition, None, 0
        opened = await rendition.open()
        if opened is not None:
            return rendition, *opened
    return None


def _serve(request: Request, found: tuple[RenditionFile, RenditionBody | None, int], cache_control: str) -> Response:
    """The rendition with its ETag and cache headers: its bytes, 304, or a 302 to its URL
    (storage.s3.public_base_url: a CDN or public bucket serves the bytes)."""
    rendition, body, length = found
    headers = {
        "ETag": rendition.etag,
        "Cache-Control": cache_control,
        "X-Content-Type-Options": "nosniff",
        "Vary": "Accept",
        "Content-Security-Policy": "default-src 'none'",
    }
    if _etag_matches(request.headers.get("if-none-match", ""), rendition.etag):
        if body is not None:
            body.close()
        return Response(status_code=304, headers=headers)
    if body is None:
        return RedirectResponse(rendition.url, status_code=302, headers=headers)
    return OpenFileResponse(body, length, rendition.media_type, headers)


def _etag_matches(header: str, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    # If-None-Match uses the weak comparison (RFC 9110 13.1.2).
    candidates = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return etag.removeprefix("W/") in candidates


def _size(request: Request) -> int | None:
    value = request.query_params.get("size")
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()) or int(value) == 0:
        raise BadRequest(f"size must be a positive whole number of pixels, not {value[:20]!r}", code="invalid-size")
    if len(value) > MAX_SIZE_DIGITS:
        raise BadRequest(f"size must have at most {MAX_SIZE_DIGITS} digits", code="invalid-size")
    return int(value)


async def avatar(request: Request, services: Services) -> Response:
    size = _size(request)
    user_id = request.path_params["user_id"]
    accept = request.headers.get("accept")
    found = await _opened(
        lambda: services.avatars.rendition(user_id, size, accept), request.headers.get("if-none-match", "")
    )
    if found is None:
        return await _gravatar(services, user_id, size)
    return _serve(request, found, UNVERSIONED_CACHE)


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
    user_id, version = request.path_params["user_id"], request.path_params["version"]
    found = await _opened(
        lambda: services.avatars.rendition(user_id, int(stem), media_type, version),
        request.headers.get("if-none-match", ""),
    )
    if found is None:
        raise _no_avatar("no such avatar file")
    if found[0].size != int(stem) or found[0].media_type != media_type:
        if found[1] is not None:
            found[1].close()
        raise _no_avatar("no such avatar file")
    return _serve(request, found, VERSIONED_CACHE)


async def my_avatar(request: Request, services: Services, principal: Principal) -> Response:
    current = await services.avatars.current(principal.user_id)
    if current is None:
        return await _gravatar(services, principal.user_id, None)
    return JSONResponse(current.describe(base_url(request, services.settings)))


async def delete_my_avatar(request: Request, services: Services, principal: Principal) -> Response:
    # A URL import still running must not bring the avatar back (see profile_image_api).
    services.pending_fetches.cancel(principal.user_id)
    async with services.pending_fetches.locked(principal.user_id):
        await services.pending_fetches.forget(principal.user_id)
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
        "schema": {"type": "integer", "minimum": 1, "maximum": 10**MAX_SIZE_DIGITS - 1},
        "description": "Any positive size: the nearest configured square is served",
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
