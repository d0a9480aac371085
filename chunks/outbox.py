"""What happened to uploads, recorded in the same Redis step that made it happen.

The upload core knows nothing of webhooks or metrics. It hands each event to an `Outbox`: when
the outbox has a stream key, the event's JSON is XADDed to that Redis stream inside the very
transaction that changes the session (SessionStore), so a state change and its event are
stored together or not at all; the server's delivery loop (server/events.py) reads the stream.
After the transaction commits, `notify` sees the event in this process (the server counts it).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from redis.asyncio.client import Pipeline

from .session import UploadSession, UploadState

UPLOAD_CREATED = "upload.created"
UPLOAD_FINISHED = "upload.finished"
UPLOAD_FAILED = "upload.failed"
UPLOAD_TERMINATED = "upload.terminated"
UPLOAD_EXPIRED = "upload.expired"

# Why a session was deleted (SessionStore.delete's reason) -> the event that reports it.
# "concatenated" parts are not reported: their final upload is.
DELETION_EVENTS = {"abandoned": UPLOAD_TERMINATED, "expired": UPLOAD_EXPIRED}

Notify = Callable[[str, dict[str, Any]], None]
# Given the changed session and the change's outcome: the event to record, or None.
EventOf = Callable[[UploadSession, Any], tuple[str, dict[str, Any]] | None]


def event_body(event_type: str, data: dict[str, Any]) -> bytes:
    """The exact bytes a webhook receives (and signs over): id, type, created_at, data."""
    now = time.time()
    return json.dumps(
        {
            "id": f"evt_{secrets.token_hex(16)}",
            "type": event_type,
            "created_at": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
            "data": data,
        },
        separators=(",", ":"),
    ).encode()


def upload_data(session: UploadSession) -> dict[str, Any]:
    """An upload as events describe it: never its bytes, never a client's credentials."""
    data: dict[str, Any] = {
        "upload_id": session.id,
        "user": session.owner,
        "kind": str(session.kind),
        "length": session.length,
        "received_bytes": session.received_bytes,
        "file_name": session.file_name,
        "content_type": session.content_type,
    }
    if session.state == UploadState.FAILED:
        data["error"] = {"code": session.error_code, "message": session.error_message}
    if session.state == UploadState.DONE and session.result is not None:
        data["result"] = session.result
    return data


def settled_event(session: UploadSession, _outcome: Any = None) -> tuple[str, dict[str, Any]] | None:
    if session.state == UploadState.DONE:
        return UPLOAD_FINISHED, upload_data(session)
    if session.state == UploadState.FAILED:
        return UPLOAD_FAILED, upload_data(session)
    return None


class Outbox:
    """`stream_key`: where events are XADDed (None: nobody listens, only `notify` sees them)."""

    def __init__(self, stream_key: str | None = None, notify: Notify | None = None) -> None:
        self.stream_key = stream_key
        self._notify = notify

    def stage(self, pipe: Pipeline, event_type: str, data: dict[str, Any]) -> None:
        """Queue the event's XADD on `pipe`, inside the caller's MULTI."""
        if self.stream_key is not None:
            pipe.xadd(self.stream_key, {"type": event_type, "body": event_body(event_type, data)})

    def committed(self, event_type: str, data: dict[str, Any]) -> None:
        if self._notify is not None:
            self._notify(event_type, data)

    async def emit(self, pipe: Pipeline, event_type: str, data: dict[str, Any]) -> None:
        """An event on its own (no session change to share a transaction with)."""
        self.stage(pipe, event_type, data)
        await pipe.execute()
        self.committed(event_type, data)
