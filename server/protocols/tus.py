"""tus 1.0.0 at `/files/`: core, creation (+ with-upload, defer-length), termination,
expiration, checksum and concatenation.

Stricter than the reference servers where the text says MUST: 412 with `Tus-Version`, 415 for
a PATCH of another content type, `Upload-Offset` in every 409, `Cache-Control: no-store` on
HEAD, `Upload-Expires` on POST and PATCH, 410 for expired uploads. Every answer carries
`Tus-Resumable`; errors answer `{"error": message, "code": machine_code}`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Collection

from starlette.requests import Request
from starlette.responses import Response

import chunks

from .. import bodies
from ..auth import Principal, verified_principal
from ..endpoint import Endpoints, json_problem
from ..errors import (
    KNOWN,
    BadRequest,
    ContentTooLarge,
    Forbidden,
    MethodNotAllowed,
    PreconditionFailed,
    Problem,
    failed_upload,
    problem_for,
)
from ..resumable import Dialect, body, effective_method, has_body, http_date, load, location
from ..services import Services, complete_upload
from ..tus_headers import (
    CHECKSUM_SIZES,
    VERSION,
    creation_length,
    described_file,
    integer_header,
    parse_checksum,
    parse_concat,
    parse_metadata,
    require_offset_stream,
)

# Always offered: they need nothing of the chunk store beyond appending bytes.
_BASE_EXTENSIONS = ("creation", "creation-with-upload", "creation-defer-length", "termination", "expiration")
# Offered when the chunk store can do them (its features). checksum-trailer is never offered:
# ASGI passes no request trailers (see docs/tus.md).
_STORE_EXTENSIONS = {
    "checksum": ("checksum",),
    # A final upload may name partial uploads that are still receiving bytes: the parts are
    # joined when the last one finishes (chunks/concatenation.py).
    "concatenation": ("concatenation", "concatenation-unfinished"),
}


def extensions(features: Collection[str]) -> str:
    """`Tus-Extension` for a chunk store with `features` (its StoreFeature values)."""
    offered = [name for feature, names in _STORE_EXTENSIONS.items() if feature in features for name in names]
    return ",".join([*_BASE_EXTENSIONS, *offered])


async def _render(request: Request, services: Services, problem: Problem, exc: Exception) -> Response:
    principal = verified_principal(request)
    owner = principal.user_id if principal is not None else None
    return await _error(services, problem, exc, request.path_params.get("upload_id"), owner)


_tus = Endpoints(_render, headers={"Tus-Resumable": VERSION})


def _check_version(request: Request) -> None:
    if request.headers.get("tus-resumable") != VERSION:
        raise PreconditionFailed(
            f"this server speaks tus {VERSION}: send Tus-Resumable: {VERSION}", code="unsupported-tus-version"
        )


async def options(request: Request, services: Services) -> Response:
    headers = {
        "Tus-Version": VERSION,
        "Tus-Extension": extensions(services.uploads.store.features),
        "Tus-Max-Size": str(services.settings.limits.max_image_bytes),
        "Tus-Checksum-Algorithm": ",".join(CHECKSUM_SIZES),
    }
    return Response(status_code=204, headers=headers)


async def _on_collection(request: Request, services: Services, principal: Principal) -> Response:
    method = effective_method(request)
    if method != "POST":
        raise MethodNotAllowed(f"{method} is not allowed on the upload collection", code="method-not-allowed")
    return await create(request, services, principal.user_id)


async def _on_upload(request: Request, services: Services, principal: Principal) -> Response:
    method, upload_id, owner = effective_method(request), request.path_params["upload_id"], principal.user_id
    if method == "HEAD":
        return await head(request, services, owner, upload_id)
    if method == "PATCH":
        return await patch(request, services, owner, upload_id)
    if method == "DELETE":
        await load(services, upload_id, owner)
        await services.uploads.abandon(upload_id, owner)
        return Response(status_code=204)
    raise MethodNotAllowed(f"{method} is not allowed on an upload", code="method-not-allowed")


_options = _tus.public(options)
_collection = _tus.authenticated(_on_collection, check=_check_version)
_upload = _tus.authenticated(_on_upload, check=_check_version)


async def _collection_endpoint(request: Request) -> Response:
    return await (_options if effective_method(request) == "OPTIONS" else _collection)(request)


async def _upload_endpoint(request: Request) -> Response:
    return await (_options if effective_method(request) == "OPTIONS" else _upload)(request)


# tus is the fallback dialect of `/files/`: it takes every request the IETF draft does not claim.
DIALECT = Dialect("tus", claims=lambda request: True, collection=_collection_endpoint, resource=_upload_endpoint)


# -- creation ---------------------------------------------------------------------------------


async def create(request: Request, services: Services, owner: str) -> Response:
    concat, part_ids = parse_concat(request.headers.get("upload-concat"))
    metadata = parse_metadata(request.headers.get("upload-metadata"))
    if concat == "final":
        if "upload-length" in request.headers or "upload-defer-length" in request.headers:
            raise BadRequest("a final upload takes its length from its parts", code="final-with-length")
        session = await _concatenate(services, owner, part_ids, metadata)
        return await _after_creation(request, services, session, complete_upload(services, session))
    length = creation_length(request)
    with_upload = has_body(request)
    if with_upload:
        require_offset_stream(request)
    checksum = parse_checksum(request.headers.get("upload-checksum"))
    file_name, content_type = described_file(metadata)
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
        claim = chunks.claim_token()
        appended = await services.uploads.append(
            session.id, owner, 0, body(request, services), checksum=checksum, claim_as=claim
        )
        return await complete_upload(services, appended, claimed_as=claim)

    return await _after_creation(request, services, session, upload())


async def _after_creation(
    request: Request, services: Services, session: chunks.UploadSession, work: Awaitable[chunks.UploadSession]
) -> Response:
    """Run `work` (the upload's first bytes, its completion); a failure still tells where the upload is."""
    try:
        session = await work
    except KNOWN as exc:
        problem = problem_for(exc, services.retry_after_seconds)
        assert problem is not None
        response = await _error(services, problem, exc, session.id, session.owner)
    else:
        if session.state != chunks.UploadState.FAILED:
            return _created(request, services, session, with_offset=True)
        response = _failed(session)
    response.headers["Location"] = location(request, services, session.id)
    return response


def _created(request: Request, services: Services, session: chunks.UploadSession, *, with_offset: bool) -> Response:
    headers = {"Location": location(request, services, session.id), "Upload-Expires": http_date(session.expires_at)}
    if with_offset and not _waiting_for_parts(session):
        headers["Upload-Offset"] = str(session.offset)
    if session.length is None and not session.parts:
        # Echoed so a client can tell its deferred length was understood (and not taken as 0).
        headers["Upload-Defer-Length"] = "1"
    return Response(status_code=201, headers=headers)


async def _concatenate(
    services: Services, owner: str, part_ids: list[str], metadata: dict[str, str]
) -> chunks.UploadSession:
    try:
        return await services.uploads.concatenate(owner, part_ids, metadata=metadata)
    except (chunks.UploadNotFound, chunks.UploadGone):
        raise BadRequest("a part of this final upload does not exist (or is not yours)", code="unknown-part") from None
    except chunks.SessionConflict as exc:
        raise BadRequest(exc.message, code=exc.code) from None


async def _parts_length(services: Services, final: chunks.UploadSession) -> int | None:
    """The length a final upload will have once joined, if every part's length is known."""
    total = 0
    for part_id in final.parts:
        try:
            part = await services.uploads.get(part_id, final.owner)
        except chunks.UploadError:
            return None
        if part.length is None:
            return None
        total += part.length
    return total


def _waiting_for_parts(session: chunks.UploadSession) -> bool:
    """A final upload whose partial uploads are not all finished yet (concatenation-unfinished)."""
    return bool(session.parts) and session.length is None


# -- an upload --------------------------------------------------------------------------------


async def head(request: Request, services: Services, owner: str, upload_id: str) -> Response:
    await load(services, upload_id, owner)
    session = await services.uploads.current(upload_id, owner)
    headers = {"Cache-Control": "no-store", "Upload-Expires": http_date(session.expires_at)}
    # tus 1.0.0, concatenation: "The response to a HEAD request for a final upload SHOULD NOT
    # contain the Upload-Offset header unless the concatenation has been successfully finished."
    if not _waiting_for_parts(session):
        headers["Upload-Offset"] = str(session.offset)
    length = session.length if not _waiting_for_parts(session) else await _parts_length(services, session)
    if length is not None:
        headers["Upload-Length"] = str(length)
    elif not session.parts:
        headers["Upload-Defer-Length"] = "1"
    if session.metadata:
        headers["Upload-Metadata"] = ",".join(f"{k} {v}".rstrip() for k, v in session.metadata.items())
    if session.partial:
        headers["Upload-Concat"] = "partial"
    elif session.parts:
        urls = " ".join(location(request, services, part) for part in session.parts)
        headers["Upload-Concat"] = f"final;{urls}"
    return Response(status_code=200, headers=headers)


async def patch(request: Request, services: Services, owner: str, upload_id: str) -> Response:
    require_offset_stream(request)
    offset = integer_header(request, "upload-offset")
    if offset is None:
        raise BadRequest("Upload-Offset is required", code="missing-offset")
    length = integer_header(request, "upload-length")
    checksum = parse_checksum(request.headers.get("upload-checksum"))
    declared = bodies.declared_length(request)

    def check(session: chunks.UploadSession) -> None:
        if session.kind != chunks.UploadKind.STREAM:
            raise chunks.UploadNotFound("no such upload")
        if session.parts:
            # tus 1.0.0, concatenation: "The Server MUST respond with the 403 Forbidden status to
            # PATCH requests against a final upload URL", finished or still waiting for its parts.
            raise Forbidden("a final upload is made of its parts and takes no PATCH", code="final-upload")
        known = length if length is not None else session.length
        if declared is not None and known is not None and offset + declared > known:
            raise ContentTooLarge(
                f"the body would take the upload past its length of {known} bytes", code="length-exceeded"
            )

    claim = chunks.claim_token()
    if has_body(request):
        # Checked on the record the append reads under the lock: no separate read before it.
        session = await services.uploads.append(
            upload_id,
            owner,
            offset,
            body(request, services),
            length=length,
            checksum=checksum,
            check=check,
            claim_as=claim,
        )
    else:
        session = await load(services, upload_id, owner)
        check(session)
        # A retry of the request that completed the upload (no new bytes) gets its outcome again,
        # and so does an empty PATCH at the end of an upload that has every byte: its completion
        # may be under way already (the sweeper, a HEAD), which an append would answer 409.
        open_for_bytes = session.state == chunks.UploadState.OPEN and not session.all_received
        if open_for_bytes or offset != session.offset or length is not None:
            session = await services.uploads.append(
                upload_id, owner, offset, body(request, services), length=length, checksum=checksum, claim_as=claim
            )
    session = await complete_upload(services, session, claimed_as=claim)
    if session.state == chunks.UploadState.FAILED:
        return _failed(session)
    return Response(
        status_code=204,
        headers={"Upload-Offset": str(session.offset), "Upload-Expires": http_date(session.expires_at)},
    )


# -- failures ---------------------------------------------------------------------------------


def _failed(session: chunks.UploadSession) -> Response:
    """An upload whose image was refused: its stored failure, and where the upload stands."""
    response = json_problem(failed_upload(session), upload_id=session.id, state=session.state)
    response.headers.update({"Upload-Offset": str(session.offset), "Upload-Expires": http_date(session.expires_at)})
    return response


async def _error(
    services: Services, problem: Problem, exc: Exception, upload_id: str | None, owner: str | None
) -> Response:
    """The tus answer to a failure: `Tus-Version` on 412; the current `Upload-Offset` on every
    409 and `Upload-Expires` whenever the upload is known."""
    headers = dict(problem.headers)
    if problem.status == 412:
        headers["Tus-Version"] = VERSION
    session = await _session_or_none(services, upload_id, owner) if problem.status not in (404, 410) else None
    if session is not None:
        headers["Upload-Expires"] = http_date(session.expires_at)
    if problem.status == 409:
        offset = exc.expected if isinstance(exc, chunks.OffsetMismatch) else session.offset if session else None
        if offset is not None:
            headers["Upload-Offset"] = str(offset)
    return json_problem(Problem(problem.status, problem.code, problem.message, headers))


async def _session_or_none(services: Services, upload_id: str | None, owner: str | None) -> chunks.UploadSession | None:
    if upload_id is None or owner is None:
        return None
    try:
        return await services.uploads.get(upload_id, owner)
    except chunks.UploadError:
        return None
