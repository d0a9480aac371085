"""Counting an image's structure before any decoder sees it; runs at the start of a worker job.

Decoding cost is not bounded by pixels alone: a progressive JPEG may repeat its last scan
thousands of times (each one re-decoded over the whole picture), a PNG may hold millions of
tiny chunks, a GIF or WebP thousands of frames. Each walk below reads only marker and chunk
headers (bytes.find and length fields, no pixel data) and stops as soon as a limit is passed.
"""

from __future__ import annotations

import mmap
from pathlib import Path

from avatars import errors
from avatars.processing import PipelineSettings

_SOS, _EOI, _SOI, _TEM = 0xDA, 0xD9, 0xD8, 0x01
_RST = range(0xD0, 0xD8)
_PNG_SIGNATURE = 8
_GIF_EXTENSION, _GIF_IMAGE, _GIF_TRAILER = 0x21, 0x2C, 0x3B


def check_structure(source: Path, source_format: str, settings: PipelineSettings) -> None:
    """Raise ImageTooComplex/ImageTooLarge when the file's structure is past a limit."""
    walk = _WALKS.get(source_format)
    if walk is None:
        return  # HEIF/AVIF: libheif bounds its own work per image item
    with open(source, "rb") as fp:
        if fp.seek(0, 2) == 0:
            raise errors.empty_file()
        with mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ) as data:
            walk(data, settings)


def jpeg_scans(data: bytes | mmap.mmap, limit: int) -> int:
    """The number of scans (SOS markers) before the first EOI, counting at most limit + 1."""
    pos, end, scans = 2, len(data), 0
    while pos + 1 < end and scans <= limit:
        if data[pos] != 0xFF:
            # Entropy-coded data: a real marker is 0xFF followed by anything but 0x00 (a
            # stuffed byte) or a restart marker.
            pos = data.find(b"\xff", pos)
            if pos < 0:
                break
            continue
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker == 0x00 or marker in _RST or marker in (_SOI, _TEM):
            pos += 2
        elif marker == _EOI:
            break
        else:
            if marker == _SOS:
                scans += 1
            if pos + 4 > end:
                break
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return scans


def png_chunks(data: bytes | mmap.mmap, limit: int) -> int:
    """The number of chunks up to IEND, counting at most limit + 1."""
    pos, end, chunks = _PNG_SIGNATURE, len(data), 0
    while pos + 8 <= end and chunks <= limit:
        chunks += 1
        if data[pos + 4 : pos + 8] == b"IEND":
            break
        pos += 12 + int.from_bytes(data[pos : pos + 4], "big")
    return chunks


def gif_frames(data: bytes | mmap.mmap, limit: int) -> int:
    """The number of image descriptors (frames), counting at most limit + 1."""
    end = len(data)
    if end < 13:
        return 0
    pos, frames = 13, 0
    if data[10] & 0x80:  # global colour table
        pos += 3 << ((data[10] & 0x07) + 1)
    while pos < end and frames <= limit:
        block = data[pos]
        if block == _GIF_TRAILER:
            break
        if block == _GIF_IMAGE:
            frames += 1
            if pos + 10 > end:
                break
            packed = data[pos + 9]
            pos += 10 + ((3 << ((packed & 0x07) + 1)) if packed & 0x80 else 0) + 1  # + LZW code size
        elif block == _GIF_EXTENSION:
            pos += 2
        else:
            break  # not a GIF block: the decoder will say what is wrong
        pos = _skip_sub_blocks(data, pos, end)
    return frames


def _skip_sub_blocks(data: bytes | mmap.mmap, pos: int, end: int) -> int:
    while pos < end:
        size = data[pos]
        pos += 1 + size
        if size == 0:
            break
    return pos


def webp_frames(data: bytes | mmap.mmap, limit: int) -> int:
    """The number of ANMF (animation frame) chunks, counting at most limit + 1."""
    pos, end, frames = 12, len(data), 0
    while pos + 8 <= end and frames <= limit:
        if data[pos : pos + 4] == b"ANMF":
            frames += 1
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        pos += 8 + size + (size & 1)
    return frames


def _check_jpeg(data: mmap.mmap, settings: PipelineSettings) -> None:
    scans = jpeg_scans(data, settings.max_scans)
    if scans > settings.max_scans:
        raise errors.too_many_scans(settings.max_scans)


def _check_png(data: mmap.mmap, settings: PipelineSettings) -> None:
    chunks = png_chunks(data, settings.max_png_chunks)
    if chunks > settings.max_png_chunks:
        raise errors.too_many_chunks(settings.max_png_chunks)


def _check_gif(data: mmap.mmap, settings: PipelineSettings) -> None:
    frames = gif_frames(data, settings.max_frames)
    if frames > settings.max_frames:
        raise errors.too_many_frames_at_least(settings.max_frames)


def _check_webp(data: mmap.mmap, settings: PipelineSettings) -> None:
    frames = webp_frames(data, settings.max_frames)
    if frames > settings.max_frames:
        raise errors.too_many_frames_at_least(settings.max_frames)


_WALKS = {"JPEG": _check_jpeg, "PNG": _check_png, "GIF": _check_gif, "WEBP": _check_webp}
