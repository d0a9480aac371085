"""Why an image was refused: one type per kind of refusal, a machine code on each.

No HTTP here: each protocol module maps these classes to its own status codes.
"""

from __future__ import annotations


class ImageRejected(Exception):
    """An upload that will not become an avatar. `message` never names a path.

    Takes `(message, *, code=None)` like every error of the upload core; `code` is a stable
    machine-readable string, the class's own when not given."""

    code = "image-rejected"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    # Rejections cross the process-pool boundary: the default pickling calls cls(message) and
    # restores the instance's attributes (its code included) from __dict__.

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r})"


class UnsupportedFormat(ImageRejected):
    """Content is not one of the allowed image formats, whatever its name says."""

    code = "unsupported-format"


class InvalidImage(ImageRejected):
    """Content claims an allowed format but does not decode completely."""

    code = "invalid-image"


class ImageTooLarge(ImageRejected):
    """The image is over a pixel, side or frame limit (checked before decoding)."""

    code = "image-too-large"


def unsupported_format(what: str = "This file") -> UnsupportedFormat:
    return UnsupportedFormat(
        f"{what} is not a supported image; send JPEG, PNG, WebP, GIF, HEIC or AVIF.", code="unsupported-format"
    )


def empty_file() -> InvalidImage:
    return InvalidImage("The file is empty.", code="empty-file")


def invalid_image(detail: str = "") -> InvalidImage:
    suffix = f" ({detail})" if detail else ""
    return InvalidImage(f"The image could not be decoded{suffix}.", code="invalid-image")


def truncated_image() -> InvalidImage:
    return InvalidImage("The image data ends early; the file is incomplete.", code="truncated-image")


def too_many_pixels(width: int, height: int, limit: int) -> ImageTooLarge:
    return ImageTooLarge(
        f"The image is {width}x{height} pixels; at most {limit} pixels are allowed.", code="too-many-pixels"
    )


def side_too_long(width: int, height: int, limit: int) -> ImageTooLarge:
    return ImageTooLarge(
        f"The image is {width}x{height} pixels; each side may be at most {limit} pixels.", code="image-too-large"
    )


def too_many_frames(frames: int, limit: int) -> ImageTooLarge:
    return ImageTooLarge(f"The animation has {frames} frames; at most {limit} are allowed.", code="too-many-frames")


class ImageTooComplex(ImageRejected):
    """The image's structure (scans, chunks) or its decoding time is past a limit: what it would
    cost to decode is out of proportion to its size."""

    code = "image-too-complex"


def too_many_scans(limit: int) -> ImageTooComplex:
    return ImageTooComplex(f"The JPEG has more than {limit} scans; at most {limit} are allowed.", code="too-many-scans")


def too_many_chunks(limit: int) -> ImageTooComplex:
    return ImageTooComplex(
        f"The PNG has more than {limit} chunks; at most {limit} are allowed.", code="too-many-chunks"
    )


def too_many_frames_at_least(limit: int) -> ImageTooLarge:
    return ImageTooLarge(
        f"The animation has more than {limit} frames; at most {limit} are allowed.", code="too-many-frames"
    )


def image_timeout(seconds: float) -> ImageTooComplex:
    return ImageTooComplex(f"The image took longer than {seconds:g} seconds to process.", code="image-timeout")


def worker_died() -> InvalidImage:
    return InvalidImage("The image decoder stopped on this file, twice.", code="invalid-image")


class AvatarStorageUnavailable(Exception):
    """The avatar store's object storage did not answer: nothing changed, try again later."""

    code = "storage-unavailable"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
