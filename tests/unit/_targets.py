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
from server.chunk_api import _base64 as chunk_base64
from server.chunk_api import _check_file_name as check_chunk_file_name
from server.errors import BadRequest, Problem, problem_for
from server.ietf import _completeness as ietf_completeness
from server.ietf import _file_name as ietf_file_name
from server.ietf import sf_boolean, sf_length, version_of
from server.tus import _concat as tus_concat
from server.tus import _described_file as tus_described_file
from server.tus import parse_metadata as tus_metadata
from server.upload_resource import upload_id_from_url

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
    "Problem",
    "RedisError",
    "UnsupportedFormat",
    "check_chunk_file_name",
    "chunk_base64",
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


def error(
    kind: type[BaseException], message: str = "it failed", code: str = "some-code", *, status: int = 400
) -> BaseException:
    """An instance of `kind` with this message and, where the class takes them, this code and status.

    The error bases take their arguments in different orders today; this is the one place that knows them.
    """
    if issubclass(kind, BadRequest):
        return kind(message, code, status)
    if issubclass(kind, ImageRejected):
        return kind(code, message)
    if issubclass(kind, AuthError):
        return kind(message, code)
    if issubclass(kind, chunks.OffsetMismatch):
        return kind(message, expected=0)
    if issubclass(kind, chunks.UploadError):
        return kind(message, code=code)
    return kind(message)
