"""The upload resources at `/files/`, shared by tus 1.0.0 and the IETF resumable-upload draft.

Both protocols create, inspect, append to and delete the same kind of upload (an appended
stream in `chunks`), so they share the URL space: a request that names an
`Upload-Draft-Interop-Version` speaks the IETF draft, every other one speaks tus. `GET` on an
upload is neither: it is this server's own status resource, for a client that lost the final
response and wants to know whether its image became the avatar.
"""

from __future__ import annotations

import datetime
import email.utils
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

import chunks

from . import bodies
from .errors import json_error
from .links import base_url

if TYPE_CHECKING:
    from .app import Services
    from .settings import Settings

METHODS = ["GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"]
# Methods a client may tunnel through POST with X-HTTP-Method-Override (tus: for proxies
# and browsers that cannot send PATCH or DELETE).
_OVERRIDABLE = {"GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"}
INTEROP_HEADER = "upload-draft-interop-version"


def routes(settings: Settings) -> list[BaseRoute]:
    from . import ietf, tus

    use_tus, use_ietf = settings.protocol_enabled("tus"), settings.protocol_enabled("ietf")

    async def collection(request: Request) -> Response:
        method = effective_method(request)
        if use_ietf and INTEROP_HEADER in request.headers:
            return await ietf.collection(request, method)
        if use_tus:
            return await tus.collection(request, method, with_ietf=use_ietf)
        return _not_here()

    async def resource(request: Request) -> Response:
        method = effective_method(request)
        if method == "GET":
            return await status(request)
        if use_ietf and INTEROP_HEADER in request.headers:
            return await ietf.resource(request, method)
        if use_tus:
            return await tus.resource(request, method)
        return _not_here()

    return [
        Route("/files", collection, methods=METHODS),
        Route("/files/", collection, methods=METHODS),
        Route("/files/{upload_id}", resource, methods=METHODS),
    ]


def _not_here() -> Response:
    return JSONResponse({"error": "this protocol is switched off", "code": "protocol-disabled"}, 404)


def effective_method(request: Request) -> str:
    override = request.headers.get("x-http-method-override", "").strip().upper()
    if request.method == "POST" and override in _OVERRIDABLE:
        return override
    return request.method


def services_of(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


def location(request: Request, services: Services, upload_id: str) -> str:
    return f"{base_url(request, services.settings)}/files/{upload_id}"


def upload_id_from_url(url: str) -> str | None:
    """The upload id in an upload URL (absolute, or a path), if it names one of ours."""
    path = url.split("?", 1)[0].split("#", 1)[0]
    _, marker, upload_id = path.rpartition("/files/")
    if not marker or not chunks.looks_like_upload_id(upload_id):
        return None
    return upload_id


def http_date(timestamp: float) -> str:
    return email.utils.formatdate(timestamp, usegmt=True)


def has_body(request: Request) -> bool:
    length = bodies.declared_length(request)
    if length is not None:
        return length > 0
    return "chunked" in request.headers.get("transfer-encoding", "").lower()


def body(request: Request, services: Services) -> AsyncIterator[bytes]:
    limits = services.settings.limits
    return bodies.stream(request, limits.max_image_bytes, limits.body_timeout_seconds)


async def load(services: Services, upload_id: str, owner: str) -> chunks.UploadSession:
    """A stream upload of `owner`; anything else (a chunk-API upload, a foreign id) is not found."""
    session = await services.uploads.get(upload_id, owner)
    if session.kind != chunks.UploadKind.STREAM:
        raise chunks.UploadNotFound("no such upload")
    return session


async def completed(services: Services, session: chunks.UploadSession) -> chunks.UploadSession:
    """Once every byte is in, make the image the avatar (or learn another request's outcome).

    Partial uploads (tus concatenation) are never completed on their own. Raises
    avatars.ImageRejected when the bytes are not an acceptable image."""
    if session.partial or not session.all_received:
        return session
    if session.state in (chunks.UploadState.OPEN, chunks.UploadState.ASSEMBLING):
        return await services.complete(session)
    return session


def describe(request: Request, services: Services, session: chunks.UploadSession) -> dict[str, Any]:
    described: dict[str, Any] = {
        "upload_id": session.id,
        "url": location(request, services, session.id),
        "state": session.state,
        "offset": session.offset,
        "length": session.length,
        "complete": session.state == chunks.UploadState.DONE,
        "partial": session.partial,
        "file_name": session.file_name,
        "content_type": session.content_type,
        "expires_at": datetime.datetime.fromtimestamp(session.expires_at, datetime.UTC)
        .isoformat()
        .replace("+00:00", "Z"),
    }
    if session.state == chunks.UploadState.DONE and session.result is not None:
        described["avatar"] = session.result
    if session.state == chunks.UploadState.FAILED:
        described["failure"] = {"code": session.error_code, "error": session.error_message}
    return described


async def status(request: Request) -> Response:
    """`GET /files/{id}`: where an upload stands, and what became of it once complete."""
    services = services_of(request)
    try:
        principal = services.auth.authenticate(request)
        session = await load(services, request.path_params["upload_id"], principal.user_id)
    except Exception as exc:  # noqa: BLE001 - rendered, or re-raised if a bug
        return json_error(exc, services.settings.redis.retry_after_seconds)
    return JSONResponse(describe(request, services, session), headers={"Cache-Control": "no-store"})
