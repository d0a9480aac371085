"""Why an image was refused: one type per kind of refusal, a machine code on each.

No HTTP here: each protocol module maps these classes to its own status codes.
"""

from __future__ import annotations


class ImageRejected(Exception):
    """An upload that will not become an avatar. `message` never names a path."""

    code: str
    message: str

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self):
        # Rejections cross the process-pool boundary; the default pickling
        # would call cls(message) and lose the code.
        return (type(self), (self.code, self.message))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"


class UnsupportedFormat(ImageRejected):
    """Content is not one of the allowed image formats, whatever its name says."""


class InvalidImage(ImageRejected):
    """Content claims an allowed format but does not decode completely."""


class ImageTooLarge(ImageRejected):
    """The image is over a pixel, side or frame limit (checked before decoding)."""


def unsupported_format(what: str = "This file") -> UnsupportedFormat:
    return UnsupportedFormat(
        "unsupported-format",
        f"{what} is not a supported image; send JPEG, PNG, WebP, GIF, HEIC or AVIF.",
    )


def empty_file() -> InvalidImage:
    return InvalidImage("empty-file", "The file is empty.")


def invalid_image(detail: str = "") -> InvalidImage:
    suffix = f" ({detail})" if detail else ""
    return InvalidImage("invalid-image", f"The image could not be decoded{suffix}.")


def truncated_image() -> InvalidImage:
    return InvalidImage("truncated-image", "The image data ends early; the file is incomplete.")


def too_many_pixels(width: int, height: int, limit: int) -> ImageTooLarge:
    return ImageTooLarge(
        "too-many-pixels",
        f"The image is {width}x{height} pixels; at most {limit} pixels are allowed.",
    )


def side_too_long(width: int, height: int, limit: int) -> ImageTooLarge:
    return ImageTooLarge(
        "image-too-large",
        f"The image is {width}x{height} pixels; each side may be at most {limit} pixels.",
    )


def too_many_frames(frames: int, limit: int) -> ImageTooLarge:
    return ImageTooLarge(
        "too-many-frames",
        f"The animation has {frames} frames; at most {limit} are allowed.",
    )
