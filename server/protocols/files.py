"""The upload resources at `/files/`, shared by tus 1.0.0 and the IETF resumable-upload draft.

A request goes to the first enabled dialect (`server.resumable.Dialect`) that claims it: one
that names `Upload-Draft-Interop-Version` speaks the IETF draft, every other one speaks tus.
`GET` on an upload is neither: it is this server's own status resource, for a client that lost
the final response and wants to know whether its image became the avatar.

The dialects are handed in by the registry (`server.protocols`), so this module imports
neither of them and they do not import each other.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .. import openapi as oa
from ..auth import Principal
from ..endpoint import Endpoint, Endpoints, render_json
from ..resumable import Dialect, effective_method, load, location
from ..services import Services, services_of
from ..upload_description import describe_upload

METHODS = ["GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"]
_api = Endpoints(render_json)


async def status(request: Request, services: Services, principal: Principal) -> Response:
    """`GET /files/{id}`: where an upload stands, and what became of it once complete."""
    session = await load(services, request.path_params["upload_id"], principal.user_id)
    services.uploads.asked_about(session)
    described = describe_upload(session, url=location(request, services, session.id))
    return JSONResponse(described, headers={"Cache-Control": "no-store"})


def routes(dialects: Sequence[Dialect]) -> list[BaseRoute]:
    """The `/files/` routes speaking `dialects`, the first to claim a request answering it."""
    upload_status = _api.authenticated(status)

    async def collection(request: Request) -> Response:
        dialect = _speaker(dialects, request)
        if dialect is None:
            return _not_here()
        response = await dialect.collection(request)
        if effective_method(request) == "OPTIONS":
            _advertise_others(dialects, dialect, request, response)
        return response

    async def resource(request: Request) -> Response:
        if effective_method(request) == "GET":
            return await upload_status(request)
        dialect = _speaker(dialects, request)
        endpoint: Endpoint | None = dialect.resource if dialect is not None else None
        return await endpoint(request) if endpoint is not None else _not_here()

    return [
        Route("/files", collection, methods=METHODS),
        Route("/files/", collection, methods=METHODS),
        Route("/files/{upload_id}", resource, methods=METHODS),
    ]


def _speaker(dialects: Sequence[Dialect], request: Request) -> Dialect | None:
    return next((dialect for dialect in dialects if dialect.claims(request)), None)


def _advertise_others(dialects: Sequence[Dialect], answering: Dialect, request: Request, response: Response) -> None:
    services = services_of(request)
    for other in dialects:
        if other is not answering and other.advertise is not None:
            response.headers.update(other.advertise(services))


def _not_here() -> Response:
    return JSONResponse({"error": "this protocol is switched off", "code": "protocol-disabled"}, 404)


_TAG = "tus / IETF resumable uploads"
_REQUEST_HEADERS = (
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


def openapi_paths() -> oa.Doc:
    """tus 1.0.0 and the IETF resumable-upload draft share the `/files/` uploads."""
    headers = [{"name": h, "in": "header", "required": False, "schema": {"type": "string"}} for h in _REQUEST_HEADERS]
    collection = _collection_paths(headers)
    return {"/files": copy.deepcopy(collection), "/files/": collection, "/files/{upload_id}": _upload_paths(headers)}


def _collection_paths(headers: list[oa.Doc]) -> oa.Doc:
    tag = _TAG
    create = oa.operation(
        "Create an upload (tus creation, creation-with-upload, concatenation; or the IETF draft with "
        "Upload-Complete and Upload-Draft-Interop-Version)",
        tag,
        {
            "201": {
                "description": "Created; Location names the upload",
                "headers": oa.header_schemas("Location", "Tus-Resumable", "Upload-Offset", "Upload-Expires"),
            },
            "200": {"description": "IETF draft: the whole image arrived and became the avatar"},
            "400": oa.error("Invalid headers"),
            **oa.AUTH_ERRORS,
            "412": oa.error("Unsupported Tus-Resumable"),
            "413": oa.error("Larger than Tus-Max-Size"),
        },
        body={"application/offset+octet-stream": oa.BINARY},
        params=headers,
    )
    capabilities = oa.header_schemas("Tus-Version", "Tus-Extension", "Tus-Max-Size", "Tus-Checksum-Algorithm")
    options = oa.operation(
        "Discover the server's tus version, extensions and limits",
        tag,
        {"204": {"description": "Capabilities", "headers": capabilities}},
        auth=False,
    )
    return {"post": create, "options": options}


def _upload_paths(headers: list[oa.Doc]) -> oa.Doc:
    tag = _TAG
    offset = oa.header_schemas("Upload-Offset", "Upload-Length", "Upload-Expires", "Upload-Complete")
    return {
        "get": oa.operation(
            "This server's JSON status of an upload: offset, state, and the avatar once done",
            tag,
            {"200": oa.json_response(oa.ref("StreamUpload")), **oa.AUTH_ERRORS, "404": oa.error("No such upload")},
            params=[oa.UPLOAD_ID],
        ),
        "head": oa.operation(
            "The upload's offset (tus HEAD; IETF offset retrieval)",
            tag,
            {
                "200": {"description": "Offset", "headers": offset},
                "404": {"description": "No such upload"},
                "410": {"description": "Expired"},
            },
            params=[oa.UPLOAD_ID, *headers],
        ),
        "patch": oa.operation(
            "Append bytes at Upload-Offset; the last byte makes the image the avatar",
            tag,
            {
                "204": {"description": "Appended", "headers": oa.header_schemas("Upload-Offset", "Upload-Expires")},
                **oa.AUTH_ERRORS,
                "404": oa.error("No such upload"),
                "409": oa.error("Offset mismatch"),
                "410": oa.error("Expired"),
                "415": oa.error("Wrong content type"),
                "460": oa.error("Checksum mismatch"),
            },
            body={"application/offset+octet-stream": oa.BINARY, "application/partial-upload": oa.BINARY},
            params=[oa.UPLOAD_ID, *headers],
        ),
        "post": oa.operation(
            "Tunnel PATCH, DELETE or HEAD through POST with X-HTTP-Method-Override (tus, for clients "
            "and proxies that cannot send them)",
            tag,
            {"204": {"description": "As the tunnelled method"}, **oa.AUTH_ERRORS, "404": oa.error("No such upload")},
            params=[oa.UPLOAD_ID, *headers],
        ),
        "delete": oa.operation(
            "Cancel an upload (tus termination)",
            tag,
            {"204": {"description": "Cancelled"}, **oa.AUTH_ERRORS, "404": oa.error("No such upload")},
            params=[oa.UPLOAD_ID],
        ),
        "options": oa.operation(
            "Discover capabilities", tag, {"204": {"description": "Capabilities"}}, params=[oa.UPLOAD_ID], auth=False
        ),
    }
