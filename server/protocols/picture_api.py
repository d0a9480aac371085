"""The picture API: `POST /api/{version}/user/profile-picture` with a JSON data URI.

The body is `{name, height, width, mime, dataUri}`. The picture is checked against what the
client declared: the data URI's media type must agree with `mime`, the decoded image's format
with both, and its real (upright) size with `width` and `height` when they are given.
Answers 201 with the stored picture; errors answer `{"error": message, "code": machine_code}`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from avatars import ProcessedAvatar

from .. import bodies, file_names, media_types
from .. import openapi as oa
from ..auth import Principal
from ..endpoint import Endpoints, render_json
from ..errors import BadRequest, ContentTooLarge, UnsupportedMediaType
from ..links import base_url
from ..services import Services
from ..settings import Settings

_api = Endpoints(render_json)


async def upload(request: Request, services: Services, principal: Principal) -> Response:
    limit = services.settings.limits.max_image_bytes
    document = await bodies.read_json_object(request, limit, services.body_pace)
    name, mime, width, height = _declared(document)
    data = _data_uri(document.get("dataUri"), mime)
    if len(data) > limit:
        raise ContentTooLarge(f"images are limited to {limit} bytes", code="upload-too-large")
    check = _matches(mime, width, height)
    version = await services.avatar_setter.set_avatar_from_bytes(principal.user_id, data, check)
    described = version.describe(base_url(request, services.settings))
    largest = str(max(version.sizes))
    return JSONResponse(
        {
            "id": version.version,
            "name": name,
            "mime": described["content_type"],
            "width": version.width,
            "height": version.height,
            "url": described["urls"][largest],
            "avatar": described,
        },
        status_code=201,
    )


def routes(settings: Settings) -> list[BaseRoute]:
    return [Route("/api/{version}/user/profile-picture", _api.authenticated(upload), methods=["POST"])]


def openapi_paths() -> oa.Doc:
    return {
        "/api/{version}/user/profile-picture": {
            "post": oa.operation(
                "Upload a profile picture as a data URI",
                "Profile picture",
                {
                    "201": oa.json_response(oa.ref("Picture"), "The stored picture"),
                    "400": oa.error("Invalid body; mime-mismatch, dimension-mismatch or content-mismatch"),
                    **oa.AUTH_ERRORS,
                    "413": oa.error("Too large"),
                    "415": oa.error("Not an allowed image type"),
                    "422": oa.error("The image could not be decoded"),
                },
                body={"application/json": {"schema": oa.ref("PictureRequest")}},
                params=[oa.path_param("version", "API version, e.g. v1")],
            )
        }
    }


def _declared(document: dict[str, Any]) -> tuple[str, str, int | None, int | None]:
    name = document.get("name", "profile_picture")
    if not isinstance(name, str) or not 0 < len(name) <= file_names.MAX_LENGTH:
        raise BadRequest(f"name must be a string of 1 to {file_names.MAX_LENGTH} characters", code="invalid-name")
    mime = document.get("mime")
    if mime is None:
        raise BadRequest("mime is required", code="missing-field")
    if not isinstance(mime, str) or media_types.canonical(mime) not in media_types.IMAGE_TYPES:
        raise UnsupportedMediaType(f"mime {mime!r} is not an allowed image type", code="unsupported-mime")
    return name, media_types.canonical(mime), _dimension(document, "width"), _dimension(document, "height")


def _dimension(document: dict[str, Any], name: str) -> int | None:
    value = document.get(name)
    if value is None:
        return None
    # bool is an int in Python; 200.0 is how some JSON encoders write 200.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if type(value) is not int or not 0 < value <= 1_000_000:
        raise BadRequest(f"{name} must be a positive integer", code="invalid-dimension")
    return value


def _data_uri(value: Any, mime: str) -> bytes:
    """The bytes of a `data:<type>;base64,<data>` URI whose type agrees with `mime`."""
    if value is None:
        raise BadRequest("dataUri is required", code="missing-field")
    if not isinstance(value, str) or not value[:5].lower() == "data:" or "," not in value:
        raise BadRequest("dataUri must be a data: URI (data:image/jpeg;base64,...)", code="invalid-data-uri")
    header, _, payload = value[5:].partition(",")
    media_type, *params = header.split(";")
    if "base64" not in {p.strip().lower() for p in params}:
        raise BadRequest("dataUri must be base64-encoded (data:<type>;base64,...)", code="invalid-data-uri")
    if media_types.canonical(media_type) != mime:
        raise BadRequest(
            f"dataUri says {media_type.strip() or 'nothing'!r} but mime says {mime!r}", code="mime-mismatch"
        )
    compact = "".join(payload.split())
    compact += "=" * (-len(compact) % 4)  # some encoders drop the padding
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("dataUri does not hold valid base64", code="invalid-base64") from None
    if not data:
        raise BadRequest("dataUri holds no image", code="empty-file")
    return data


def _matches(mime: str, width: int | None, height: int | None) -> Callable[[ProcessedAvatar], None]:
    """A check run on the decoded image: its format and size must be the declared ones."""

    def check(processed: ProcessedAvatar) -> None:
        actual = media_types.of_format(processed.source_format)
        if actual != mime:
            raise BadRequest(f"the image is {actual or processed.source_format}, not {mime}", code="content-mismatch")
        if (width is not None and width != processed.width) or (height is not None and height != processed.height):
            raise BadRequest(
                f"the image is {processed.width}x{processed.height} pixels, "
                f"not the declared {width or processed.width}x{height or processed.height}",
                code="dimension-mismatch",
            )

    return check
