"""The JSON chunk API (seed 000): `POST /accounts/profile-image` with base64 chunks.

A whole image (`is_chunk` false) becomes the avatar in that request. Chunks may arrive in any
order and more than once; the request that brings the last missing one completes the upload.
Errors answer `{"error": message, "code": machine_code}`.
"""

from __future__ import annotations

import base64
import binascii
import datetime
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

import chunks

from . import bodies
from .errors import BadRequest, image_status, json_error
from .links import absolute, base_url

if TYPE_CHECKING:
    from .app import Services

ALLOWED_TYPES = frozenset(
    {
        "image/jpeg",
        "image/jpg",
        "image/pjpeg",
        "image/png",
        "image/webp",
        "image/gif",
        "image/heic",
        "image/heif",
        "image/avif",
    }
)
_MAX_NAME = 255
_MAX_CLIENT_ID = 128


@dataclass(frozen=True)
class ChunkRequest:
    file_name: str
    data: bytes
    content_type: str
    is_chunk: bool
    chunk_index: int
    total_chunks: int
    upload_id: str | None


def routes() -> list[BaseRoute]:
    return [
        Route("/accounts/profile-image", upload, methods=["POST"]),
        Route("/accounts/profile-image/uploads/{upload_id}", status, methods=["GET"]),
        Route("/accounts/profile-image/uploads/{upload_id}", abandon, methods=["DELETE"]),
    ]


def _error(exc: BaseException, services: Services, **extra: Any) -> Response:
    return json_error(exc, services.settings.redis.retry_after_seconds, **extra)


async def upload(request: Request) -> Response:
    services: Services = request.app.state.services
    try:
        principal = services.auth.authenticate(request)
        parsed = await _parse(request, services)
        if not parsed.is_chunk:
            return await _whole_image(services, principal.user_id, parsed, base_url(request, services.settings))
        session = await _session_for(services, principal.user_id, parsed)
        session, duplicate = await services.uploads.put_chunk(session, parsed.chunk_index, parsed.data)
    except Exception as exc:  # noqa: BLE001 - rendered or re-raised by _error
        return _error(exc, services)
    if session.all_received and session.state in (chunks.UploadState.OPEN, chunks.UploadState.ASSEMBLING):
        try:
            session = await services.complete(session)
        except Exception as exc:  # noqa: BLE001
            return _error(exc, services, **_describe(session, base_url(request, services.settings), failed=True))
    body = _describe(session, base_url(request, services.settings))
    body["duplicate"] = duplicate
    body["message"] = "profile image updated" if session.state == chunks.UploadState.DONE else "chunk received"
    if session.state == chunks.UploadState.FAILED:
        body.update(error=session.error_message, code=session.error_code)
        return JSONResponse(body, image_status(session.error_code))
    return JSONResponse(body)


async def status(request: Request) -> Response:
    services: Services = request.app.state.services
    try:
        principal = services.auth.authenticate(request)
        session = await services.uploads.get(request.path_params["upload_id"], principal.user_id)
    except Exception as exc:  # noqa: BLE001
        return _error(exc, services)
    if session.kind != chunks.UploadKind.CHUNKED:
        return _error(chunks.UploadNotFound("no such upload"), services)
    return JSONResponse(_describe(session, base_url(request, services.settings)))


async def abandon(request: Request) -> Response:
    services: Services = request.app.state.services
    try:
        principal = services.auth.authenticate(request)
        session = await services.uploads.get(request.path_params["upload_id"], principal.user_id)
        if session.kind != chunks.UploadKind.CHUNKED:
            raise chunks.UploadNotFound("no such upload")
        await services.uploads.abandon(session.id, principal.user_id)
    except Exception as exc:  # noqa: BLE001
        return _error(exc, services)
    return Response(status_code=204)


def _describe(session: chunks.UploadSession, base: str, failed: bool = False) -> dict[str, Any]:
    described: dict[str, Any] = {
        "upload_id": session.id,
        "file_name": session.file_name,
        "content_type": session.content_type,
        "state": chunks.UploadState.FAILED if failed else session.state,
        "received_chunks": sorted(int(i) for i in session.received_chunks),
        "total_chunks": session.total_chunks,
        "missing_chunks": session.missing_chunks(),
        "received_bytes": session.received_bytes,
        "complete": session.state == chunks.UploadState.DONE,
        "expires_at": _iso(session.expires_at),
    }
    if session.state == chunks.UploadState.DONE and session.result is not None:
        described["avatar"] = absolute(session.result, base)
    if session.state == chunks.UploadState.FAILED:
        described["failure"] = {"code": session.error_code, "error": session.error_message}
    return described


def _iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat().replace("+00:00", "Z")


async def _whole_image(services: Services, user_id: str, parsed: ChunkRequest, base: str) -> Response:
    if len(parsed.data) > services.settings.limits.max_image_bytes:
        raise BadRequest(
            f"images are limited to {services.settings.limits.max_image_bytes} bytes", "upload-too-large", 413
        )
    version = await services.set_avatar_from_bytes(user_id, parsed.data)
    return JSONResponse({"message": "profile image updated", "complete": True, "avatar": version.describe(base)})


async def _session_for(services: Services, user_id: str, parsed: ChunkRequest) -> chunks.UploadSession:
    """The session a chunk belongs to: by the server's upload id, the client's own id, or the file name.

    An id of the server's shape must name an upload of this user; any other id is the client's
    own key for its upload, as the file name is when no id is sent."""
    upload_id = parsed.upload_id
    if upload_id is not None and chunks.looks_like_upload_id(upload_id):
        return await services.uploads.open_chunked(
            user_id,
            file_name=parsed.file_name,
            content_type=parsed.content_type,
            total_chunks=parsed.total_chunks,
            upload_id=upload_id,
        )
    alias = f"id:{upload_id}" if upload_id is not None else f"name:{parsed.file_name}"
    return await services.uploads.open_chunked(
        user_id,
        file_name=parsed.file_name,
        content_type=parsed.content_type,
        total_chunks=parsed.total_chunks,
        alias=alias,
        first_bytes=len(parsed.data),
    )


async def _parse(request: Request, services: Services) -> ChunkRequest:
    limits = services.settings.limits
    largest = max(limits.max_image_bytes, limits.max_chunk_bytes)
    document = await bodies.read_json_object(request, largest, limits.body_timeout_seconds)

    file_name = _field(document, "file_name", str)
    _check_file_name(file_name)
    content_type = _field(document, "content_type", str).split(";")[0].strip().lower()
    if content_type not in ALLOWED_TYPES:
        raise BadRequest(f"content_type {content_type!r} is not an allowed image type", "unsupported-content-type", 415)
    data = _base64(_field(document, "file", str))
    is_chunk = _field(document, "is_chunk", bool, required=False, default=False)
    upload_id = _field(document, "upload_id", str, required=False, default=None)
    if upload_id is not None and not 0 < len(upload_id) <= _MAX_CLIENT_ID:
        raise BadRequest(f"upload_id must be 1 to {_MAX_CLIENT_ID} characters", "invalid-upload-id")
    chunk_index, total_chunks = 0, 1
    if is_chunk:
        chunk_index = _integer(document, "chunk_index", 0, limits.max_chunks - 1)
        total_chunks = _integer(document, "total_chunks", 1, limits.max_chunks)
        if chunk_index >= total_chunks:
            raise BadRequest("chunk_index must be below total_chunks", "invalid-chunk-index")
        if len(data) > limits.max_chunk_bytes:
            raise BadRequest(f"a chunk may hold at most {limits.max_chunk_bytes} bytes", "chunk-too-large", 413)
    return ChunkRequest(file_name, data, content_type, is_chunk, chunk_index, total_chunks, upload_id)


_MISSING = object()


def _field(document: dict[str, Any], name: str, kind: type, required: bool = True, default: Any = None) -> Any:
    value = document.get(name, _MISSING)
    if value is _MISSING or (value is None and not required):
        if required:
            raise BadRequest(f"{name} is required", "missing-field")
        return default
    # bool is an int in Python, and an int is not a bool: check the exact type.
    if type(value) is not kind:
        raise BadRequest(f"{name} must be a {kind.__name__ if kind is not str else 'string'}", "invalid-field")
    return value


def _integer(document: dict[str, Any], name: str, lowest: int, highest: int) -> int:
    value = document.get(name, _MISSING)
    if value is _MISSING or value is None:
        raise BadRequest(f"{name} is required for a chunk", "missing-field")
    if type(value) is not int:
        raise BadRequest(f"{name} must be an integer", "invalid-field")
    if not lowest <= value <= highest:
        code = "invalid-chunk-index" if name == "chunk_index" else "invalid-total-chunks"
        raise BadRequest(f"{name} must be between {lowest} and {highest}", code)
    return value


def _check_file_name(name: str) -> None:
    if not name or len(name) > _MAX_NAME:
        raise BadRequest(f"file_name must be 1 to {_MAX_NAME} characters", "invalid-file-name")
    if name in {".", ".."} or any(c in name for c in "/\\") or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise BadRequest(
            "file_name must be a plain name, without path separators or control characters", "invalid-file-name"
        )


def _base64(text: str) -> bytes:
    compact = "".join(text.split())  # MIME-style line breaks are common in mobile encoders
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("file is not valid base64", "invalid-base64") from None
    # b64decode accepts surplus padding ("AAAA===="); only canonical base64 is unambiguous.
    if base64.b64encode(data).decode("ascii") != compact:
        raise BadRequest("file is not valid base64", "invalid-base64")
    if not data:
        raise BadRequest("file is empty", "empty-file")
    return data
