"""RFC 9530 `Want-Repr-Digest` preferences and `Repr-Digest` values read without a server."""

from __future__ import annotations

import base64
import hashlib

import pytest

from server.digest_fields import InvalidDigest, repr_digest, repr_digest_field, wanted_digest

BOTH = ("sha256", "sha512")


@pytest.mark.parametrize(
    ("header", "available", "chosen"),
    [
        ("sha-256=5, sha-512=3", BOTH, "sha-256"),
        ("sha-256=3, sha-512=5", BOTH, "sha-512"),
        ("sha-256=5, sha-512=5", BOTH, "sha-512"),  # a tie goes to the stronger one
        ("sha-256=5,sha-512=5", BOTH, "sha-512"),
        ("md5=10, sha-256=1", BOTH, "sha-256"),  # unknown algorithms are ignored
        ("sha-512=10", ("sha256",), None),  # only what the server keeps
        ("sha-512=0, sha-256=1", BOTH, "sha-256"),  # 0: not acceptable
        ("sha-512=0", BOTH, None),
        ("sha-256=11", BOTH, None),  # outside 0..10
        ("garbage, sha-512=2", BOTH, "sha-512"),
        ("unixsum=3", BOTH, None),
        (None, BOTH, None),
    ],
)
def test_the_most_preferred_supported_algorithm_is_chosen(header, available, chosen):
    wanted = wanted_digest(header, available)
    assert (wanted[0] if wanted else None) == chosen


def test_a_repr_digest_value_is_read_and_written_as_a_byte_sequence():
    digest = hashlib.sha256(b"picture").digest()
    field = repr_digest_field("sha-256", digest)
    assert field == f"sha-256=:{base64.b64encode(digest).decode()}:"
    checksum = repr_digest(field)
    assert checksum is not None and (checksum.algorithm, checksum.digest) == ("sha256", digest)
    with pytest.raises(InvalidDigest):
        repr_digest("sha-256=:AAAA:")
