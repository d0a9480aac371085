"""The JSON Schemas of `/openapi.json`: the bodies each API sends and takes."""

from __future__ import annotations

from typing import Any

_STR = {"type": "string"}
_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}
_URLS = {"type": "object", "additionalProperties": {"type": "string", "format": "uri-reference"}}
_NULLABLE_STR = {"type": ["string", "null"]}
# Up to 64 entries a plain list of chunk indices; longer, its runs as inclusive [first, last] pairs.
_CHUNK_LIST = {
    "oneOf": [
        {"type": "array", "items": {"type": "integer"}, "maxItems": 64},
        {
            "type": "array",
            "items": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
            "minItems": 1,
        },
    ]
}


def _object(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


SCHEMAS: dict[str, Any] = {
    "Error": _object(["error", "code"], error=_STR, code=_STR),
    "CodedError": _object(["code", "message"], code=_STR, message=_STR),
    "ValidationFailure": _object(
        ["code", "message", "fieldErrors"],
        code={"const": "validation-failure"},
        message=_STR,
        fieldErrors={
            "type": "array",
            "items": _object(
                ["field", "code"],
                field=_STR,
                code={"enum": ["field-missing", "file-too-large", "invalid-file-format", "invalid-url"]},
            ),
        },
    ),
    "Avatar": _object(
        ["version", "sizes", "urls", "content_type"],
        version=_STR,
        sizes={"type": "array", "items": _INT},
        urls=_URLS,
        fallback_urls=_URLS,
        width=_INT,
        height=_INT,
        content_type=_STR,
        fallback_content_type=_STR,
        media_types={"type": "array", "items": _STR},
        source_format=_STR,
        animated=_BOOL,
        updated_at={"type": "string", "format": "date-time"},
    ),
    "ChunkRequest": _object(
        ["file_name", "content_type", "file"],
        file_name={"type": "string", "minLength": 1, "maxLength": 255},
        content_type=_STR,
        file={"type": "string", "contentEncoding": "base64"},
        is_chunk=_BOOL,
        chunk_index=_INT,
        total_chunks=_INT,
        upload_id=_STR,
    ),
    "ChunkUpload": _object(
        [],
        upload_id=_STR,
        state=_STR,
        received_chunks=_CHUNK_LIST,
        missing_chunks=_CHUNK_LIST,
        total_chunks=_INT,
        received_bytes=_INT,
        complete=_BOOL,
        expires_at=_STR,
        avatar={"$ref": "#/components/schemas/Avatar"},
        message=_STR,
    ),
    "StreamUpload": _object(
        ["upload_id", "state", "offset"],
        upload_id=_STR,
        url=_STR,
        state=_STR,
        offset=_INT,
        length={"type": ["integer", "null"]},
        complete=_BOOL,
        partial=_BOOL,
        expires_at=_STR,
    ),
    "PictureRequest": _object(
        ["mime", "dataUri"],
        name=_STR,
        height=_INT,
        width=_INT,
        mime=_STR,
        dataUri={"type": "string", "description": "data:<mime>;base64,<image>"},
    ),
    "Picture": _object(
        ["id", "name", "mime", "width", "height", "url", "avatar"],
        id=_STR,
        name=_STR,
        mime=_STR,
        width=_INT,
        height=_INT,
        url={"type": "string", "format": "uri"},
        avatar={"$ref": "#/components/schemas/Avatar"},
    ),
    "UserData": _object(
        ["data"],
        data=_object(
            ["id", "profile_image"],
            id=_STR,
            first_name=_NULLABLE_STR,
            last_name=_NULLABLE_STR,
            email=_NULLABLE_STR,
            phone_number=_NULLABLE_STR,
            profile_image={"type": "string", "format": "uri"},
        ),
    ),
    "ProfileImage": _object(
        ["id", "status"],
        id=_STR,
        status={"enum": ["downloading", "ready", "failed"]},
        sourceUrl=_STR,
        url={"type": ["string", "null"]},
        urls=_URLS,
        width=_INT,
        height=_INT,
        contentType=_STR,
        updatedAt=_STR,
        reason=_object(["code", "message"], code=_STR, message=_STR),
    ),
    "SettingResponse": _object(
        ["code"],
        code={"type": "integer", "description": "0 on success; the HTTP status on failure"},
        msg=_STR,
        correlation_id={"type": "string", "format": "uuid"},
        error={"type": "string", "description": "Internal detail, only when server.debug is on"},
    ),
}
