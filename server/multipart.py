"""multipart/form-data bodies, streamed: the file field to disk under a size cap, never into memory.

Starlette's `request.form()` has no size cap on file parts, so the APIs that take a multipart
`file` (user_image_api, profile_image_api) feed the body to python-multipart's streaming parser.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import aiofiles
import aiofiles.os
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from . import bodies
from .bodies import BodyError, BodyPace, BodyTooLarge

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

# Room for part headers, boundaries and a few small text fields next to the file.
_OVERHEAD = 64 * 1024
_MAX_FIELD_BYTES = 16 * 1024


class FormError(BodyError):
    code = "invalid-multipart"


class FileTooLarge(BodyTooLarge):
    code = "file-too-large"


@dataclass
class FormUpload:
    """What a multipart body held: the file field on disk (if sent) and the small text fields."""

    path: Path
    received: bool = False  # whether the file field was present at all
    size: int = 0
    file_name: str = ""
    content_type: str = ""
    fields: dict[str, str] = field(default_factory=dict)

    async def discard(self) -> None:
        try:
            await aiofiles.os.remove(self.path)
        except FileNotFoundError:
            pass


def is_multipart(request: Request) -> bool:
    kind, _ = parse_options_header(request.headers.get("content-type"))
    return kind == b"multipart/form-data"


class _Parts:
    """python-multipart callbacks: route the wanted file field to `pending`, keep text fields."""

    def __init__(self, upload: FormUpload, file_field: str, max_file_bytes: int):
        self.upload, self.file_field, self.max_file_bytes = upload, file_field, max_file_bytes
        self.pending: list[bytes] = []
        self.ended = False
        self._headers: dict[bytes, bytes] = {}
        self._header_name = self._header_value = b""
        self._field_name: str | None = None  # the text field being read; None while in the file
        self._field_value = bytearray()
        self._in_file = False
        self._field_bytes = 0

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value_part,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._headers, self._in_file, self._field_name = {}, False, None
        self._field_value = bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_part(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_name.strip().lower()] = self._header_value.strip()
        self._header_name = self._header_value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name == self.file_field and not self.upload.received:
            self._in_file = True
            self.upload.received = True
            self.upload.file_name = options.get(b"filename", b"").decode("utf-8", "replace")
            self.upload.content_type = self._headers.get(b"content-type", b"").decode("latin-1")
        else:
            self._field_name = name

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self.upload.size += end - start
            if self.upload.size > self.max_file_bytes:
                raise FileTooLarge(f"the file is larger than {self.max_file_bytes} bytes")
            self.pending.append(data[start:end])
            return
        self._field_bytes += end - start
        if self._field_bytes > _MAX_FIELD_BYTES:
            raise FormError("the form's text fields are too large")
        self._field_value += data[start:end]

    def _part_end(self) -> None:
        if self._field_name is not None:
            self.upload.fields.setdefault(self._field_name, self._field_value.decode("utf-8", "replace"))
        self._in_file, self._field_name = False, None

    def _end(self) -> None:
        self.ended = True


async def receive(
    request: Request, file_field: str, directory: Path, max_file_bytes: int, pace: BodyPace
) -> FormUpload:
    """Stream a multipart body; the part named `file_field` goes to a new file in `directory`.

    Raises FormError for a body that is not well-formed multipart, FileTooLarge past
    `max_file_bytes`; the file is removed on any failure, and the caller discards it after use."""
    kind, options = parse_options_header(request.headers.get("content-type"))
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise FormError("the body must be multipart/form-data with a boundary")
    upload = FormUpload(directory / f"form-{secrets.token_hex(12)}")
    parts = _Parts(upload, file_field, max_file_bytes)
    try:
        parser = MultipartParser(boundary, parts.callbacks())
    except (MultipartParseError, ValueError):
        raise FormError("the multipart boundary is not valid") from None
    try:
        async with aiofiles.open(upload.path, "wb") as out:
            async for block in bodies.stream(request, max_file_bytes + _OVERHEAD, pace):
                parser.write(block)
                if parts.pending:
                    await out.write(b"".join(parts.pending))
                    parts.pending.clear()
        parser.finalize()
        if not parts.ended:
            raise FormError("the multipart body ends before its closing boundary")
    except BodyTooLarge as exc:
        await upload.discard()
        raise FileTooLarge(exc.message) from None
    except MultipartParseError:
        await upload.discard()
        raise FormError("the body is not well-formed multipart/form-data") from None
    except BaseException:
        await upload.discard()
        raise
    return upload
