"""RFC 9530 integrity fields: `Content-Digest`, `Repr-Digest` and `Want-Repr-Digest`.

The IETF resumable-upload draft lets a creation or append request carry `Content-Digest`; the
server checks it against the content while it streams (the chunk store's checksum support,
`chunks.Checksum`) and appends nothing if it does not match. `Repr-Digest` names the whole
upload: the core checks it against the running digest of the stored bytes when the upload
completes (chunks/running_digest.py). `Want-Repr-Digest` asks for that digest in responses.
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
    return _strongest(header, "Content-Digest")


def repr_digest(header: str | None) -> chunks.Checksum | None:
    """The strongest supported digest in a `Repr-Digest` dictionary, read like `content_digest`."""
    return _strongest(header, "Repr-Digest")


def _strongest(header: str | None, field: str) -> chunks.Checksum | None:
    if header is None:
        return None
    found: dict[str, bytes] = {}
    for member in header.split(","):
        match = _MEMBER.fullmatch(member)
        if match is None:
            raise InvalidDigest(f"{field} must be a dictionary of byte sequences", code="invalid-digest")
        key, value = match.group(1), match.group(2)
        if key not in ALGORITHMS:
            continue
        try:
            digest = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            digest = b""
        if len(digest) != ALGORITHMS[key][1]:
            raise InvalidDigest(f"the {key} value of {field} is not a {key} digest", code="invalid-digest")
        found[key] = digest
    for key, (name, _) in ALGORITHMS.items():
        if key in found:
            return chunks.Checksum(name, found[key])
    return None


_PREFERENCE = re.compile(r"\s*([a-z][a-z0-9_.*-]*)\s*=\s*([0-9]{1,2})\s*(?:;[^,]*)?")


def wanted_digest(header: str | None, available: tuple[str, ...]) -> tuple[str, str] | None:
    """The (RFC 9530 key, hashlib name) a `Want-Repr-Digest` prefers most among `available`.

    Preferences are integers 1 (least) to 10; 0 means "not acceptable". Unknown algorithms and
    malformed members are skipped rather than refused: the field only asks for a favour."""
    if header is None:
        return None
    strength = list(reversed(ALGORITHMS))  # ALGORITHMS is strongest first
    best: tuple[int, int, str] | None = None
    for member in header.split(","):
        match = _PREFERENCE.fullmatch(member)
        if match is None or match.group(1) not in ALGORITHMS:
            continue
        key, weight = match.group(1), int(match.group(2))
        if not 1 <= weight <= 10 or ALGORITHMS[key][0] not in available:
            continue
        # Equal preferences: the stronger algorithm wins.
        best = max(best or (weight, strength.index(key), key), (weight, strength.index(key), key))
    return None if best is None else (best[2], ALGORITHMS[best[2]][0])


def repr_digest_field(key: str, digest: bytes) -> str:
    """A `Repr-Digest` value naming one digest."""
    return f"{key}=:{base64.b64encode(digest).decode()}:"
