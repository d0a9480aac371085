"""Resumable uploads at `/files/`: what tus 1.0.0 and the IETF draft share.

Both protocols create, inspect, append to and delete the same kind of upload (an appended
stream in `chunks`), at the same URLs. Each is a `Dialect`; `server.protocols.files` routes a
request to the dialect that claims it. The dialects meet only here, never import each other.
"""

from __future__ import annotations

import email.utils
import functools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from starlette.requests import Request

import chunks

from . import bodies
from .endpoint import Endpoint
from .links import base_url
from .services import Services

# A request that names this header speaks the IETF draft; every other one speaks tus.
INTEROP_HEADER = "upload-draft-interop-version"
# The headers of both protocols a browser client must be able to read across origins (CORS).
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
# Methods a client may name in X-HTTP-Method-Override, whatever method carries the request:
# proxies and browsers that only pass GET and POST (or strip PATCH, DELETE, OPTIONS) are why
# tus servers honour it, so `/files/` honours it on every request, not only on POST.
_OVERRIDABLE = {"GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"}


@dataclass(frozen=True)
class Dialect:
    """One protocol's handling of `/files/`. `claims`: whether a request speaks it (the first
    enabled dialect that claims a request gets it). `advertise`: headers it adds to another
    dialect's OPTIONS answer on the collection, so a client discovering without naming a
    protocol learns about it too."""

    name: str
    claims: Callable[[Request], bool]
    collection: Endpoint
    resource: Endpoint
    advertise: Callable[[Services], dict[str, str]] | None = None


def effective_method(request: Request) -> str:
    # Asked three or four times per request (routing to a dialect, the endpoint, the answer):
    # worked out once and kept in the scope.
    method: str | None = request.scope.get(_EFFECTIVE_METHOD)
    if method is None:
        override = request.headers.get("x-http-method-override", "").strip().upper()
        method = request.scope[_EFFECTIVE_METHOD] = override if override in _OVERRIDABLE else request.method
    return method


_EFFECTIVE_METHOD = "avs.effective_method"


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
    return _http_date(int(timestamp))


@functools.lru_cache(maxsize=256)
def _http_date(seconds: int) -> str:
    # Every tus answer carries Upload-Expires; within a second they are all the same text.
    return email.utils.formatdate(seconds, usegmt=True)


def has_body(request: Request) -> bool:
    length = bodies.declared_length(request)
    if length is not None:
        return length > 0
    return "chunked" in request.headers.get("transfer-encoding", "").lower()


def body(request: Request, services: Services) -> AsyncIterator[bytes]:
    return bodies.stream(request, services.settings.limits.max_image_bytes, services.body_pace)


async def load(services: Services, upload_id: str, owner: str) -> chunks.UploadSession:
    """A stream upload of `owner`; anything else (a chunk-API upload, a foreign id) is not found."""
    session = await services.uploads.get(upload_id, owner)
    if session.kind != chunks.UploadKind.STREAM:
        raise chunks.UploadNotFound("no such upload")
    return session
