"""The OpenAPI 3.1 document served at `/openapi.json`: its vocabulary and its assembly.

Written by hand: each protocol module describes its own paths with these helpers, and the
registry (`server.protocols`) puts the enabled ones together, so a switched-off API is missing
from the document as it is from the server. `tests/e2e/test_openapi.py` checks it against the
routes.
"""

from __future__ import annotations

from typing import Any

from .openapi_schemas import SCHEMAS

Doc = dict[str, Any]
BEARER: list[Doc] = [{"bearerAuth": []}, {"apiKeyAuth": []}]


def ref(name: str) -> Doc:
    return {"$ref": f"#/components/schemas/{name}"}


def json_response(schema: Doc, description: str = "") -> Doc:
    return {"description": description or "JSON", "content": {"application/json": {"schema": schema}}}


def error(description: str, schema: str = "Error") -> Doc:
    return json_response(ref(schema), description)


def path_param(name: str, description: str) -> Doc:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}, "description": description}


def header_schemas(*names: str) -> Doc:
    return {name: {"schema": {"type": "string"}} for name in names}


def operation(
    summary: str,
    tag: str,
    responses: dict[str, Doc],
    *,
    body: Doc | None = None,
    params: list[Doc] | None = None,
    auth: bool = True,
) -> Doc:
    op: Doc = {"summary": summary, "tags": [tag], "responses": responses, "security": BEARER if auth else []}
    if body is not None:
        op["requestBody"] = {"required": True, "content": body}
    if params:
        op["parameters"] = params
    return op


AUTH_ERRORS = {"401": error("Missing, expired or invalid token")}
UPLOAD_ID = path_param("upload_id", "The upload's id, as the server gave it")
BINARY = {"schema": {"type": "string", "format": "binary"}}


def server_paths() -> Doc:
    """The server's own endpoints, there whatever protocols are on."""
    return {
        "/healthz": {
            "get": operation(
                "Liveness and Redis reachability",
                "Server",
                {"200": json_response({"type": "object"}), "503": json_response({"type": "object"})},
                auth=False,
            )
        },
        "/openapi.json": {
            "get": operation("This document", "Server", {"200": json_response({"type": "object"})}, auth=False)
        },
        # Its own bearer token (server.metrics_token), not a user's: see docs/operations.md.
        "/metrics": {
            "get": operation(
                "Prometheus metrics (docs/operations.md)",
                "Server",
                {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "401": error("server.metrics_token is set and was not given"),
                },
                auth=False,
            )
        },
    }


def document(paths: Doc) -> Doc:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Avatar upload server",
            "version": "0.1.0",
            "description": "Resumable profile-image uploads: the chunk JSON API, tus 1.0.0, the IETF "
            "resumable-upload draft and four other profile-image APIs.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "apiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
            },
        },
    }
