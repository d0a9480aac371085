"""The OpenAPI 3.1 document of every endpoint, served at `/openapi.json`.

Written by hand, one fragment per protocol switch, so a switched-off API is missing from the
document as it is from the server; `tests/e2e/test_openapi.py` checks it against the routes.
"""

from __future__ import annotations

import copy
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from . import web_page
from .openapi_schemas import SCHEMAS
from .settings import Settings

Doc = dict[str, Any]
BEARER = [{"bearerAuth": []}, {"apiKeyAuth": []}]


def routes() -> list[BaseRoute]:
    return [Route("/openapi.json", openapi_json, methods=["GET"])]


async def openapi_json(request: Request) -> Response:
    return JSONResponse(document(request.app.state.settings))


def _ref(name: str) -> Doc:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Doc, description: str = "") -> Doc:
    return {"description": description or "JSON", "content": {"application/json": {"schema": schema}}}


def _error(description: str, schema: str = "Error") -> Doc:
    return _json(_ref(schema), description)


def _path(name: str, description: str) -> Doc:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}, "description": description}


def _op(
    summary: str,
    tag: str,
    responses: dict[str, Doc],
    *,
    body: Doc | None = None,
    params: list[Doc] | None = None,
    auth: bool = True,
) -> Doc:
    operation: Doc = {"summary": summary, "tags": [tag], "responses": responses, "security": BEARER if auth else []}
    if body is not None:
        operation["requestBody"] = {"required": True, "content": body}
    if params:
        operation["parameters"] = params
    return operation


_AUTH_ERRORS = {"401": _error("Missing, expired or invalid token")}
_UPLOAD_ID = _path("upload_id", "The upload's id, as the server gave it")


def _chunk_api() -> Doc:
    chunk = {"application/json": {"schema": _ref("ChunkRequest")}}
    return {
        "/accounts/profile-image": {
            "post": _op(
                "Upload a profile image whole, or one base64 chunk of it (any order, repeats allowed)",
                "Chunk API",
                {
                    "200": _json(_ref("ChunkUpload"), "Chunk received, or the image became the avatar"),
                    "400": _error("Invalid request"),
                    **_AUTH_ERRORS,
                    "409": _error("Conflicting chunk"),
                    "413": _error("Too large"),
                    "415": _error("Not an allowed image type"),
                    "422": _error("The image could not be decoded"),
                },
                body=chunk,
            )
        },
        "/accounts/profile-image/uploads/{upload_id}": {
            "get": _op(
                "Where a chunked upload stands: received and missing chunks",
                "Chunk API",
                {"200": _json(_ref("ChunkUpload")), **_AUTH_ERRORS, "404": _error("No such upload")},
                params=[_UPLOAD_ID],
            ),
            "delete": _op(
                "Abandon a chunked upload",
                "Chunk API",
                {"204": {"description": "Abandoned"}, **_AUTH_ERRORS, "404": _error("No such upload")},
                params=[_UPLOAD_ID],
            ),
        },
    }


def _tus_headers(*names: str) -> Doc:
    return {name: {"schema": {"type": "string"}} for name in names}


def _files() -> Doc:
    """tus 1.0.0 and the IETF resumable-upload draft share the `/files/` uploads."""
    tag = "tus / IETF resumable uploads"
    headers = [
        {"name": h, "in": "header", "required": False, "schema": {"type": "string"}}
        for h in (
            "Tus-Resumable",
            "Upload-Length",
            "Upload-Defer-Length",
            "Upload-Metadata",
            "Upload-Concat",
            "Upload-Offset",
            "Upload-Checksum",
            "Upload-Complete",
            "Upload-Draft-Interop-Version",
            "X-HTTP-Method-Override",
        )
    ]
    create = _op(
        "Create an upload (tus creation, creation-with-upload, concatenation; or the IETF draft with "
        "Upload-Complete and Upload-Draft-Interop-Version)",
        tag,
        {
            "201": {
                "description": "Created; Location names the upload",
                "headers": _tus_headers("Location", "Tus-Resumable", "Upload-Offset", "Upload-Expires"),
            },
            "200": {"description": "IETF draft: the whole image arrived and became the avatar"},
            "400": _error("Invalid headers"),
            **_AUTH_ERRORS,
            "412": _error("Unsupported Tus-Resumable"),
            "413": _error("Larger than Tus-Max-Size"),
        },
        body={"application/offset+octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        params=headers,
    )
    options = _op(
        "Discover the server's tus version, extensions and limits",
        tag,
        {
            "204": {
                "description": "Capabilities",
                "headers": _tus_headers("Tus-Version", "Tus-Extension", "Tus-Max-Size", "Tus-Checksum-Algorithm"),
            }
        },
        auth=False,
    )
    resource = {
        "get": _op(
            "This server's JSON status of an upload: offset, state, and the avatar once done",
            tag,
            {"200": _json(_ref("StreamUpload")), **_AUTH_ERRORS, "404": _error("No such upload")},
            params=[_UPLOAD_ID],
        ),
        "head": _op(
            "The upload's offset (tus HEAD; IETF offset retrieval)",
            tag,
            {
                "200": {
                    "description": "Offset",
                    "headers": _tus_headers("Upload-Offset", "Upload-Length", "Upload-Expires", "Upload-Complete"),
                },
                "404": {"description": "No such upload"},
                "410": {"description": "Expired"},
            },
            params=[_UPLOAD_ID, *headers],
        ),
        "patch": _op(
            "Append bytes at Upload-Offset; the last byte makes the image the avatar",
            tag,
            {
                "204": {"description": "Appended", "headers": _tus_headers("Upload-Offset", "Upload-Expires")},
                **_AUTH_ERRORS,
                "404": _error("No such upload"),
                "409": _error("Offset mismatch"),
                "410": _error("Expired"),
                "415": _error("Wrong content type"),
                "460": _error("Checksum mismatch"),
            },
            body={
                "application/offset+octet-stream": {"schema": {"type": "string", "format": "binary"}},
                "application/partial-upload": {"schema": {"type": "string", "format": "binary"}},
            },
            params=[_UPLOAD_ID, *headers],
        ),
        "post": _op(
            "Tunnel PATCH, DELETE or HEAD through POST with X-HTTP-Method-Override (tus, for clients "
            "and proxies that cannot send them)",
            tag,
            {"204": {"description": "As the tunnelled method"}, **_AUTH_ERRORS, "404": _error("No such upload")},
            params=[_UPLOAD_ID, *headers],
        ),
        "delete": _op(
            "Cancel an upload (tus termination)",
            tag,
            {"204": {"description": "Cancelled"}, **_AUTH_ERRORS, "404": _error("No such upload")},
            params=[_UPLOAD_ID],
        ),
        "options": _op(
            "Discover capabilities", tag, {"204": {"description": "Capabilities"}}, params=[_UPLOAD_ID], auth=False
        ),
    }
    collection = {"post": create, "options": options}
    return {"/files": copy.deepcopy(collection), "/files/": collection, "/files/{upload_id}": resource}


def _picture_api() -> Doc:
    return {
        "/api/{version}/user/profile-picture": {
            "post": _op(
                "Seed 001: upload a profile picture as a data URI",
                "Seed 001",
                {
                    "201": _json(_ref("Picture"), "The stored picture"),
                    "400": _error("Invalid body; mime-mismatch, dimension-mismatch or content-mismatch"),
                    **_AUTH_ERRORS,
                    "413": _error("Too large"),
                    "415": _error("Not an allowed image type"),
                    "422": _error("The image could not be decoded"),
                },
                body={"application/json": {"schema": _ref("PictureRequest")}},
                params=[_path("version", "API version, e.g. v1")],
            )
        }
    }


def _user_image_api() -> Doc:
    form = {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary"}},
            }
        }
    }
    return {
        "/users/image/upload": {
            "patch": _op(
                "Seed 002: upload or replace the user's image (multipart field `file`)",
                "Seed 002",
                {
                    "200": _json(_ref("UserData"), "The user, with the new image's URL"),
                    "400": _error("No `file` field, or not multipart"),
                    **_AUTH_ERRORS,
                    "413": _error("Too large"),
                    "415": _error("Not an allowed image type"),
                    "422": _error("The image could not be decoded"),
                },
                body=form,
            )
        }
    }


def _profile_image_api() -> Doc:
    tag = "Seed 003"
    user = _path("userId", "The caller's own user id")
    refused = {**_AUTH_ERRORS, "403": _error("Another user's profile image", "CodedError")}
    form = {"type": "object", "required": ["file"], "properties": {"file": {"type": "string", "format": "binary"}}}
    set_body = {
        "multipart/form-data": {"schema": form},
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["url"],
                "properties": {"url": {"type": "string", "format": "uri"}},
            }
        },
    }
    return {
        "/v1/users/{userId}/profile/profile-image": {
            "get": _op(
                "The profile image, or the placeholder of a download (poll until status changes)",
                tag,
                {"200": _json(_ref("ProfileImage")), **refused, "404": _error("No profile image", "CodedError")},
                params=[user],
            ),
            "post": _op(
                "Set the profile image: multipart `file` (at once) or JSON `url` (fetched in the background)",
                tag,
                {
                    "200": _json(_ref("ProfileImage"), "Multipart: the image is set"),
                    "202": _json(_ref("ProfileImage"), "URL: a placeholder with status downloading"),
                    "400": _error("validation-failure, with fieldErrors", "ValidationFailure"),
                    **refused,
                },
                body=set_body,
                params=[user],
            ),
            "delete": _op(
                "Remove the profile image",
                tag,
                {"204": {"description": "Removed"}, **refused, "404": _error("No profile image", "CodedError")},
                params=[user],
            ),
        }
    }


def _setting_avatar_api() -> Doc:
    failure = _json(_ref("SettingResponse"), "Failure: non-zero code, msg, correlation_id")
    return {
        "/user/setting/avatar": {
            "put": _op(
                "Seed 004: set the avatar from the body; an empty body switches to Gravatar",
                "Seed 004",
                {
                    "200": _json(_ref("SettingResponse"), 'Success: {"code": 0, "msg": ""}'),
                    "400": failure,
                    "401": failure,
                    "413": failure,
                    "415": failure,
                    "422": failure,
                },
                body={"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            )
        }
    }


def _always() -> Doc:
    user = _path("user_id", "The user's id")
    image = {
        "description": "The image (WebP, or JPEG/PNG for clients that do not accept WebP)",
        "content": {"image/webp": {}, "image/jpeg": {}, "image/png": {}},
    }
    gravatar = {
        "description": "The user chose Gravatar (seed 004): redirect to it",
        "headers": _tus_headers("Location"),
    }
    return {
        "/healthz": {
            "get": _op(
                "Liveness and Redis reachability",
                "Server",
                {"200": _json({"type": "object"}), "503": _json({"type": "object"})},
                auth=False,
            )
        },
        "/openapi.json": {"get": _op("This document", "Server", {"200": _json({"type": "object"})}, auth=False)},
        "/avatars/{user_id}": {
            "get": _op(
                "A user's current avatar (short cache, ETag)",
                "Avatars",
                {
                    "200": image,
                    "302": gravatar,
                    "304": {"description": "Not modified"},
                    "400": _error("Invalid size"),
                    "404": _error("No avatar"),
                },
                auth=False,
                params=[
                    user,
                    {
                        "name": "size",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 99999},
                    },
                ],
            )
        },
        "/avatars/{user_id}/{version}/{file_name}": {
            "get": _op(
                "One version's rendition, e.g. 256.webp (immutable)",
                "Avatars",
                {"200": image, "304": {"description": "Not modified"}, "404": _error("No such file")},
                auth=False,
                params=[user, _path("version", "Version id"), _path("file_name", "<size>.<webp|jpg|png>")],
            )
        },
        "/me/avatar": {
            "get": _op(
                "The caller's avatar description",
                "Avatars",
                {"200": _json(_ref("Avatar")), "302": gravatar, **_AUTH_ERRORS, "404": _error("No avatar")},
            ),
            "delete": _op(
                "Remove the caller's avatar (and any Gravatar choice)",
                "Avatars",
                {"204": {"description": "Removed"}, **_AUTH_ERRORS, "404": _error("No avatar")},
            ),
        },
    }


# Each protocol switch of config.yaml and the paths it brings.
FRAGMENTS = {
    "chunk_api": _chunk_api,
    "picture_api": _picture_api,
    "user_image_api": _user_image_api,
    "profile_image_api": _profile_image_api,
    "setting_avatar_api": _setting_avatar_api,
}


def document(settings: Settings) -> Doc:
    paths = _always()
    for protocol, fragment in FRAGMENTS.items():
        if settings.protocol_enabled(protocol):
            paths.update(fragment())
    if settings.protocol_enabled("tus") or settings.protocol_enabled("ietf"):
        paths.update(_files())
    if settings.server.web_page:
        paths.update(web_page.openapi_paths())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Avatar upload server",
            "version": "0.1.0",
            "description": "Resumable profile-image uploads: the chunk JSON API, tus 1.0.0, the IETF "
            "resumable-upload draft and the profile-image dialects of seeds 001-004.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "apiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
            },
        },
    }
