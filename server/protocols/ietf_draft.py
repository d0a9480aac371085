"""The IETF draft "Resumable Uploads for HTTP" (interop versions 3 to 8) on the `/files/` uploads.

A request that carries `Upload-Draft-Interop-Version` speaks the draft: `POST /files/` with
`Upload-Complete` creates an upload (and may carry all or part of the image), `HEAD` tells the
offset, `PATCH` with `application/partial-upload` appends, `DELETE` cancels. Header values are
Structured Fields (RFC 9651); errors are RFC 9457 problem details.

Versions differ in small ways: 3 (draft -01) says `Upload-Incomplete` where later ones say
`Upload-Complete`; from 6 (drafts -04/-05) a PATCH must be `application/partial-upload` and
`Upload-Limit` is sent, its lifetime key named `expires` in 6 and `max-age` from 7.

uvicorn cannot send the `104 (Upload Resumption Supported)` interim response (ASGI has no
message for it), so the upload's URL arrives with the final response only; see docs/tus.md.
"""

from __future__ import annotations

import re
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

import chunks

from .. import bodies, file_names, media_types
from ..auth import Principal
from ..digest_fields import (
    INVALID,
    MISMATCHED,
    InvalidDigest,
    content_digest,
    repr_digest,
    repr_digest_field,
    wanted_digest,
)
from ..endpoint import Endpoints
from ..errors import KNOWN, BadRequest, MethodNotAllowed, Problem, UnsupportedMediaType, failed_upload, problem_for
from ..resumable import INTEROP_HEADER, Dialect, body, effective_method, has_body, load, location
from ..services import Services, complete_upload

VERSIONS = (3, 4, 5, 6, 7, 8)
LATEST = VERSIONS[-1]
PARTIAL_UPLOAD = "application/partial-upload"
PROBLEM_TYPES = "https://iana.org/assignments/http-problem-types#"
_SF_INTEGER = re.compile(r"-?[0-9]{1,15}")
_FILENAME = re.compile(r'filename\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]+))', re.IGNORECASE)


def version_of(request: Request) -> int:
    value = request.headers.get(INTEROP_HEADER, "").strip()
    if not (value.isascii() and value.isdigit()) or int(value) not in VERSIONS:
        supported = ", ".join(map(str, VERSIONS))
        raise BadRequest(f"Upload-Draft-Interop-Version must be one of {supported}", code="unsupported-interop-version")
    return int(value)


def _version_or_latest(request: Request) -> int:
    """The version to answer a failure in: the request's, or the latest when it named none we speak."""
    value = request.headers.get(INTEROP_HEADER, "").strip()
    return int(value) if value.isascii() and value.isdigit() and int(value) in VERSIONS else LATEST


async def _render(request: Request, services: Services, problem: Problem, exc: Exception) -> Response:
    provided = sf_length(request, "upload-offset")
    return problem_response(services, problem, exc, _version_or_latest(request), provided=provided)


_draft = Endpoints(_render)


async def options(request: Request, services: Services) -> Response:
    return Response(status_code=204, headers=discovery_headers(services, None, version_of(request)))


async def _on_collection(request: Request, services: Services, principal: Principal) -> Response:
    method = effective_method(request)
    if method != "POST":
        raise MethodNotAllowed(f"{method} is not allowed here; create an upload with POST", code="method-not-allowed")
    return await create(request, services, principal.user_id, version_of(request))


async def _on_upload(request: Request, services: Services, principal: Principal) -> Response:
    method, upload_id, owner = effective_method(request), request.path_params["upload_id"], principal.user_id
    version = version_of(request)
    if method == "HEAD":
        return await head(request, services, owner, upload_id, version)
    if method == "PATCH":
        return await append(request, services, owner, upload_id, version)
    if method == "DELETE":
        await load(services, upload_id, owner)
        await services.uploads.abandon(upload_id, owner)
        return Response(status_code=204)
    if method == "OPTIONS":
        return Response(status_code=204, headers=discovery_headers(services, None, version))
    raise MethodNotAllowed(f"{method} is not allowed on an upload", code="method-not-allowed")


_options = _draft.public(options, check=version_of)
_collection = _draft.authenticated(_on_collection, check=version_of)
_upload = _draft.authenticated(_on_upload, check=version_of)


async def _collection_endpoint(request: Request) -> Response:
    return await (_options if effective_method(request) == "OPTIONS" else _collection)(request)


def _advertise(services: Services) -> dict[str, str]:
    return discovery_headers(services, None)


DIALECT = Dialect(
    "ietf",
    claims=lambda request: INTEROP_HEADER in request.headers,
    collection=_collection_endpoint,
    resource=_upload,
    advertise=_advertise,
)


# -- header fields ----------------------------------------------------------------------------


def _item(request: Request, name: str) -> str | None:
    """A Structured Field Item's bare value, its parameters dropped."""
    value = request.headers.get(name)
    return None if value is None else value.split(";", 1)[0].strip()


def sf_boolean(request: Request, name: str) -> bool | None:
    """`?1` / `?0`; any other value makes the whole field ignored, as the draft says."""
    return {"?1": True, "?0": False}.get(_item(request, name) or "")


def sf_length(request: Request, name: str) -> int | None:
    """A non-negative sf-integer; other values make the field ignored."""
    value = _item(request, name)
    if value is None or not _SF_INTEGER.fullmatch(value) or value.startswith("-"):
        return None
    return int(value)


def _completeness(request: Request, version: int) -> bool:
    if version == 3:
        incomplete = sf_boolean(request, "upload-incomplete")
        if incomplete is None:
            raise BadRequest("Upload-Incomplete (?0 or ?1) is required", code="missing-upload-complete")
        return not incomplete
    complete = sf_boolean(request, "upload-complete")
    if complete is None:
        raise BadRequest("Upload-Complete (?0 or ?1) is required", code="missing-upload-complete")
    return complete


def completeness_header(version: int, complete: bool) -> dict[str, str]:
    if version == 3:
        return {"Upload-Incomplete": "?0" if complete else "?1"}
    return {"Upload-Complete": "?1" if complete else "?0"}


def discovery_headers(
    services: Services, session: chunks.UploadSession | None, version: int = LATEST
) -> dict[str, str]:
    """`Upload-Limit` (from interop 6) and `Accept-Patch`, which OPTIONS must carry."""
    headers = {"Accept-Patch": PARTIAL_UPLOAD}
    if version >= 6:
        limits = [f"max-size={services.settings.limits.max_image_bytes}"]
        lifetime = services.settings.uploads.expire_seconds if session is None else session.expires_at - time.time()
        limits.append(f"{'expires' if version == 6 else 'max-age'}={max(0, int(lifetime))}")
        headers["Upload-Limit"] = ", ".join(limits)
    return headers


def _state_headers(
    services: Services, session: chunks.UploadSession, version: int, request: Request | None = None
) -> dict[str, str]:
    headers = {
        **_repr_digest(request, session),
        "Upload-Offset": str(session.offset),
        "Upload-Draft-Interop-Version": str(version),
        **completeness_header(version, _is_complete(session)),
        **discovery_headers(services, session, version),
    }
    headers.pop("Accept-Patch")
    if session.length is not None and version >= 5:
        headers["Upload-Length"] = str(session.length)
    return headers


def _repr_digest(request: Request | None, session: chunks.UploadSession) -> dict[str, str]:
    """`Repr-Digest` of the bytes stored so far, in the algorithm a `Want-Repr-Digest` prefers.

    Omitted when the server keeps no running digest of this upload (see running_digest.py)."""
    wanted = wanted_digest(None if request is None else request.headers.get("want-repr-digest"), chunks.RUNNING_DIGESTS)
    digests = chunks.stored_digests(session) if wanted is not None else None
    if wanted is None or digests is None or wanted[1] not in digests:
        return {}
    return {"Repr-Digest": repr_digest_field(wanted[0], digests[wanted[1]])}


def _is_complete(session: chunks.UploadSession) -> bool:
    return session.state != chunks.UploadState.OPEN


def _file_name(request: Request) -> str:
    match = _FILENAME.search(request.headers.get("content-disposition", ""))
    if match is None:
        return ""
    return file_names.cleaned(match.group(1) if match.group(1) is not None else match.group(2))


def _consistent(*lengths: int | None) -> int | None:
    known = {length for length in lengths if length is not None}
    if len(known) > 1:
        raise chunks.SessionConflict("the lengths given for this upload disagree", code="length-mismatch")
    return known.pop() if known else None


# -- requests ---------------------------------------------------------------------------------


async def create(request: Request, services: Services, owner: str, version: int) -> Response:
    complete = _completeness(request, version)
    content_length = bodies.declared_length(request)
    length = _consistent(sf_length(request, "upload-length"), content_length if complete else None)
    # A Repr-Digest on creation names the whole upload: kept on it, checked when it completes.
    expected = repr_digest(request.headers.get("repr-digest"))
    session = await services.uploads.open_stream(
        owner,
        length=length,
        expected_digest=expected,
        running_digests=True,  # Want-Repr-Digest and a Repr-Digest on the last request need them
        file_name=_file_name(request),
        content_type=media_types.plain(request.headers.get("content-type", ""))[:100],
    )
    where = {"Location": location(request, services, session.id)}
    try:
        session = await _transfer(request, services, session, 0, complete, None)
    except KNOWN as exc:
        problem = problem_for(exc, services.retry_after_seconds)
        assert problem is not None
        response = problem_response(services, problem, exc, version, session)
        response.headers.update(where)
        return response
    if complete:
        return _outcome(services, session, version, where, request)
    return Response(status_code=201, headers={**where, **_state_headers(services, session, version, request)})


async def head(request: Request, services: Services, owner: str, upload_id: str, version: int) -> Response:
    await load(services, upload_id, owner)
    session = await services.uploads.current(upload_id, owner)
    return Response(
        status_code=204, headers={"Cache-Control": "no-store", **_state_headers(services, session, version, request)}
    )


async def append(request: Request, services: Services, owner: str, upload_id: str, version: int) -> Response:
    if version >= 6 and media_types.plain(request.headers.get("content-type", "")) != PARTIAL_UPLOAD:
        raise UnsupportedMediaType(f"appending takes Content-Type: {PARTIAL_UPLOAD}", code="unsupported-media-type")
    offset = sf_length(request, "upload-offset")
    if offset is None:
        raise BadRequest("Upload-Offset (a non-negative integer) is required", code="missing-offset")
    complete = _completeness(request, version)
    session = await load(services, upload_id, owner)
    if _is_complete(session):
        if has_body(request):
            raise chunks.SessionConflict("this upload is complete; it takes no more bytes", code="length-mismatch")
        raise BadRequest("this upload is already complete", code="completed-upload")
    content_length = bodies.declared_length(request)
    implied = offset + content_length if complete and content_length is not None else None
    length = _consistent(sf_length(request, "upload-length"), implied)
    session = await _transfer(request, services, session, offset, complete, length)
    if complete:
        return _outcome(services, session, version, {}, request)
    return Response(status_code=204, headers=_state_headers(services, session, version, request))


async def _transfer(
    request: Request, services: Services, session: chunks.UploadSession, offset: int, complete: bool, length: int | None
) -> chunks.UploadSession:
    """Append the body; when the request completes the upload, fix its length and complete it."""
    # RFC 9530 Content-Digest: checked while the body streams; on a mismatch nothing is appended.
    checksum = content_digest(request.headers.get("content-digest"))
    # RFC 9530 Repr-Digest: the whole upload, checked by the core before the avatar is made.
    expected = repr_digest(request.headers.get("repr-digest")) if complete else None
    # Claimed by the append's own record only when this request goes on to complete the upload.
    claim = chunks.claim_token() if complete else ""
    session = await services.uploads.append(
        session.id, session.owner, offset, body(request, services), length=length, checksum=checksum, claim_as=claim
    )
    if not complete:
        return session
    if session.length is None:
        session = await services.uploads.declare_length(session, session.offset)
    elif session.length != session.offset:
        raise chunks.SessionConflict(
            f"the upload was declared complete at {session.offset} bytes, but its length is {session.length}",
            code="length-mismatch",
        )
    return await complete_upload(services, session, expected, claimed_as=claim)


def _outcome(
    services: Services, session: chunks.UploadSession, version: int, extra: dict[str, str], request: Request
) -> Response:
    """The response of the resource that processed the whole image, marked `Upload-Complete: ?1`."""
    headers = {
        **extra,
        **completeness_header(version, True),
        "Upload-Offset": str(session.offset),
        **_repr_digest(request, session),
    }
    if session.error_code == "repr-digest-mismatch":
        response = _problem_json(
            400, session.error_code, session.error_message, problem_type=MISMATCHED, title="mismatched digest values"
        )
        response.headers.update(headers)
        return response
    if session.state == chunks.UploadState.FAILED:
        response = _problem(failed_upload(session), services, version, session)
        response.headers.update(headers)
        return response
    return JSONResponse(
        {"message": "profile image updated", "upload_id": session.id, "avatar": session.result}, 200, headers=headers
    )


# -- problems (RFC 9457) ----------------------------------------------------------------------


def _problem_json(
    status: int,
    code: str,
    detail: str,
    *,
    problem_type: str = "about:blank",
    title: str = "",
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body = {
        "type": problem_type,
        "title": title or code.replace("-", " "),
        "status": status,
        "detail": detail,
        "code": code,
        **(extra or {}),
    }
    return JSONResponse(body, status, headers=headers, media_type="application/problem+json")


def _problem(
    problem: Problem, services: Services, version: int, session: chunks.UploadSession | None = None
) -> JSONResponse:
    """A problem as the draft's problem details; a 413 also tells the limits (`Upload-Limit`)."""
    headers = dict(problem.headers)
    if problem.status == 413:
        headers.update(discovery_headers(services, session, version))
        headers.pop("Accept-Patch")
    return _problem_json(problem.status, problem.code, problem.message, headers=headers)


def problem_response(
    services: Services,
    problem: Problem,
    exc: Exception,
    version: int,
    session: chunks.UploadSession | None = None,
    provided: int | None = None,
) -> Response:
    """A failure in the draft's shape; the failures the draft names get its problem types."""
    if isinstance(exc, chunks.OffsetMismatch):
        return _problem_json(
            409,
            "mismatching-upload-offset",
            exc.message,
            problem_type=PROBLEM_TYPES + "mismatching-upload-offset",
            title="offset from request does not match offset of resource",
            extra={"expected-offset": exc.expected, "provided-offset": provided},
            headers={"Upload-Offset": str(exc.expected)},
        )
    if isinstance(exc, chunks.SessionConflict) and exc.code == "length-mismatch":
        return _problem_json(
            400, "inconsistent-upload-length", exc.message, problem_type=PROBLEM_TYPES + "inconsistent-upload-length"
        )
    if isinstance(exc, chunks.ChecksumMismatch):
        return _problem_json(
            400, "digest-mismatch", exc.message, problem_type=MISMATCHED, title="mismatched digest values"
        )
    if isinstance(exc, InvalidDigest):
        return _problem_json(400, exc.code, exc.message, problem_type=INVALID, title="invalid digest values")
    if isinstance(exc, BadRequest) and exc.code == "completed-upload":
        return _problem_json(400, exc.code, exc.message, problem_type=PROBLEM_TYPES + "completed-upload")
    return _problem(problem, services, version, session)
