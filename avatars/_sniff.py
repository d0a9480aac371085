"""Format detection by content: the first bytes decide, never the name or a header."""

from __future__ import annotations

from pathlib import Path

from avatars.errors import empty_file, unsupported_format

# ISO-BMFF brands (the `ftyp` box) of still HEIF/HEIC images and image sequences.
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"}
_AVIF_BRANDS = {b"avif", b"avis"}
# Generic brands a HEIF or AVIF file may carry as its major brand.
_GENERIC_BRANDS = {b"mif1", b"msf1", b"mif2", b"miaf"}

SNIFF_BYTES = 64


def sniff(head: bytes) -> str:
    """The Pillow format name of an allowed image, or raise UnsupportedFormat/InvalidImage."""
    if not head:
        raise empty_file()
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp":
        return _sniff_isobmff(head)
    raise unsupported_format()


def sniff_file(path: Path) -> str:
    with open(path, "rb") as fp:
        return sniff(fp.read(SNIFF_BYTES))


def _sniff_isobmff(head: bytes) -> str:
    box_size = int.from_bytes(head[:4], "big")
    major = head[8:12]
    # Compatible brands follow the major brand and minor version, 4 bytes each.
    end = min(box_size, len(head)) if box_size >= 16 else 16
    compatible = {head[i : i + 4] for i in range(16, end - 3, 4)}
    if major in _AVIF_BRANDS:
        return "AVIF"
    if major in _HEIF_BRANDS:
        return "HEIF"
    if major in _GENERIC_BRANDS:
        if compatible & _AVIF_BRANDS:
            return "AVIF"
        if compatible & _HEIF_BRANDS:
            return "HEIF"
    # MP4, QuickTime, JPEG 2000 and friends share the box layout but are not allowed.
    raise unsupported_format()
