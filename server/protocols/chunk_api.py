"""The JSON chunk API: `POST /accounts/profile-image` with base64 chunks.

A whole image (`is_chunk` false) becomes the avatar in that request. Chunks may arrive in any
order and more than once; the request that brings the last missing one completes the upload.
Errors answer `{"error": message, "code": machine_code}`.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from typing import Any

import pybase64
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

import chunks

from .. import bodies, file_names, media_types
from .. import openapi as oa
from ..auth import Principal
from ..endpoint import Endpoints, json_problem, render_json
from ..errors import BadRequest, ContentTooLarge, UnsupportedMediaType, failed_upload
from ..links import base_url
from ..services import Services, complete_upload
from ..settings import Settings
from ..upload_description import describe_upload

_MAX_CLIENT_ID = 128
_api = Endpoints(render_json)


@dataclass(frozen=True)
class ChunkRequest:
    file_name: str
    data: bytes
    content_type: str
    is_chunk: bool
    chunk_index: int
    total_chunks: int
    upload_id: str | None


async def upload(request: Request, services: Services, principal: Principal) -> Response:
    parsed = await _parse(request, services)
    base = base_url(request, services.settings)
    if not parsed.is_chunk:
        return await _whole_image(services, principal.user_id, parsed, base)
    uploads = services.uploads
    upload_id, read = parsed.upload_id, None
    if upload_id is not None and chunks.looks_like_upload_id(upload_id):
        # The session and this chunk's entry in one round trip (with the chunk's bytes counted
        # in the user's quota), handed on to store_chunk.
        read = await uploads.open_chunk(
            principal.user_id,
            upload_id,
            parsed.chunk_index,
            total_chunks=parsed.total_chunks,
            content_type=parsed.content_type,
            size=len(parsed.data),
        )
        session = read.session
    else:
        # A session this request created comes with its record, which store_chunk then need not read.
        session, read = await _session_for(services, principal.user_id, parsed)
    # If this chunk is the last one missing, its record claims the upload for this request.
    token = chunks.claim_token()
    stored = await uploads.store_chunk(session, parsed.chunk_index, parsed.data, read, claim_as=token)
    session = await complete_upload(services, stored.session, claimed_as=token)
    # A new chunk's record answered the indices; a duplicate's are read.
    received = stored.received if stored.received is not None else await uploads.chunk_records.indices(session)
    body = describe_upload(session, base=base, received=received) | {"duplicate": stored.duplicate}
    if session.state == chunks.UploadState.FAILED:
        return json_problem(failed_upload(session), **body)
    body["message"] = "profile image updated" if session.state == chunks.UploadState.DONE else "chunk received"
    return JSONResponse(body)


async def status(request: Request, services: Services, principal: Principal) -> Response:
    session = await _chunked(services, request.path_params["upload_id"], principal.user_id)
    services.uploads.asked_about(session)
    received = await services.uploads.chunk_records.indices(session)
    return JSONResponse(describe_upload(session, base=base_url(request, services.settings), received=received))


async def abandon(request: Request, services: Services, principal: Principal) -> Response:
    session = await _chunked(services, request.path_params["upload_id"], principal.user_id)
    await services.uploads.abandon(session.id, principal.user_id)
    return Response(status_code=204)


async def _chunked(services: Services, upload_id: str, owner: str) -> chunks.UploadSession:
    """A chunk-API upload of `owner`; anything else (a tus upload, a foreign id) is not found."""
    session = await services.uploads.get(upload_id, owner)
    if session.kind != chunks.UploadKind.CHUNKED:
        raise chunks.UploadNotFound("no such upload")
    return session


def routes(settings: Settings) -> list[BaseRoute]:
    return [
        Route("/accounts/profile-image", _api.authenticated(upload), methods=["POST"]),
        Route("/accounts/profile-image/uploads/{upload_id}", _api.authenticated(status), methods=["GET"]),
        Route("/accounts/profile-image/uploads/{upload_id}", _api.authenticated(abandon), methods=["DELETE"]),
    ]


async def _whole_image(services: Services, user_id: str, parsed: ChunkRequest, base: str) -> Response:
    limit = services.settings.limits.max_image_bytes
    if len(parsed.data) > limit:
        raise ContentTooLarge(f"images are limited to {limit} bytes", code="upload-too-large")
    version = await services.avatar_setter.set_avatar_from_bytes(user_id, parsed.data)
    return JSONResponse({"message": "profile image updated", "complete": True, "avatar": version.describe(base)})


async def _session_for(
    services: Services, user_id: str, parsed: ChunkRequest
) -> tuple[chunks.UploadSession, chunks.ChunkRead | None]:
    """The session a chunk belongs to when it names none by the server's upload id: the one
    under the client's own id, else under the file name (an id of the server's shape is
    looked up by `upload`, with the chunk's entry); with its record if this request created it."""
    alias = f"id:{parsed.upload_id}" if parsed.upload_id is not None else f"name:{parsed.file_name}"
    return await services.uploads.open_named(
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
    document = await bodies.read_json_object(
        request, largest, services.body_pace, services.body_budget, literal=_FILE_LITERAL
    )

    file_name = _field(document, "file_name", str)
    _check_file_name(file_name)
    content_type = media_types.plain(_field(document, "content_type", str))
    if content_type not in media_types.IMAGE_TYPES:
        raise UnsupportedMediaType(
            f"content_type {content_type!r} is not an allowed image type", code="unsupported-content-type"
        )
    if not isinstance(document.get("file"), _Decoded):
        _field(document, "file", str)
    data = _base64(document)
    is_chunk = _field(document, "is_chunk", bool, required=False, default=False)
    upload_id = _field(document, "upload_id", str, required=False, default=None)
    if upload_id is not None and not 0 < len(upload_id) <= _MAX_CLIENT_ID:
        raise BadRequest(f"upload_id must be 1 to {_MAX_CLIENT_ID} characters", code="invalid-upload-id")
    chunk_index, total_chunks = 0, 1
    if is_chunk:
        chunk_index = _integer(document, "chunk_index", 0, limits.max_chunks - 1)
        total_chunks = _integer(document, "total_chunks", 1, limits.max_chunks)
        if chunk_index >= total_chunks:
            raise BadRequest("chunk_index must be below total_chunks", code="invalid-chunk-index")
        if len(data) > limits.max_chunk_bytes:
            raise ContentTooLarge(f"a chunk may hold at most {limits.max_chunk_bytes} bytes", code="chunk-too-large")
    return ChunkRequest(file_name, data, content_type, is_chunk, chunk_index, total_chunks, upload_id)


def openapi_paths() -> oa.Doc:
    chunk = {"application/json": {"schema": oa.ref("ChunkRequest")}}
    return {
        "/accounts/profile-image": {
            "post": oa.operation(
                "Upload a profile image whole, or one base64 chunk of it (any order, repeats allowed)",
                "Chunk API",
                {
                    "200": oa.json_response(oa.ref("ChunkUpload"), "Chunk received, or the image became the avatar"),
                    "400": oa.error("Invalid request"),
                    **oa.AUTH_ERRORS,
                    "409": oa.error("Conflicting chunk"),
                    "413": oa.error("Too large"),
                    "415": oa.error("Not an allowed image type"),
                    "422": oa.error("The image could not be decoded"),
                },
                body=chunk,
            )
        },
        "/accounts/profile-image/uploads/{upload_id}": {
            "get": oa.operation(
                "Where a chunked upload stands: received and missing chunks",
                "Chunk API",
                {"200": oa.json_response(oa.ref("ChunkUpload")), **oa.AUTH_ERRORS, "404": oa.error("No such upload")},
                params=[oa.UPLOAD_ID],
            ),
            "delete": oa.operation(
                "Abandon a chunked upload",
                "Chunk API",
                {"204": {"description": "Abandoned"}, **oa.AUTH_ERRORS, "404": oa.error("No such upload")},
                params=[oa.UPLOAD_ID],
            ),
        },
    }


_MISSING = object()


def _field(document: dict[str, Any], name: str, kind: type, required: bool = True, default: Any = None) -> Any:
    value = document.get(name, _MISSING)
    if value is _MISSING or (value is None and not required):
        if required:
            raise BadRequest(f"{name} is required", code="missing-field")
        return default
    # bool is an int in Python, and an int is not a bool: check the exact type.
    if type(value) is not kind:
        raise BadRequest(f"{name} must be a {kind.__name__ if kind is not str else 'string'}", code="invalid-field")
    return value


def _integer(document: dict[str, Any], name: str, lowest: int, highest: int) -> int:
    value = document.get(name, _MISSING)
    if value is _MISSING or value is None:
        raise BadRequest(f"{name} is required for a chunk", code="missing-field")
    if type(value) is not int:
        raise BadRequest(f"{name} must be an integer", code="invalid-field")
    if not lowest <= value <= highest:
        code = "invalid-chunk-index" if name == "chunk_index" else "invalid-total-chunks"
        raise BadRequest(f"{name} must be between {lowest} and {highest}", code=code)
    return value


def _check_file_name(name: str) -> None:
    if not 0 < len(name) <= file_names.MAX_LENGTH:
        raise BadRequest(f"file_name must be 1 to {file_names.MAX_LENGTH} characters", code="invalid-file-name")
    if not file_names.is_plain(name):
        raise BadRequest(
            "file_name must be a plain name, without path separators or control characters", code="invalid-file-name"
        )


# Base64 is decoded in pieces of this many characters, so the whole image is never held twice
# as text (a whitespace-free copy, a re-encoded copy) beside its bytes.
_PIECE = 64 * 1024
_B64_VALUES = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def _base64(document: dict[str, Any]) -> bytes:
    """The bytes of the document's `file`, which it takes out of the document (so that the text
    is freed as soon as it is decoded).

    Only canonical base64 is taken, as `base64.b64encode` would write it: surplus padding
    ("AAAA====") or non-zero bits after the last byte ("AB==") would make two texts mean
    the same bytes. MIME-style line breaks and other whitespace are ignored."""
    text: str | _Decoded = document.pop("file")
    if isinstance(text, _Decoded):
        return text.checked()
    if len(text) % 4 == 0:
        # Whitespace-free text, what clients send, decodes in one step, held beside its bytes only.
        try:
            data = _decode_piece(text)
        except BadRequest:
            pass  # whitespace, perhaps: the pieces below tell
        else:
            if not data:
                raise BadRequest("file is empty", code="empty-file")
            return data
    out = bytearray()
    carry, ended = "", False
    for start in range(0, len(text), _PIECE):
        piece = carry + "".join(text[start : start + _PIECE].split())
        whole = len(piece) // 4 * 4
        carry = piece[whole:]
        if whole and ended:  # data after the padding
            raise BadRequest("file is not valid base64", code="invalid-base64")
        out += _decode_piece(piece[:whole])
        ended = piece[:whole].endswith("=")
    del text
    if carry:
        raise BadRequest("file is not valid base64", code="invalid-base64")  # not a multiple of 4 characters
    if not out:
        raise BadRequest("file is empty", code="empty-file")
    return bytes(out)


def _check_padding(text: str) -> None:
    """Canonical padding in `text` (a piece, or the last characters of the whole text)."""
    padding = len(text) - len(text.rstrip("="))
    # Padding may only end the text (the caller sees that nothing follows), two characters at most.
    if padding > 2 or "=" in text[: len(text) - padding]:
        raise BadRequest("file is not valid base64", code="invalid-base64")
    if padding:
        # The bits after the last whole byte must be zero: 4 of them with "==", 2 with "=".
        value = _B64_VALUES.get(text[-padding - 1], 0)
        if value & (0x0F if padding == 2 else 0x03):
            raise BadRequest("file is not valid base64", code="invalid-base64")


def _decode_piece(piece: str) -> bytes:
    _check_padding(piece)
    try:
        # pybase64 (SIMD) decodes 64 KiB in about 8 us where binascii takes 260 (most of a chunk's
        # CPU after the Redis round trips); validate=True refuses anything outside the alphabet.
        return pybase64.b64decode(piece, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("file is not valid base64", code="invalid-base64") from None


@dataclass(frozen=True)
class _Decoded:
    """`file` decoded straight from the body's bytes by `bodies.Literal` (what clients send:
    base64 without whitespace or escapes): neither the 1.4 MB JSON parse of a 1 MiB chunk's text
    nor a `str` of it. `tail`: the text's last (up to) three characters, all the checks need."""

    data: bytes
    tail: str

    def checked(self) -> bytes:
        """The bytes, once the text is canonical as `_decode_piece` wants it (pybase64 with
        validate=True already refused "=" anywhere but at the end)."""
        _check_padding(self.tail)
        if not self.data:
            raise BadRequest("file is empty", code="empty-file")
        return self.data


def _decode_literal(text: memoryview) -> _Decoded:
    # validate=True refuses every byte outside the base64 alphabet and "=" (a ValueError):
    # what bodies.Literal needs to know the JSON string is these bytes themselves.
    data = pybase64.b64decode(text, validate=True)
    return _Decoded(data, str(text[-3:], "ascii"))


_FILE_LITERAL = bodies.Literal("file", _decode_literal)
