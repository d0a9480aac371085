"""Seed 001: `POST /api/{version}/user/profile-picture` with a JSON data URI.

The body is `{name, height, width, mime, dataUri}`. The picture is checked against what the
client declared: the data URI's media type must agree with `mime`, the decoded image's format
with both, and its real (upright) size with `width` and `height` when they are given.
Answers 201 with the stored picture; errors answer `{"error": message, "code": machine_code}`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from avatars import ProcessedAvatar

from . import bodies
from .chunk_api import ALLOWED_TYPES
from .errors import BadRequest, json_error
from .links import base_url

if TYPE_CHECKING:
    from .app import Services

PROTOCOL = "picture_api"
_MAX_NAME = 255
# Media types that name the same format; a client may say image/jpg and mean image/jpeg.
_SAME_AS = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/heif": "image/heic"}
_FORMAT_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "HEIF": "image/heic",
    "AVIF": "image/avif",
}


def routes() -> list[BaseRoute]:
    return [Route("/api/{version}/user/profile-picture", upload, methods=["POST"])]


async def upload(request: Request) -> Response:
    services: Services = request.app.state.services
    try:
        principal = services.auth.authenticate(request)
        document = await bodies.read_json_object(
            request, services.settings.limits.max_image_bytes, services.settings.limits.body_timeout_seconds
        )
        name, mime, width, height = _declared(document)
        data = _data_uri(document.get("dataUri"), mime)
        if len(data) > services.settings.limits.max_image_bytes:
            raise BadRequest(
                f"images are limited to {services.settings.limits.max_image_bytes} bytes", "upload-too-large", 413
            )
        version = await services.set_avatar_from_bytes(principal.user_id, data, _matches(mime, width, height))
    except Exception as exc:  # noqa: BLE001 - rendered, or re-raised as a bug, by json_error
        return json_error(exc, services.settings.redis.retry_after_seconds)
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


def _declared(document: dict[str, Any]) -> tuple[str, str, int | None, int | None]:
    name = document.get("name", "profile_picture")
    if not isinstance(name, str) or not 0 < len(name) <= _MAX_NAME:
        raise BadRequest(f"name must be a string of 1 to {_MAX_NAME} characters", "invalid-name")
    mime = document.get("mime")
    if mime is None:
        raise BadRequest("mime is required", "missing-field")
    if not isinstance(mime, str) or _normal(mime) not in ALLOWED_TYPES:
        raise BadRequest(f"mime {mime!r} is not an allowed image type", "unsupported-mime", 415)
    return name, _normal(mime), _dimension(document, "width"), _dimension(document, "height")


def _dimension(document: dict[str, Any], name: str) -> int | None:
    value = document.get(name)
    if value is None:
        return None
    # bool is an int in Python; 200.0 is how some JSON encoders write 200.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if type(value) is not int or not 0 < value <= 1_000_000:
        raise BadRequest(f"{name} must be a positive integer", "invalid-dimension")
    return value


def _normal(media_type: str) -> str:
    plain = media_type.split(";")[0].strip().lower()
    return _SAME_AS.get(plain, plain)


def _data_uri(value: Any, mime: str) -> bytes:
    """The bytes of a `data:<type>;base64,<data>` URI whose type agrees with `mime`."""
    if value is None:
        raise BadRequest("dataUri is required", "missing-field")
    if not isinstance(value, str) or not value[:5].lower() == "data:" or "," not in value:
        raise BadRequest("dataUri must be a data: URI (data:image/jpeg;base64,...)", "invalid-data-uri")
    header, _, payload = value[5:].partition(",")
    media_type, *params = header.split(";")
    if "base64" not in {p.strip().lower() for p in params}:
        raise BadRequest("dataUri must be base64-encoded (data:<type>;base64,...)", "invalid-data-uri")
    if _normal(media_type) != mime:
        raise BadRequest(f"dataUri says {media_type.strip() or 'nothing'!r} but mime says {mime!r}", "mime-mismatch")
    compact = "".join(payload.split())
    compact += "=" * (-len(compact) % 4)  # some encoders drop the padding
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("dataUri does not hold valid base64", "invalid-base64") from None
    if not data:
        raise BadRequest("dataUri holds no image", "empty-file")
    return data


def _matches(mime: str, width: int | None, height: int | None) -> Callable[[ProcessedAvatar], None]:
    """A check run on the decoded image: its format and size must be the declared ones."""

    def check(processed: ProcessedAvatar) -> None:
        actual = _FORMAT_TYPES.get(processed.source_format)
        if actual != mime:
            raise BadRequest(f"the image is {actual or processed.source_format}, not {mime}", "content-mismatch")
        if (width is not None and width != processed.width) or (height is not None and height != processed.height):
            raise BadRequest(
                f"the image is {processed.width}x{processed.height} pixels, "
                f"not the declared {width or processed.width}x{height or processed.height}",
                "dimension-mismatch",
            )

    return check
