"""Structure counted before decoding (avatars._structure): real files made with Pillow."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from avatars import ImageTooComplex, ImageTooLarge, PipelineSettings
from avatars._structure import check_structure, gif_frames, jpeg_scans, png_chunks, webp_frames
from tests.support import images


def test_a_baseline_jpeg_has_one_scan_and_a_progressive_one_several():
    assert jpeg_scans(images.jpeg(), 100) == 1
    progressive = images.jpeg_scan_bomb(repeats=0, side=64)
    assert 2 <= jpeg_scans(progressive, 100) <= 20
    assert jpeg_scans(images.jpeg_scan_bomb(repeats=50, side=64), 1000) == jpeg_scans(progressive, 100) + 50


def test_counting_stops_past_the_limit():
    assert jpeg_scans(images.jpeg_scan_bomb(repeats=5000, side=64), 10) == 11


def test_exif_and_stuffed_bytes_are_not_scans():
    # An APP1 segment holding "\xff\xda" is skipped by its length, not read as a marker.
    buf = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buf, "JPEG", exif=images.exif_bytes(orientation=6) + b"\xff\xda\x00\x04xx" * 50)
    assert buf.getvalue().count(b"\xff\xda") > 50
    assert jpeg_scans(buf.getvalue(), 100) == 1


def _png(text_chunks: int) -> bytes:
    """A 4x1 PNG with `text_chunks` tEXt chunks before its pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", 4, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" + b"\x00\x00\x00" * 4)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"tEXt", b"k\x00v") * text_chunks
        + chunk(b"IDAT", pixels)
        + chunk(b"IEND", b"")
    )


def test_png_chunks_are_counted_to_iend():
    assert png_chunks(_png(0), 100) == 3
    assert png_chunks(_png(500), 10_000) == 503
    assert png_chunks(_png(500), 10) == 11


def test_gif_and_webp_frames_are_counted_without_decoding():
    assert gif_frames(images.gif_animated(frames=7), 100) == 7
    assert webp_frames(images.webp_animated(frames=5), 100) == 5
    assert gif_frames(images.gif_animated(frames=7), 3) == 4


@pytest.mark.parametrize(
    "name,data,settings,error,code",
    [
        (
            "bomb.jpg",
            images.jpeg_scan_bomb(repeats=200, side=64),
            PipelineSettings(),
            ImageTooComplex,
            "too-many-scans",
        ),
        ("many.png", _png(500), PipelineSettings(max_png_chunks=100), ImageTooComplex, "too-many-chunks"),
        ("many.gif", images.gif_animated(frames=9), PipelineSettings(max_frames=4), ImageTooLarge, "too-many-frames"),
        ("many.webp", images.webp_animated(frames=9), PipelineSettings(max_frames=4), ImageTooLarge, "too-many-frames"),
    ],
)
def test_files_past_a_limit_are_refused(tmp_path, name, data, settings, error, code):
    path = images.write(tmp_path, name, data)
    fmt = {"jpg": "JPEG", "png": "PNG", "gif": "GIF", "webp": "WEBP"}[name.rsplit(".", 1)[1]]
    with pytest.raises(error) as refused:
        check_structure(path, fmt, settings)
    assert refused.value.code == code


@pytest.mark.parametrize("maker", [images.jpeg, images.png_rgb, images.gif_animated, images.webp_animated])
def test_ordinary_files_pass(tmp_path, maker):
    data = maker()
    fmt = {b"\xff\xd8": "JPEG", b"\x89P": "PNG", b"GI": "GIF", b"RI": "WEBP"}[data[:2]]
    check_structure(images.write(tmp_path, "x", data), fmt, PipelineSettings())
