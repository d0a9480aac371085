"""The synchronous heart of the pipeline; runs inside a pool worker process.

Order matters for speed and safety: sniff the content, open with the one
matching decoder, check every limit from the header, then decode (at reduced
scale for JPEG), crop and resize in the source colour space, and only then do
the per-pixel work (ICC to sRGB, orientation) on the small square.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageFile

from avatars import errors
from avatars._animation import write_animated
from avatars._imaging import _UPRIGHT, decoding, encode, finish_square, normalize_mode, write_file
from avatars._sniff import sniff_file
from avatars._structure import check_structure
from avatars.processing import DeferredFallback, DeferredSizes, PipelineSettings, ProcessedAvatar, Rendition

_OPENERS = {
    "JPEG": ["JPEG", "MPO"],  # a JPEG with multi-picture data opens as MPO
    "PNG": ["PNG"],
    "GIF": ["GIF"],
    "WEBP": ["WEBP"],
    "HEIF": ["HEIF"],
    "AVIF": ["AVIF"],
}

# MPO pictures and HEIF image collections are stereo pairs or bursts, not animations.
_ANIMATED_FORMATS = {"GIF", "WEBP", "AVIF"}

_EXIF_ORIENTATION = 0x0112

# Like Pillow's reducing_gap=2.0: box-reduce to at most twice the target, then Lanczos.
_REDUCING_GAP = 2
_PREMULTIPLIED = {"RGBA": "RGBa", "LA": "La"}
_UNPREMULTIPLIED = {v: k for k, v in _PREMULTIPLIED.items()}


def init_worker(max_pixels: int) -> None:
    """Process-wide decoder settings, set once per pool worker."""
    # Pillow warns above MAX_IMAGE_PIXELS and raises above twice it; we turn the
    # warning into an error (see decoding), so this is a hard second guard.
    Image.MAX_IMAGE_PIXELS = max_pixels
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    import pillow_heif

    pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)


def render_avatar(source: Path, workdir: Path, settings: PipelineSettings) -> ProcessedAvatar:
    source_format = sniff_file(source)
    check_structure(source, source_format, settings)
    workdir.mkdir(parents=True, exist_ok=True)
    with decoding():
        im = Image.open(source, formats=_OPENERS[source_format])
    with im:
        _check_limits(im, settings)
        width, height = im.size
        orientation = _orientation(im)
        icc_profile = im.info.get("icc_profile")
        frames = _frame_count(im)
        if frames > settings.max_frames:
            raise errors.too_many_frames(frames, settings.max_frames)
        square = finish_square(_decode_square(im, source, max(settings.sizes), source_format), icc_profile, orientation)
        renditions = _write_renditions(square, workdir, settings, tag_srgb=bool(icc_profile))
        if settings.keep_animation and frames > 1 and source_format in _ANIMATED_FORMATS:
            renditions += write_animated(im, frames, workdir, settings, icc_profile, orientation)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    fallback = DeferredFallback("image/png" if square.mode == "RGBA" else "image/jpeg", settings.jpeg_quality)
    smaller = _deferred_sizes(settings)
    return ProcessedAvatar(
        source_format=source_format,
        width=width,
        height=height,
        has_alpha=square.mode == "RGBA",
        renditions=tuple(renditions),
        digest=_digest(renditions, fallback, smaller),
        fallback=fallback,
        smaller=smaller,
    )


def _check_limits(im: Image.Image, settings: PipelineSettings) -> None:
    width, height = im.size
    if width < 1 or height < 1:
        raise errors.invalid_image()
    if width * height > settings.max_pixels:
        raise errors.too_many_pixels(width, height, settings.max_pixels)
    if max(width, height) > settings.max_side:
        raise errors.side_too_long(width, height, settings.max_side)


def _frame_count(im: Image.Image) -> int:
    with decoding():
        frames = getattr(im, "n_frames", 1)
    return frames


def _orientation(im: Image.Image) -> int:
    # A damaged EXIF block is common on phone photos and is thrown away anyway:
    # it must not cost the upload, only the rotation hint.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = im.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - any malformed EXIF only loses the rotation hint
        return 1
    return value if value in _UPRIGHT else 1


def _decode_square(im: Image.Image, source: Path, target: int, source_format: str) -> Image.Image:
    """Decode (fully) and return the centre square resized to target, stored orientation."""
    width, height = im.size
    if source_format == "JPEG":
        scale = target / min(width, height)
        if scale < 1:
            # libjpeg decodes at 1/2, 1/4 or 1/8 scale directly from the DCT
            # coefficients: a 24 MP photo never exists at full size in memory.
            im.draft(None, (math.ceil(width * scale), math.ceil(height * scale)))
            width, height = im.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    box = (left, top, left + side, top + side)
    factor = side // (target * _REDUCING_GAP)
    if source_format == "HEIF" and factor >= 2:
        crop = _heif_bands(source, im.size)
    else:
        with decoding():
            im.load()
        crop = im.crop
    if factor < 2:
        return normalize_mode(im).resize((target, target), Image.Resampling.LANCZOS, box=box)
    reduced = _reduce_in_bands(crop, box, factor)
    resized = reduced.resize((target, target), Image.Resampling.LANCZOS)
    return resized.convert(_UNPREMULTIPLIED[resized.mode]) if resized.mode in _UNPREMULTIPLIED else resized


def _heif_bands(source: Path, size: tuple[int, int]) -> Callable[[tuple[int, int, int, int]], Image.Image]:
    """Bands cut straight from libheif's decoded buffer.

    Pillow's HEIF plugin copies the decoded picture into a second, 4-bytes-per-
    pixel image (48 MB more for 12 MP); reading bands from libheif's own
    buffer keeps a 12 MP HEIC well under the memory budget.
    """
    import pillow_heif

    with decoding():
        heif = pillow_heif.open_heif(source, convert_hdr_to_8bit=True)
        picture = heif[heif.primary_index]
        data, mode, stride = picture.data, picture.mode, picture.stride
    if picture.size != size or mode not in ("RGB", "RGBA", "L"):
        raise errors.invalid_image()

    def crop(box: tuple[int, int, int, int]) -> Image.Image:
        left, top, right, bottom = box
        rows = memoryview(data)[top * stride : bottom * stride]
        # A memoryview is a buffer like the bytes Pillow's stubs name; slicing it copies nothing.
        band = Image.frombuffer(mode, (size[0], bottom - top), rows, "raw", mode, stride, 1)  # type: ignore[arg-type]
        return band.crop((left, 0, right, bottom - top))

    return crop


def _reduce_in_bands(
    crop: Callable[[tuple[int, int, int, int]], Image.Image], box: tuple[int, int, int, int], factor: int
) -> Image.Image:
    """Box-average `box` down by `factor`, a band of rows at a time.

    Mode conversion (palette to RGBA, 16-bit to 8-bit) and alpha
    premultiplication each copy the whole image when done by Pillow in one
    go; per band, a 4000x4000 RGBA PNG needs ~4 MB extra instead of ~64 MB.
    """
    left, top, right, bottom = box
    band = factor * max(1, 256 // factor)
    reduced: Image.Image | None = None
    for y in range(top, bottom, band):
        piece = normalize_mode(crop((left, y, right, min(y + band, bottom))))
        if piece.mode in _PREMULTIPLIED:
            piece = piece.convert(_PREMULTIPLIED[piece.mode])  # so colour under transparency does not bleed
        piece = piece.reduce(factor)
        if reduced is None:
            size = -(-(right - left) // factor), -(-(bottom - top) // factor)
            reduced = Image.new(piece.mode, size)
        reduced.paste(piece, (0, (y - top) // factor))
    assert reduced is not None
    return reduced


def _write_renditions(
    square: Image.Image, workdir: Path, settings: PipelineSettings, tag_srgb: bool = False
) -> list[Rendition]:
    """The largest size's WebP only: the smaller sizes and the fallbacks are made by the store from
    it when first asked for (avatars/_fallback.py). Profiled, the three smaller sizes' resizes and
    encodes were ~10 ms of a photo's ~36 ms in its worker, and each was one more file to sync."""
    size = max(settings.sizes)
    sized = square if square.width == size else square.resize((size, size), Image.Resampling.LANCZOS)
    data = encode(sized, "webp", settings, tag_srgb)
    return [write_file(data, workdir / f"{size}.webp", size, "webp")]


def _deferred_sizes(settings: PipelineSettings) -> DeferredSizes | None:
    smaller = tuple(sorted(set(settings.sizes) - {max(settings.sizes)}, reverse=True))
    return DeferredSizes(smaller, settings.webp_quality, settings.webp_method) if smaller else None


def _digest(renditions: list[Rendition], fallback: DeferredFallback, smaller: DeferredSizes | None) -> str:
    h = hashlib.sha256()
    for r in renditions:
        h.update(f"{r.size} {r.media_type} {int(r.animated)} {r.sha256}\n".encode())
    h.update(f"fallback {fallback.media_type} {fallback.quality}\n".encode())
    if smaller is not None:  # other sizes or encoder settings make other bytes: another version
        h.update(f"smaller {smaller.sizes} {smaller.quality} {smaller.method}\n".encode())
    return h.hexdigest()[:32]
