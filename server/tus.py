"""tus 1.0.0 at `/files/`: core, creation (+ with-upload, defer-length), termination,
expiration, checksum and concatenation.

Stricter than the reference servers where the text says MUST: 412 with `Tus-Version`, 415 for
a PATCH of another content type, `Upload-Offset` in every 409, `Cache-Control: no-store` on
HEAD, `Upload-Expires` on POST and PATCH, 410 for expired uploads. Errors answer
`{"error": message, "code": machine_code}` with `Tus-Resumable`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

import chunks

from . import bodies
from . import upload_resource as resource_
from .errors import BadRequest, image_status, problem_for

if TYPE_CHECKING:
    from .app import Services

VERSION = "1.0.0"
# checksum-trailer is not offered: ASGI passes no request trailers (see docs/tus.md).
EXTENSIONS = "creation,creation-with-upload,creation-defer-length,termination,expiration,checksum,concatenation"
CHECKSUM_SIZES = {"sha1": 20, "md5": 16, "sha256": 32}
OFFSET_STREAM = "application/offset+octet-stream"
EXPOSED_HEADERS = (
    "Location",
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Extension",
    "Tus-Max-Size",
    "Tus-Checksum-Algorithm",
    "Upload-Offset",
    "Upload-Length",
    "Upload-Defer-Length",
    "Upload-Metadata",
    "Upload-Expires",
    "Upload-Concat",
    "Upload-Complete",
    "Upload-Incomplete",
    "Upload-Limit",
    "Upload-Draft-Interop-Version",
    "Accept-Patch",
    "Retry-After",
)
_MAX_METADATA = 8192
_MAX_NAME = 255


async def collection(request: Request, method: str, *, with_ietf: bool) -> Response:
    services = resource_.services_of(request)
    if method == "OPTIONS":
        return options(services, with_ietf)
    try:
        _check_version(request)
        principal = services.auth.authenticate(request)
        if method != "POST":
            raise BadRequest(f"{method} is not allowed on the upload collection", "method-not-allowed", 405)
        return await create(request, services, principal.user_id)
    except Exception as exc:  # noqa: BLE001 - rendered, or re-raised if a bug
        return await error(exc, services)


async def resource(request: Request, method: str) -> Response:
    services = resource_.services_of(request)
    upload_id = request.path_params["upload_id"]
    if method == "OPTIONS":
        return options(services, with_ietf=False)
    owner: str | None = None
    try:
        _check_version(request)
        owner = services.auth.authenticate(request).user_id
        if method == "HEAD":
            return await head(request, services, owner, upload_id)
        if method == "PATCH":
            return await patch(request, services, owner, upload_id)
        if method == "DELETE":
            await resource_.load(services, upload_id, owner)
            await services.uploads.abandon(upload_id, owner)
            return Response(status_code=204, headers={"Tus-Resumable": VERSION})
        raise BadRequest(f"{method} is not allowed on an upload", "method-not-allowed", 405)
    except Exception as exc:  # noqa: BLE001
        return await error(exc, services, upload_id, owner=owner)


def options(services: Services, with_ietf: bool) -> Response:
    headers = {
        "Tus-Resumable": VERSION,
        "Tus-Version": VERSION,
        "Tus-Extension": EXTENSIONS,
        "Tus-Max-Size": str(services.settings.limits.max_image_bytes),
        "Tus-Checksum-Algorithm": ",".join(CHECKSUM_SIZES),
    }
    if with_ietf:
        from .ietf import discovery_headers

        headers.update(discovery_headers(services, None))
    return Response(status_code=204, headers=headers)


def _check_version(request: Request) -> None:
    if request.headers.get("tus-resumable") != VERSION:
        raise BadRequest(
            f"this server speaks tus {VERSION}: send Tus-Resumable: {VERSION}", "unsupported-tus-version", 412
        )


# -- creation ---------------------------------------------------------------------------------


async def create(request: Request, services: Services, owner: str) -> Response:
    concat, part_ids = _concat(request.headers.get("upload-concat"))
    metadata = parse_metadata(request.headers.get("upload-metadata"))
    if concat == "final":
        if "upload-length" in request.headers or "upload-defer-length" in request.headers:
            raise BadRequest("a final upload takes its length from its parts", "final-with-length")
        session = await _concatenate(services, owner, part_ids, metadata)
        return await _after_creation(request, services, session, resource_.completed(services, session))
    length = _creation_length(request)
    with_upload = resource_.has_body(request)
    if with_upload:
        _require_offset_stream(request)
    checksum = parse_checksum(request.headers.get("upload-checksum"))
    file_name, content_type = _described_file(metadata)
    session = await services.uploads.open_stream(
        owner,
        length=length,
        metadata=metadata,
        file_name=file_name,
        content_type=content_type,
        partial=concat == "partial",
    )
    if not with_upload:
        return _created(request, services, session, with_offset=False)

    async def upload() -> chunks.UploadSession:
        appended = await services.uploads.append(
            session.id,
            owner,
            0,
            resource_.body(request, services),
            checksum=checksum,
        )
        return await resource_.completed(services, appended)

    return await _after_creation(request, services, session, upload())


async def _after_creation(
    request: Request, services: Services, session: chunks.UploadSession, work: Awaitable[chunks.UploadSession]
) -> Response:
    """Run `work` (the upload's first bytes, its completion); a failure still tells where the upload is."""
    try:
        session = await work
    except Exception as exc:  # noqa: BLE001
        response = await error(exc, services, session.id, owner=session.owner)
        response.headers["Location"] = resource_.location(request, services, session.id)
        return response
    if session.state == chunks.UploadState.FAILED:
        response = _failed(session)
        response.headers["Location"] = resource_.location(request, services, session.id)
        return response
    return _created(request, services, session, with_offset=True)


def _created(request: Request, services: Services, session: chunks.UploadSession, *, with_offset: bool) -> Response:
    headers = {
        "Tus-Resumable": VERSION,
        "Location": resource_.location(request, services, session.id),
        "Upload-Expires": resource_.http_date(session.expires_at),
    }
    if with_offset:
        headers["Upload-Offset"] = str(session.offset)
    return Response(status_code=201, headers=headers)


async def _concatenate(
    services: Services, owner: str, part_ids: list[str], metadata: dict[str, str]
) -> chunks.UploadSession:
    try:
        return await services.uploads.concatenate(owner, part_ids, metadata=metadata)
    except (chunks.UploadNotFound, chunks.UploadGone):
        raise BadRequest("a part of this final upload does not exist (or is not yours)", "unknown-part") from None
    except chunks.SessionConflict as exc:
        raise BadRequest(exc.message, exc.code) from None


def _creation_length(request: Request) -> int | None:
    length = integer_header(request, "upload-length")
    deferred = request.headers.get("upload-defer-length")
    if deferred is not None and deferred != "1":
        raise BadRequest("Upload-Defer-Length must be 1", "invalid-defer-length")
    if (length is None) == (deferred is None):
        raise BadRequest("send exactly one of Upload-Length and Upload-Defer-Length: 1", "invalid-length")
    return length


def _concat(header: str | None) -> tuple[str | None, list[str]]:
    if header is None:
        return None, []
    value = header.strip()
    if value == "partial":
        return "partial", []
    kind, _, urls = value.partition(";")
    if kind != "final" or not urls.split():
        raise BadRequest("Upload-Concat must be 'partial' or 'final;<url> <url> ...'", "invalid-concat")
    part_ids = []
    for url in urls.split():
        upload_id = resource_.upload_id_from_url(url)
        if upload_id is None:
            raise BadRequest(f"{url[:100]!r} is not an upload of this server", "invalid-concat")
        part_ids.append(upload_id)
    if len(set(part_ids)) != len(part_ids) or len(part_ids) > 1000:
        raise BadRequest("a final upload names each part once, at most 1000 parts", "invalid-concat")
    return "final", part_ids


def parse_metadata(header: str | None) -> dict[str, str]:
    """`Upload-Metadata` as key -> base64 value (kept as sent, so HEAD can echo it)."""
    if header is None or not header.strip():
        return {}
    if len(header) > _MAX_METADATA:
        raise BadRequest(f"Upload-Metadata is limited to {_MAX_METADATA} characters", "invalid-metadata")
    metadata: dict[str, str] = {}
    for pair in header.split(","):
        key, _, value = pair.strip().partition(" ")
        value = value.strip()
        if not key or not key.isascii() or not key.isprintable() or key in metadata:
            raise BadRequest("Upload-Metadata keys must be unique, non-empty ASCII words", "invalid-metadata")
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(f"the Upload-Metadata value of {key!r} is not base64", "invalid-metadata") from None
        metadata[key] = value
    return metadata


def _described_file(metadata: dict[str, str]) -> tuple[str, str]:
    """The `filename` and `filetype` the client sent, made safe to record (never used as a path)."""
    name = _decoded(metadata.get("filename", ""))
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable())[:_MAX_NAME]
    file_type = _decoded(metadata.get("filetype", "")).strip().lower()
    if len(file_type) > 100 or not file_type.isascii() or not file_type.isprintable():
        file_type = ""
    return name, file_type


def _decoded(value: str) -> str:
    try:
        return base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return ""


# -- an upload --------------------------------------------------------------------------------


async def head(request: Request, services: Services, owner: str, upload_id: str) -> Response:
    await resource_.load(services, upload_id, owner)
    session = await services.uploads.current(upload_id, owner)
    headers = {
        "Tus-Resumable": VERSION,
        "Cache-Control": "no-store",
        "Upload-Offset": str(session.offset),
        "Upload-Expires": resource_.http_date(session.expires_at),
    }
    if session.length is not None:
        headers["Upload-Length"] = str(session.length)
    else:
        headers["Upload-Defer-Length"] = "1"
    if session.metadata:
        headers["Upload-Metadata"] = ",".join(f"{k} {v}".rstrip() for k, v in session.metadata.items())
    if session.partial:
        headers["Upload-Concat"] = "partial"
    elif session.parts:
        urls = " ".join(resource_.location(request, services, part) for part in session.parts)
        headers["Upload-Concat"] = f"final;{urls}"
    return Response(status_code=200, headers=headers)


async def patch(request: Request, services: Services, owner: str, upload_id: str) -> Response:
    _require_offset_stream(request)
    offset = integer_header(request, "upload-offset")
    if offset is None:
        raise BadRequest("Upload-Offset is required", "missing-offset")
    length = integer_header(request, "upload-length")
    checksum = parse_checksum(request.headers.get("upload-checksum"))
    session = await resource_.load(services, upload_id, owner)
    if session.parts:
        raise BadRequest("a final upload is made of its parts and takes no PATCH", "final-upload", 403)
    declared = bodies.declared_length(request)
    known = length if length is not None else session.length
    if declared is not None and known is not None and offset + declared > known:
        raise BadRequest(f"the body would take the upload past its length of {known} bytes", "length-exceeded", 413)
    if session.state != chunks.UploadState.OPEN and offset == session.offset and not resource_.has_body(request):
        # A retry of the request that completed the upload: answer with its outcome.
        session = await resource_.completed(services, session)
    else:
        session = await services.uploads.append(
            upload_id,
            owner,
            offset,
            resource_.body(request, services),
            length=length,
            checksum=checksum,
        )
        session = await resource_.completed(services, session)
    if session.state == chunks.UploadState.FAILED:
        return _failed(session)
    return Response(
        status_code=204,
        headers={
            "Tus-Resumable": VERSION,
            "Upload-Offset": str(session.offset),
            "Upload-Expires": resource_.http_date(session.expires_at),
        },
    )


def _require_offset_stream(request: Request) -> None:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != OFFSET_STREAM:
        raise BadRequest(f"upload bodies must be sent as Content-Type: {OFFSET_STREAM}", "unsupported-media-type", 415)


def integer_header(request: Request, name: str) -> int | None:
    value = request.headers.get(name)
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit() or not value.isascii() or len(value) > 15:
        raise BadRequest(f"{name.title()} must be a non-negative integer", "invalid-header")
    return int(value)


def parse_checksum(header: str | None) -> chunks.Checksum | None:
    if header is None:
        return None
    algorithm, _, encoded = header.strip().partition(" ")
    if algorithm not in CHECKSUM_SIZES:
        raise BadRequest(
            f"checksum algorithm {algorithm[:20]!r} is not supported; use one of {', '.join(CHECKSUM_SIZES)}",
            "unsupported-checksum-algorithm",
        )
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != CHECKSUM_SIZES[algorithm]:
        raise BadRequest(f"the {algorithm} checksum must be a base64 {algorithm} digest", "invalid-checksum")
    return chunks.Checksum(algorithm, digest)


# -- errors -----------------------------------------------------------------------------------


def _failed(session: chunks.UploadSession) -> Response:
    return JSONResponse(
        {"error": session.error_message, "code": session.error_code, "upload_id": session.id, "state": session.state},
        image_status(session.error_code),
        headers={"Tus-Resumable": VERSION, "Upload-Offset": str(session.offset)},
    )


async def error(
    exc: BaseException, services: Services, upload_id: str | None = None, owner: str | None = None
) -> Response:
    """The tus answer to a failure: `Tus-Version` on 412; the current `Upload-Offset` on every
    409 and `Upload-Expires` whenever the upload is known."""
    problem = problem_for(exc, services.settings.redis.retry_after_seconds)
    if problem is None:
        raise exc
    headers = {**problem.headers, "Tus-Resumable": VERSION}
    if problem.status == 412:
        headers["Tus-Version"] = VERSION
    session = await _session_or_none(services, upload_id, owner) if problem.status not in (404, 410) else None
    if session is not None:
        headers["Upload-Expires"] = resource_.http_date(session.expires_at)
    if problem.status == 409:
        offset = exc.expected if isinstance(exc, chunks.OffsetMismatch) else session.offset if session else None
        if offset is not None:
            headers["Upload-Offset"] = str(offset)
    return JSONResponse({"error": problem.message, "code": problem.code}, problem.status, headers=headers)


async def _session_or_none(services: Services, upload_id: str | None, owner: str | None) -> chunks.UploadSession | None:
    if upload_id is None or owner is None:
        return None
    try:
        return await services.uploads.get(upload_id, owner)
    except chunks.UploadError:
        return None
