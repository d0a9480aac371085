"""RFC 9530 integrity fields on requests: `Content-Digest` of one request's content.

The IETF resumable-upload draft lets a creation or append request carry `Content-Digest`; the
server checks it against the content while it streams (the chunk store's checksum support,
`chunks.Checksum`) and appends nothing if it does not match.
"""

from __future__ import annotations

import base64
import binascii
import re

import chunks

from .errors import BadRequest

# RFC 9530 algorithm key -> (hashlib name, digest size). Strongest first: the one checked.
ALGORITHMS = {"sha-512": ("sha512", 64), "sha-256": ("sha256", 32)}
PROBLEM_TYPES = "https://iana.org/assignments/http-problem-types#"
# The IANA "HTTP Problem Types" registry's entries for digest fields (all with status 400).
MISMATCHED = PROBLEM_TYPES + "digest-mismatched-values"
INVALID = PROBLEM_TYPES + "digest-invalid-values"
_MEMBER = re.compile(r"\s*([a-z][a-z0-9_.*-]*)\s*=\s*:([A-Za-z0-9+/=]*):\s*(?:;[^,]*)?")


class InvalidDigest(BadRequest):
    """A digest value that cannot come from its algorithm (wrong size, not base64)."""


def content_digest(header: str | None) -> chunks.Checksum | None:
    """The strongest supported digest in a `Content-Digest` dictionary; None if none is usable.

    Unknown algorithms are ignored, as RFC 9530 lets a recipient do; a value that is not a
    digest of its (supported) algorithm is refused."""
    if header is None:
        return None
    found: dict[str, bytes] = {}
    for member in header.split(","):
        match = _MEMBER.fullmatch(member)
        if match is None:
            raise InvalidDigest("Content-Digest must be a dictionary of byte sequences", code="invalid-digest")
        key, value = match.group(1), match.group(2)
        if key not in ALGORITHMS:
            continue
        try:
            digest = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            digest = b""
        if len(digest) != ALGORITHMS[key][1]:
            raise InvalidDigest(f"the {key} value of Content-Digest is not a {key} digest", code="invalid-digest")
        found[key] = digest
    for key, (name, _) in ALGORITHMS.items():
        if key in found:
            return chunks.Checksum(name, found[key])
    return None
