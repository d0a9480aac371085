"""tus 1.0.0 request headers: parsed and checked before a request touches an upload.

Kept apart from `server.protocols.tus` (which answers the requests) so that the parsing rules
can be read, and unit-tested, on their own. Every refusal is a BadRequest (or another 4xx)
with a machine-readable code.
"""

from __future__ import annotations

import base64
import binascii

from starlette.requests import Request

import chunks

from . import file_names
from .errors import BadRequest, UnsupportedMediaType
from .resumable import upload_id_from_url

VERSION = "1.0.0"
CHECKSUM_SIZES = {"sha1": 20, "md5": 16, "sha256": 32}
OFFSET_STREAM = "application/offset+octet-stream"
_MAX_METADATA = 8192
_MAX_PARTS = 1000


def parse_concat(header: str | None) -> tuple[str | None, list[str]]:
    """`Upload-Concat`: (None | "partial" | "final", the final upload's part ids in order)."""
    if header is None:
        return None, []
    value = header.strip()
    if value == "partial":
        return "partial", []
    kind, _, urls = value.partition(";")
    if kind != "final" or not urls.split():
        raise BadRequest("Upload-Concat must be 'partial' or 'final;<url> <url> ...'", code="invalid-concat")
    part_ids = []
    for url in urls.split():
        upload_id = upload_id_from_url(url)
        if upload_id is None:
            raise BadRequest(f"{url[:100]!r} is not an upload of this server", code="invalid-concat")
        part_ids.append(upload_id)
    if len(set(part_ids)) != len(part_ids) or len(part_ids) > _MAX_PARTS:
        raise BadRequest(f"a final upload names each part once, at most {_MAX_PARTS} parts", code="invalid-concat")
    return "final", part_ids


def parse_metadata(header: str | None) -> dict[str, str]:
    """`Upload-Metadata` as key -> base64 value (kept as sent, so HEAD can echo it)."""
    if header is None or not header.strip():
        return {}
    if len(header) > _MAX_METADATA:
        raise BadRequest(f"Upload-Metadata is limited to {_MAX_METADATA} characters", code="invalid-metadata")
    metadata: dict[str, str] = {}
    for pair in header.split(","):
        key, _, value = pair.strip().partition(" ")
        value = value.strip()
        if not key or not key.isascii() or not key.isprintable() or key in metadata:
            raise BadRequest("Upload-Metadata keys must be unique, non-empty ASCII words", code="invalid-metadata")
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(f"the Upload-Metadata value of {key!r} is not base64", code="invalid-metadata") from None
        metadata[key] = value
    return metadata


def described_file(metadata: dict[str, str]) -> tuple[str, str]:
    """The `filename` and `filetype` the client sent, made safe to record (never used as a path)."""
    name = file_names.cleaned(_decoded(metadata.get("filename", "")))
    file_type = _decoded(metadata.get("filetype", "")).strip().lower()
    if len(file_type) > 100 or not file_type.isascii() or not file_type.isprintable():
        file_type = ""
    return name, file_type


def _decoded(value: str) -> str:
    try:
        return base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return ""


def integer_header(request: Request, name: str) -> int | None:
    value = request.headers.get(name)
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit() or not value.isascii() or len(value) > 15:
        raise BadRequest(f"{name.title()} must be a non-negative integer", code="invalid-header")
    return int(value)


def creation_length(request: Request) -> int | None:
    """The declared `Upload-Length`, or None for `Upload-Defer-Length: 1`; exactly one is sent."""
    length = integer_header(request, "upload-length")
    deferred = request.headers.get("upload-defer-length")
    if deferred is not None and deferred != "1":
        raise BadRequest("Upload-Defer-Length must be 1", code="invalid-defer-length")
    if (length is None) == (deferred is None):
        raise BadRequest("send exactly one of Upload-Length and Upload-Defer-Length: 1", code="invalid-length")
    return length


def parse_checksum(header: str | None) -> chunks.Checksum | None:
    if header is None:
        return None
    algorithm, _, encoded = header.strip().partition(" ")
    if algorithm not in CHECKSUM_SIZES:
        raise BadRequest(
            f"checksum algorithm {algorithm[:20]!r} is not supported; use one of {', '.join(CHECKSUM_SIZES)}",
            code="unsupported-checksum-algorithm",
        )
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != CHECKSUM_SIZES[algorithm]:
        raise BadRequest(f"the {algorithm} checksum must be a base64 {algorithm} digest", code="invalid-checksum")
    return chunks.Checksum(algorithm, digest)


def require_offset_stream(request: Request) -> None:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != OFFSET_STREAM:
        raise UnsupportedMediaType(
            f"upload bodies must be sent as Content-Type: {OFFSET_STREAM}", code="unsupported-media-type"
        )
