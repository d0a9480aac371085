"""The server functions and error classes the unit tests call directly, imported in this one place.

The protocol modules are being reorganised: when one of these moves, is renamed or changes its
arguments, only this module changes and the tests keep describing the same behaviour.
"""

from __future__ import annotations

from redis.exceptions import RedisError

import chunks
from avatars import ImageRejected, ImageTooLarge, InvalidImage, UnsupportedFormat
from server.auth import AuthError
from server.bodies import BodyError, BodyTimeout, BodyTooLarge, Disconnected, InvalidJson
from server.errors import BadRequest, MethodNotAllowed, Problem
from server.errors import problem_for as _problem_for
from server.protocols.chunk_api import _FILE_LITERAL as chunk_file_literal
from server.protocols.chunk_api import _base64
from server.protocols.chunk_api import _check_file_name as check_chunk_file_name
from server.protocols.ietf_draft import _completeness as ietf_completeness
from server.protocols.ietf_draft import _file_name as ietf_file_name
from server.protocols.ietf_draft import sf_boolean, sf_length, version_of
from server.resumable import upload_id_from_url
from server.tus_headers import described_file as tus_described_file
from server.tus_headers import parse_concat as tus_concat
from server.tus_headers import parse_metadata as tus_metadata


def chunk_base64(text: str) -> bytes:
    """The chunk API's `file` decoder, which takes the field out of its document."""
    return _base64({"file": text})


__all__ = [
    "AuthError",
    "BadRequest",
    "BodyError",
    "BodyTimeout",
    "BodyTooLarge",
    "Disconnected",
    "ImageRejected",
    "ImageTooLarge",
    "InvalidImage",
    "InvalidJson",
    "MethodNotAllowed",
    "Problem",
    "RedisError",
    "UnsupportedFormat",
    "check_chunk_file_name",
    "chunk_base64",
    "chunk_file_literal",
    "chunks",
    "error",
    "ietf_completeness",
    "ietf_file_name",
    "problem_for",
    "sf_boolean",
    "sf_length",
    "tus_concat",
    "tus_described_file",
    "tus_metadata",
    "upload_id_from_url",
    "version_of",
]


def error(kind: type[BaseException], message: str = "it failed", code: str = "some-code") -> BaseException:
    """An instance of `kind` with this message and, where the class takes one, this code.

    Every error base takes `(message, *, code)`; the ones with extra data get a neutral value here.
    """
    if issubclass(kind, chunks.OffsetMismatch):
        return kind(message, code=code, expected=0)
    if issubclass(kind, BadRequest | ImageRejected | AuthError | BodyError | chunks.UploadError):
        return kind(message, code=code)
    return kind(message)


def problem_for(exc: BaseException, retry_after: int = 2) -> Problem | None:
    """`server.errors.problem_for` with the configured wait of the default config."""
    return _problem_for(exc, retry_after)
