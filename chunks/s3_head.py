"""The state of one stream in the S3 chunk store: a small JSON object (`head`) replaced atomically.

A stream is an S3 multipart upload of whole parts (each exactly `part_size` bytes, at least the
5 MiB S3 requires of every part but the last) and a tail shorter than a part, kept as small
"segment" objects until enough bytes arrive to make the next part. Uploaded parts and segments
count only once a head names them: one PUT of the head (atomic in S3) moves the stream from one
state to the next, so a process killed at any moment leaves either the old state or the new one,
never a mix, and no byte is counted twice (the tail's bytes are inside the next part before the
head that names that part drops the segments).

Besides the current point the head keeps `acked`: the last point the upload core has recorded
(the previous checkpoint, or where a checksummed body began). Everything it names is kept until a
later head drops it, so `reconcile` can always go back to it, even into bytes that are already
inside an uploaded part; S3 cannot cut a part, but a point is only a list of parts to use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

HEAD_FORMAT = 1


@dataclass(frozen=True)
class Point:
    """A prefix of the stream: parts 1..len(parts) (their ETags) and then the tail segments."""

    parts: tuple[str, ...] = ()
    tail: tuple[tuple[str, int], ...] = ()  # (segment object name, size)

    def size(self, part_size: int) -> int:
        return len(self.parts) * part_size + sum(size for _, size in self.tail)

    def segments(self) -> set[str]:
        return {name for name, _ in self.tail}

    def to_json(self) -> dict:
        return {"parts": list(self.parts), "tail": [list(t) for t in self.tail]}

    @classmethod
    def from_json(cls, raw: dict) -> Point:
        return cls(tuple(raw["parts"]), tuple((str(n), int(s)) for n, s in raw["tail"]))


@dataclass(frozen=True)
class Head:
    part_size: int
    multipart: str | None = None  # the S3 UploadId, made when the first part is uploaded
    now: Point = field(default_factory=Point)
    acked: Point = field(default_factory=Point)
    # The multipart upload was completed into the `data` object (by local_copy): no more parts.
    completed: bool = False

    @property
    def size(self) -> int:
        return self.now.size(self.part_size)

    def segments(self) -> set[str]:
        return self.now.segments() | self.acked.segments()

    def encode(self) -> bytes:
        return json.dumps(
            {
                "format": HEAD_FORMAT,
                "part_size": self.part_size,
                "multipart": self.multipart,
                "now": self.now.to_json(),
                "acked": self.acked.to_json(),
                "completed": self.completed,
            }
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> Head:
        raw = json.loads(data)
        if raw.get("format") != HEAD_FORMAT:
            raise ValueError(f"unknown stream head format {raw.get('format')!r}")
        return cls(
            part_size=int(raw["part_size"]),
            multipart=raw["multipart"],
            now=Point.from_json(raw["now"]),
            acked=Point.from_json(raw["acked"]),
            completed=bool(raw["completed"]),
        )


def reachable(head: Head, offset: int) -> tuple[Point, int] | None:
    """A point of `head` that holds `offset` bytes once its tail is cut there, or None.

    The cut keeps whole segments below `offset`; the returned int is how many bytes of the next
    segment to keep (0: none)."""
    for point in (head.now, head.acked):
        base = len(point.parts) * head.part_size
        if not base <= offset <= point.size(head.part_size):
            continue
        kept: list[tuple[str, int]] = []
        at = base
        for name, size in point.tail:
            if at + size > offset:
                return Point(point.parts, tuple(kept)), offset - at
            kept.append((name, size))
            at += size
        return Point(point.parts, tuple(kept)), 0
    return None


def largest_below(head: Head, offset: int) -> Point:
    """The longest point of `head` not longer than `offset` (whole parts of `now` at worst)."""
    candidates = [p for p in (head.now, head.acked) if p.size(head.part_size) <= offset]
    whole_parts = min(len(head.now.parts), offset // head.part_size)
    candidates.append(Point(head.now.parts[:whole_parts], ()))
    return max(candidates, key=lambda p: p.size(head.part_size))
