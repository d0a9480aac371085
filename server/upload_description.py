"""An upload as JSON, for the APIs that let a client ask where its upload stands."""

from __future__ import annotations

import datetime
from typing import Any

import chunks

from .links import absolute


def iso_time(timestamp: float) -> str:
    """A Unix time as ISO 8601 in UTC with a `Z`, as JSON answers write times."""
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat().replace("+00:00", "Z")


def describe_upload(
    session: chunks.UploadSession, *, url: str | None = None, base: str | None = None
) -> dict[str, Any]:
    """Where the upload stands and, once settled, what became of it. `url`: the upload's own
    address, when it has one; `base`: make the avatar's URLs absolute against it."""
    described: dict[str, Any] = {"upload_id": session.id}
    if url is not None:
        described["url"] = url
    described["state"] = session.state
    if session.kind == chunks.UploadKind.CHUNKED:
        described |= {
            "received_chunks": sorted(int(i) for i in session.received_chunks),
            "total_chunks": session.total_chunks,
            "missing_chunks": session.missing_chunks(),
            "received_bytes": session.received_bytes,
        }
    else:
        described |= {"offset": session.offset, "length": session.length, "partial": session.partial}
    described |= {
        "complete": session.state == chunks.UploadState.DONE,
        "file_name": session.file_name,
        "content_type": session.content_type,
        "expires_at": iso_time(session.expires_at),
    }
    if session.state == chunks.UploadState.DONE and session.result is not None:
        described["avatar"] = session.result if base is None else absolute(session.result, base)
    if session.state == chunks.UploadState.FAILED:
        described["failure"] = {"code": session.error_code, "error": session.error_message}
    return described
