"""Encodings the JSON upload APIs expect of a client."""

from __future__ import annotations

import base64


def b64(data: bytes) -> str:
    """Standard base64 with padding, as text: what a JSON document carries for bytes."""
    return base64.b64encode(data).decode()
