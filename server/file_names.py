"""File names a client sends with an image. Never used as a path: recorded and echoed only."""

from __future__ import annotations

MAX_LENGTH = 255


def cleaned(name: str) -> str:
    """The last path segment of `name`, without unprintable characters, at most MAX_LENGTH long:
    for protocols that take whatever name a client declares (tus metadata, Content-Disposition)."""
    last = name.replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(c for c in last if c.isprintable())[:MAX_LENGTH]


def is_plain(name: str) -> bool:
    """Whether `name` is a plain file name: 1 to MAX_LENGTH characters, no path separators, no
    control characters, not `.` or `..` (for protocols that refuse any other name)."""
    if not 0 < len(name) <= MAX_LENGTH or name in {".", ".."}:
        return False
    return not any(c in "/\\" or ord(c) < 32 or ord(c) == 127 for c in name)
