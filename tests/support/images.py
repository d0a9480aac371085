"""Real image files for tests, made with Pillow: one factory per kind of upload.

Every factory returns bytes; `write(tmp_path, name, data)` puts them on disk.
The "quadrants" picture is asymmetric on purpose: red top-left, green
top-right, blue bottom-left, yellow bottom-right, so any wrong rotation or
flip shows up in the corner colours.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

from PIL import Image, ImageCms

RED, GREEN, BLUE, YELLOW = (220, 30, 30), (30, 200, 40), (30, 40, 220), (240, 220, 20)
QUADRANTS = {"top_left": RED, "top_right": GREEN, "bottom_left": BLUE, "bottom_right": YELLOW}

GPS_IFD = 0x8825
ORIENTATION = 0x0112
SECRET = b"SECRET-PAYLOAD-7f3a"  # must never appear in an output

# The transpose that turns an upright picture into the stored pixels of a file
# whose EXIF orientation is k (the inverse of what a viewer applies).
_T = Image.Transpose
_STORED_FROM_UPRIGHT = {
    1: None,
    2: _T.FLIP_LEFT_RIGHT,
    3: _T.ROTATE_180,
    4: _T.FLIP_TOP_BOTTOM,
    5: _T.TRANSPOSE,
    6: _T.ROTATE_90,
    7: _T.TRANSVERSE,
    8: _T.ROTATE_270,
}


def write(directory: Path, name: str, data: bytes) -> Path:
    path = Path(directory) / name
    path.write_bytes(data)
    return path


def quadrants(width: int = 240, height: int = 160, mode: str = "RGB") -> Image.Image:
    """The upright asymmetric picture (landscape by default)."""
    im = Image.new("RGB", (width, height))
    half_w, half_h = width // 2, height // 2
    im.paste(RED, (0, 0, half_w, half_h))
    im.paste(GREEN, (half_w, 0, width, half_h))
    im.paste(BLUE, (0, half_h, half_w, height))
    im.paste(YELLOW, (half_w, half_h, width, height))
    return im.convert(mode) if mode != "RGB" else im


def _save(im: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def exif_bytes(orientation: int | None = None, gps: bool = False, text: bool = True) -> bytes:
    exif = Image.Exif()
    if orientation is not None:
        exif[ORIENTATION] = orientation
    if text:
        exif[0x010F] = "SecretCam " + SECRET.decode()  # Make
        exif[0x0131] = "Editor 9.9"  # Software
    if gps:
        exif[GPS_IFD] = {
            1: "N",
            2: (48.0, 51.0, 29.0),
            3: "E",
            4: (2.0, 17.0, 40.0),
        }
    return exif.tobytes()


def xmp_packet() -> bytes:
    return (
        b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" dc:creator="' + SECRET + b'"/>'
        b'</rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    )


# -- JPEG ---------------------------------------------------------------------


def jpeg(
    width: int = 240,
    height: int = 160,
    *,
    orientation: int | None = None,
    progressive: bool = False,
    gps: bool = False,
    xmp: bool = False,
    comment: bytes | None = None,
    icc_profile: bytes | None = None,
    colour: tuple[int, int, int] | None = None,
    quality: int = 95,
) -> bytes:
    """A JPEG that displays as the upright quadrants picture once its EXIF orientation is applied."""
    upright = quadrants(width, height) if colour is None else Image.new("RGB", (width, height), colour)
    op = _STORED_FROM_UPRIGHT[orientation or 1]
    stored = upright.transpose(op) if op is not None else upright
    params: dict = {"quality": quality, "progressive": progressive, "subsampling": 0}
    params["exif"] = exif_bytes(orientation, gps=gps)
    if xmp:
        params["xmp"] = xmp_packet()
    if comment is not None:
        params["comment"] = comment
    if icc_profile is not None:
        params["icc_profile"] = icc_profile
    return _save(stored, "JPEG", **params)


def jpeg_cmyk(width: int = 240, height: int = 160) -> bytes:
    return _save(quadrants(width, height).convert("CMYK"), "JPEG", quality=95)


def truncated_jpeg() -> bytes:
    data = jpeg(400, 300, quality=90)
    return data[: len(data) * 2 // 3]


def jpeg_html_polyglot() -> bytes:
    """A valid JPEG whose comment and trailing bytes are an HTML page with a script."""
    html = b"<html><script>alert('" + SECRET + b"')</script></html>"
    return jpeg(comment=html) + html


# -- PNG ----------------------------------------------------------------------


def png_rgb(width: int = 240, height: int = 160) -> bytes:
    return _save(quadrants(width, height), "PNG")


def png_palette(width: int = 240, height: int = 160, transparent: bool = False) -> bytes:
    im = quadrants(width, height).quantize(colors=8)
    params = {}
    if transparent:
        # Make the palette entry of the top-left quadrant fully transparent.
        params["transparency"] = im.getpixel((0, 0))
    return _save(im, "PNG", **params)


def png_16bit_grey(width: int = 64, height: int = 64, value: int = 40000) -> bytes:
    return _save(Image.new("I;16", (width, height), value), "PNG")


def png_alpha(width: int = 240, height: int = 160) -> bytes:
    """RGBA: the left half fully transparent, the right half opaque quadrants."""
    im = quadrants(width, height, "RGBA")
    im.paste((0, 0, 0, 0), (0, 0, width // 2, height))
    return _save(im, "PNG")


def png_with_text() -> bytes:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", SECRET.decode())
    info.add_itxt("XML:com.adobe.xmp", xmp_packet().decode())
    return _save(quadrants(), "PNG", pnginfo=info, exif=exif_bytes(gps=True))


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A PNG header claiming width x height pixels in a file of a few KiB.

    Only the first rows are present: the pipeline must refuse it from the
    header alone, before any decoding.
    """
    raw_row = b"\x00" + b"\x00" * ((width + 7) // 8)
    idat = zlib.compress(raw_row * 64, 9)
    return _png_chunks(width, height, bit_depth=1, colour_type=0, idat=idat)


def png_wide(width: int = 20_000, height: int = 4) -> bytes:
    return _save(Image.new("L", (width, height), 128), "PNG")


def _png_chunks(width: int, height: int, bit_depth: int, colour_type: int, idat: bytes) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# -- WebP, GIF, HEIF, AVIF ----------------------------------------------------


def webp(lossless: bool = False, alpha: bool = False, orientation: int | None = None) -> bytes:
    im = Image.open(io.BytesIO(png_alpha())) if alpha else quadrants()
    op = _STORED_FROM_UPRIGHT[orientation or 1]
    im = im.transpose(op) if op is not None else im
    return _save(im, "WEBP", lossless=lossless, quality=95, exif=exif_bytes(orientation, gps=True))


def _frames(count: int, width: int, height: int) -> list[Image.Image]:
    """Frame 0 is the quadrants picture; later frames are solid colours."""
    frames = [quadrants(width, height)]
    for i in range(1, count):
        frames.append(Image.new("RGB", (width, height), ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)))
    return frames


def webp_animated(frames: int = 4, width: int = 120, height: int = 80) -> bytes:
    first, *rest = _frames(frames, width, height)
    return _save(first, "WEBP", save_all=True, append_images=rest, duration=80, loop=0, quality=90)


def gif_animated(frames: int = 4, width: int = 120, height: int = 80, comment: bytes | None = None) -> bytes:
    first, *rest = _frames(frames, width, height)
    params: dict = {"save_all": True, "append_images": rest, "duration": 60, "loop": 0}
    if comment is not None:
        params["comment"] = comment
    return _save(first, "GIF", **params)


def gif_jar_polyglot() -> bytes:
    """A GIF with a ZIP (JAR) archive appended: both readers accept the file."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\nMain-Class: " + SECRET.decode() + "\n")
    return gif_animated(frames=2, comment=SECRET) + archive.getvalue()


def heic(width: int = 240, height: int = 160, orientation: int | None = None) -> bytes:
    import pillow_heif

    pillow_heif.register_heif_opener()
    op = _STORED_FROM_UPRIGHT[orientation or 1]
    im = quadrants(width, height)
    im = im.transpose(op) if op is not None else im
    return _save(im, "HEIF", quality=90, exif=exif_bytes(orientation, gps=True))


def avif(width: int = 240, height: int = 160, orientation: int | None = None, alpha: bool = False) -> bytes:
    im = Image.open(io.BytesIO(png_alpha(width, height))) if alpha else quadrants(width, height)
    op = _STORED_FROM_UPRIGHT[orientation or 1]
    im = im.transpose(op) if op is not None else im
    return _save(im, "AVIF", quality=90, exif=exif_bytes(orientation, gps=True))


# -- ICC profiles -------------------------------------------------------------

# D50-adapted colorants (the ICC PCS is D50) of two common wide-gamut spaces.
DISPLAY_P3 = {
    "r": (0.515102, 0.241182, -0.001050),
    "g": (0.291965, 0.692236, 0.041882),
    "b": (0.157153, 0.066582, 0.784378),
}
ADOBE_RGB = {
    "r": (0.609741, 0.311111, 0.019470),
    "g": (0.205276, 0.625671, 0.060867),
    "b": (0.149185, 0.063217, 0.744568),
}
_D50 = (0.9642, 1.0, 0.8249)


def display_p3_profile() -> bytes:
    # Display P3 uses the sRGB tone curve: parametric curve type 3.
    curve = _para_curve(2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045)
    return rgb_profile("Display P3 (test)", DISPLAY_P3, curve)


def adobe_rgb_profile() -> bytes:
    curve = b"curv" + b"\x00" * 4 + struct.pack(">I", 1) + struct.pack(">H", 563)  # gamma 563/256
    return rgb_profile("Adobe RGB (1998) (test)", ADOBE_RGB, curve)


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def rgb_profile(description: str, colorants: dict, curve: bytes) -> bytes:
    """A minimal ICC v4 matrix/TRC display profile."""

    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(v: tuple[float, float, float]) -> bytes:
        return b"XYZ " + b"\x00" * 4 + b"".join(s15(c) for c in v)

    def mluc(text: str) -> bytes:
        body = text.encode("utf-16-be")
        return b"mluc" + b"\x00" * 4 + struct.pack(">II", 1, 12) + b"enUS" + struct.pack(">II", len(body), 28) + body

    tags = [
        (b"desc", mluc(description)),
        (b"cprt", mluc("No copyright, test data")),
        (b"wtpt", xyz(_D50)),
        (b"rXYZ", xyz(colorants["r"])),
        (b"gXYZ", xyz(colorants["g"])),
        (b"bXYZ", xyz(colorants["b"])),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    table_size = 4 + 12 * len(tags)
    offset = 128 + table_size
    table, data = struct.pack(">I", len(tags)), b""
    for sig, body in tags:
        body += b"\x00" * (-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = 128 + table_size + len(data)
    header = (
        struct.pack(">I", size)
        + b"lcms"
        + bytes([4, 0x30, 0, 0])
        + b"mntrRGB XYZ "
        + struct.pack(">6H", 2024, 1, 1, 0, 0, 0)
        + b"acsp"
        + b"APPL"
        + b"\x00" * 4  # flags
        + b"\x00" * 8  # manufacturer, model
        + b"\x00" * 8  # attributes
        + struct.pack(">I", 0)  # perceptual intent
        + b"".join(s15(c) for c in _D50)
        + b"\x00" * 4  # creator
        + b"\x00" * 16  # profile id
        + b"\x00" * 28
    )
    assert len(header) == 128
    return header + table + data


def _para_curve(g: float, a: float, b: float, c: float, d: float) -> bytes:
    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    return b"para" + b"\x00" * 4 + struct.pack(">H", 3) + b"\x00\x00" + b"".join(s15(v) for v in (g, a, b, c, d))


def jpeg_with_profile(profile: bytes, colour: tuple[int, int, int]) -> bytes:
    """A flat-colour JPEG whose pixel values mean `colour` in the given profile's space."""
    return jpeg(64, 64, colour=colour, icc_profile=profile, quality=100)


def expected_srgb(profile: bytes, colour: tuple[int, int, int]) -> tuple[int, int, int]:
    src = ImageCms.ImageCmsProfile(io.BytesIO(profile))
    out = ImageCms.profileToProfile(Image.new("RGB", (1, 1), colour), src, ImageCms.createProfile("sRGB"))
    return out.getpixel((0, 0))


# -- things that are not allowed images --------------------------------------


def text_file() -> bytes:
    return b"Dear user,\nthis is not a picture at all.\n" * 20


def svg_with_script() -> bytes:
    return (
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="100" height="100">'
        b"<script>alert(document.cookie)</script><rect width='100' height='100' fill='red'/></svg>"
    )


def html_page() -> bytes:
    return b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>"


def bmp() -> bytes:
    return _save(quadrants(), "BMP")


def tiff() -> bytes:
    return _save(quadrants(), "TIFF")


def mp4_header() -> bytes:
    return b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 64


def jpeg_magic_then_garbage() -> bytes:
    # A complete (empty) APP0 segment, then bytes that are no JPEG marker at all.
    return b"\xff\xd8\xff\xe0\x00\x04\x00\x00" + b"\x13\x37" * 200


def jpeg_scan_bomb(repeats: int = 1000, side: int = 4000) -> bytes:
    """A valid progressive JPEG whose last scan is repeated `repeats` times: small on disk,
    each repeat re-decoded over the whole picture (about 25 ms each at 4000x4000 here)."""
    im = Image.linear_gradient("L").resize((side, side)).convert("RGB")
    data = _save(im, "JPEG", progressive=True, quality=50)
    last_scan, end = data.rindex(b"\xff\xda"), data.rindex(b"\xff\xd9")
    return data[:end] + data[last_scan:end] * repeats + data[end:]
