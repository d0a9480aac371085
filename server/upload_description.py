"""An upload as JSON, for the APIs that let a client ask where its upload stands."""

from __future__ import annotations

import datetime
from typing import Any

import chunks

from .links import absolute


def iso_time(timestamp: float) -> str:
    """A Unix time as ISO 8601 in UTC with a `Z`, as JSON answers write times."""
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat().replace("+00:00", "Z")


# Chunk lists longer than this are given as inclusive [first, last] ranges (README, "Chunk API").
COMPACT_AFTER = 64


def chunk_list(indices: list[int]) -> list[int] | list[list[int]]:
    """Sorted chunk indices as they are answered: the plain list while short, else its runs as
    [first, last] pairs, so an answer about 10,000 chunks stays a few bytes when they are in runs."""
    if len(indices) <= COMPACT_AFTER:
        return indices
    runs: list[list[int]] = []
    for index in indices:
        if runs and runs[-1][1] == index - 1:
            runs[-1][1] = index
        else:
            runs.append([index, index])
    return runs


def _missing(received: list[int], total: int) -> list[int]:
    have = set(received)
    return [i for i in range(total) if i not in have]


def describe_upload(
    session: chunks.UploadSession,
    *,
    url: str | None = None,
    base: str | None = None,
    received: list[int] | None = None,
) -> dict[str, Any]:
    """Where the upload stands and, once settled, what became of it. `url`: the upload's own
    address, when it has one; `base`: make the avatar's URLs absolute against it; `received`:
    the indices of a chunked upload's recorded chunks (`Uploads.chunk_records.indices`)."""
    described: dict[str, Any] = {"upload_id": session.id}
    if url is not None:
        described["url"] = url
    described["state"] = session.state
    if session.kind == chunks.UploadKind.CHUNKED:
        total = session.total_chunks or 0
        if received is None:  # a settled upload had them all
            received = list(range(total)) if session.settled else sorted(int(i) for i in session.received_chunks)
        described |= {
            "received_chunks": chunk_list(received),
            "total_chunks": session.total_chunks,
            "missing_chunks": chunk_list(_missing(received, total)),
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
