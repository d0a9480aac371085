"""The synchronous heart of the pipeline; runs inside a pool worker process.

Order matters for speed and safety: sniff the content, open with the one
matching decoder, check every limit from the header, then decode (at reduced
scale for JPEG), crop and resize in the source colour space, and only then do
the per-pixel work (ICC to sRGB, orientation) on the small square.
"""

from __future__ import annotations

import hashlib
import io
import math
import struct
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image, ImageCms, ImageFile

from avatars import errors
from avatars._sniff import sniff_file
from avatars._structure import check_structure
from avatars.pipeline import PipelineSettings, ProcessedAvatar, Rendition

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

_T = Image.Transpose
# EXIF orientation -> the transpose that makes the stored pixels upright.
_UPRIGHT = {
    2: _T.FLIP_LEFT_RIGHT,
    3: _T.ROTATE_180,
    4: _T.FLIP_TOP_BOTTOM,
    5: _T.TRANSPOSE,
    6: _T.ROTATE_270,
    7: _T.TRANSVERSE,
    8: _T.ROTATE_90,
}
_EXIF_ORIENTATION = 0x0112

_SRGB = ImageCms.createProfile("sRGB")
# Outputs converted from a source's own profile say so: they carry this sRGB profile. Sources
# without one are sRGB by convention and stay untagged (a profile is ~600 bytes of a 2 KB avatar).
# lcms stamps the creation time into the header (bytes 24-35); pin it, or two pool workers
# started a second apart would write different bytes for the same avatar. (The profile ID,
# which would cover the date, is left unset by lcms.)
_SRGB_PROFILE = bytearray(ImageCms.ImageCmsProfile(_SRGB).tobytes())
_SRGB_PROFILE[24:36] = struct.pack(">6H", 2024, 1, 1, 0, 0, 0)
_SRGB_ICC = bytes(_SRGB_PROFILE)

# Like Pillow's reducing_gap=2.0: box-reduce to at most twice the target, then Lanczos.
_REDUCING_GAP = 2
_PREMULTIPLIED = {"RGBA": "RGBa", "LA": "La"}
_UNPREMULTIPLIED = {v: k for k, v in _PREMULTIPLIED.items()}

MEDIA_TYPES = {"webp": "image/webp", "jpg": "image/jpeg", "png": "image/png"}


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
            from avatars._animation import write_animated

            renditions += write_animated(im, frames, workdir, settings, icc_profile, orientation)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return ProcessedAvatar(
        source_format=source_format,
        width=width,
        height=height,
        has_alpha=square.mode == "RGBA",
        renditions=tuple(renditions),
        digest=_digest(renditions),
    )


@contextmanager
def decoding() -> Iterator[None]:
    """Map everything a hostile or broken file can make Pillow raise to a rejection."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            yield
    except errors.ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise errors.ImageTooLarge(
            f"The image has more than {Image.MAX_IMAGE_PIXELS} pixels.", code="too-many-pixels"
        ) from None
    except OSError as exc:
        if "truncated" in str(exc).lower():
            raise errors.truncated_image() from None
        raise errors.invalid_image() from None
    except Exception:  # noqa: BLE001 - SyntaxError, ValueError, struct.error, EOFError, Warning...
        raise errors.invalid_image() from None


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


def normalize_mode(im: Image.Image) -> Image.Image:
    """A mode Pillow can resize well: RGB, RGBA, L, LA or CMYK."""
    mode = im.mode
    if mode.startswith("I") or mode == "F":
        # 16-bit greyscale: keep the top byte instead of clipping at 255.
        return im.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    if im.has_transparency_data and mode not in ("RGBA", "LA"):
        return im.convert("RGBA")
    if mode in ("RGB", "RGBA", "L", "LA", "CMYK"):
        return im
    if mode == "1":
        return im.convert("L")
    return im.convert("RGBA" if "A" in mode else "RGB")


def finish_square(
    square: Image.Image, icc_profile: bytes | None, orientation: int, keep_alpha: bool = False
) -> Image.Image:
    """sRGB pixels, upright; RGBA only if some pixel is not opaque (or keep_alpha)."""
    alpha = square.getchannel("A") if square.mode in ("RGBA", "LA") else None
    colour = _to_srgb(square.convert("L") if square.mode == "LA" else square, icc_profile)
    if alpha is not None and (keep_alpha or alpha.getextrema() != (255, 255)):
        colour = colour.convert("RGBA") if colour.mode != "RGBA" else colour
        colour.putalpha(alpha)
    elif colour.mode != "RGB":
        colour = colour.convert("RGB")
    if orientation in _UPRIGHT:
        colour = colour.transpose(_UPRIGHT[orientation])
    return colour


def _to_srgb(im: Image.Image, icc_profile: bytes | None) -> Image.Image:
    if im.mode == "RGBA":
        im = im.convert("RGB")
    if icc_profile:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
            converted = ImageCms.profileToProfile(
                im, source, _SRGB, renderingIntent=ImageCms.Intent.PERCEPTUAL, outputMode="RGB"
            )
            if converted is not None:  # None only when converting in place, which this is not
                return converted
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            pass  # a profile that does not fit the pixels: fall back to plain conversion
    return im.convert("RGB")


def _write_renditions(
    square: Image.Image, workdir: Path, settings: PipelineSettings, tag_srgb: bool = False
) -> list[Rendition]:
    fallback = "png" if square.mode == "RGBA" else "jpg"
    renditions = []
    for size in sorted(set(settings.sizes), reverse=True):
        sized = square if size == square.width else square.resize((size, size), Image.Resampling.LANCZOS)
        for ext in ("webp", fallback):
            data = encode(sized, ext, settings, tag_srgb)
            renditions.append(write_file(data, workdir / f"{size}.{ext}", size, ext))
    return renditions


def srgb_tag(tagged: bool) -> dict[str, bytes]:
    """Encoder options that tag an output as sRGB, for outputs converted from a source profile."""
    return {"icc_profile": _SRGB_ICC} if tagged else {}


def encode(im: Image.Image, ext: str, settings: PipelineSettings, tag_srgb: bool = False) -> bytes:
    # A fresh image from raw pixels carries no info dict: no EXIF, XMP, ICC or
    # comment can reach the encoder, whatever Pillow's save() would copy over.
    clean = Image.frombytes(im.mode, im.size, im.tobytes())
    buf = io.BytesIO()
    profile = srgb_tag(tag_srgb)
    if ext == "webp":
        clean.save(buf, "WEBP", quality=settings.webp_quality, method=4, **profile)
    elif ext == "jpg":
        clean.save(buf, "JPEG", quality=settings.jpeg_quality, optimize=True, **profile)
    else:
        clean.save(buf, "PNG", optimize=True, **profile)
    return buf.getvalue()


def write_file(data: bytes, path: Path, size: int, ext: str, animated: bool = False) -> Rendition:
    path.write_bytes(data)
    return Rendition(
        size=size,
        media_type=MEDIA_TYPES[ext],
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
        animated=animated,
    )


def _digest(renditions: list[Rendition]) -> str:
    h = hashlib.sha256()
    for r in renditions:
        h.update(f"{r.size} {r.media_type} {int(r.animated)} {r.sha256}\n".encode())
    return h.hexdigest()[:32]
