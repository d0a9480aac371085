"""Pixel helpers shared by the still (`_render`) and animated (`_animation`) renditions.

Run inside the pipeline's worker processes.
"""

from __future__ import annotations

import hashlib
import io
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image, ImageCms

from avatars import errors
from avatars.processing import PipelineSettings, Rendition

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
_SRGB = ImageCms.createProfile("sRGB")
# Outputs converted from a source's own profile say so: they carry this sRGB profile. Sources
# without one are sRGB by convention and stay untagged (a profile is ~600 bytes of a 2 KB avatar).
# lcms stamps the creation time into the header (bytes 24-35); pin it, or two pool workers
# started a second apart would write different bytes for the same avatar. (The profile ID,
# which would cover the date, is left unset by lcms.)
_SRGB_PROFILE = bytearray(ImageCms.ImageCmsProfile(_SRGB).tobytes())
_SRGB_PROFILE[24:36] = struct.pack(">6H", 2024, 1, 1, 0, 0, 0)
_SRGB_ICC = bytes(_SRGB_PROFILE)

MEDIA_TYPES = {"webp": "image/webp", "jpg": "image/jpeg", "png": "image/png"}


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
        clean.save(buf, "WEBP", quality=settings.webp_quality, method=settings.webp_method, **profile)
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
