"""The image media types clients may declare, and what each names."""

from __future__ import annotations

IMAGE_TYPES = frozenset(
    {
        "image/jpeg",
        "image/jpg",
        "image/pjpeg",
        "image/png",
        "image/webp",
        "image/gif",
        "image/heic",
        "image/heif",
        "image/avif",
    }
)
# Media types that name the same format; a client may say image/jpg and mean image/jpeg.
_SAME_AS = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/heif": "image/heic"}
# The media type of each format the image pipeline reports (`ProcessedAvatar.source_format`).
_OF_FORMAT = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "HEIF": "image/heic",
    "AVIF": "image/avif",
}


def plain(media_type: str) -> str:
    """`media_type` without parameters, in lower case."""
    return media_type.split(";")[0].strip().lower()


def canonical(media_type: str) -> str:
    """The one name of the format `media_type` names (image/jpg -> image/jpeg)."""
    bare = plain(media_type)
    return _SAME_AS.get(bare, bare)


def of_format(source_format: str) -> str | None:
    return _OF_FORMAT.get(source_format)
