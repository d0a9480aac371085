"""The pictures the simulated clients upload: real JPEG, PNG and HEIC files of the sizes phones and
browsers send, generated once with Pillow and pillow-heif and cached under var/loadtest/images.

Each picture has a solid square of one palette colour in its centre, so a client can tell its own
upload from anyone else's by the centre pixel of the avatar the server made of it. The rest is a
smooth, textured field (low-resolution noise scaled up), which compresses like a photograph rather
than like noise or like a flat image.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

# Far apart in RGB, so WebP and JPEG rounding (tolerance 40 per channel) never confuses two.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (220, 30, 30),
    (30, 200, 40),
    (30, 60, 220),
    (230, 220, 30),
    (220, 40, 220),
    (40, 210, 220),
    (240, 240, 240),
    (20, 20, 20),
)
TOLERANCE = 40


@dataclass(frozen=True)
class Kind:
    """One kind of picture: format, pixel size and what sends it."""

    name: str
    format: str  # Pillow's format name
    content_type: str
    extension: str
    size: tuple[int, int]


# A phone photo resized by the app, a screenshot, an iPhone HEIC; sides scaled by `scale`.
KINDS = (
    Kind("phone-jpeg", "JPEG", "image/jpeg", "jpg", (1600, 1200)),
    Kind("screenshot-png", "PNG", "image/png", "png", (1170, 1170)),
    Kind("iphone-heic", "HEIF", "image/heic", "heic", (1512, 2016)),
)


@dataclass(frozen=True)
class Picture:
    kind: Kind
    colour: tuple[int, int, int]
    data: bytes

    @property
    def file_name(self) -> str:
        return f"{self.kind.name}-{self.colour[0]}-{self.colour[1]}-{self.colour[2]}.{self.kind.extension}"


def _render(kind: Kind, colour: tuple[int, int, int], scale: float, seed: int) -> bytes:
    width, height = max(64, int(kind.size[0] * scale)), max(64, int(kind.size[1] * scale))
    rng = random.Random(seed)
    coarse = Image.frombytes("RGB", (width // 16, height // 16), rng.randbytes((width // 16) * (height // 16) * 3))
    image = coarse.resize((width, height), Image.Resampling.BICUBIC)
    # The server crops the centre square of the image: the marked square sits well inside it.
    side = min(width, height) // 2
    left, top = (width - side) // 2, (height - side) // 2
    image.paste(colour, (left, top, left + side, top + side))
    out = io.BytesIO()
    if kind.format == "HEIF":
        import pillow_heif

        pillow_heif.register_heif_opener()
        # x265's slowest presets take half a minute per picture on two cores; ultrafast a few seconds.
        image.save(out, "HEIF", quality=80, enc_params={"preset": "ultrafast"})
    elif kind.format == "JPEG":
        image.save(out, "JPEG", quality=88)
    else:
        image.save(out, "PNG")
    return out.getvalue()


def load_pictures(directory: Path, scale: float = 1.0) -> list[Picture]:
    """Every kind in every palette colour, from the cache or made now (once per kind, colour, scale)."""
    directory.mkdir(parents=True, exist_ok=True)
    pictures = []
    for kind_index, kind in enumerate(KINDS):
        for colour_index, colour in enumerate(PALETTE):
            path = directory / f"{kind.name}-{colour_index}-x{scale:g}.{kind.extension}"
            if not path.exists():
                data = _render(kind, colour, scale, seed=kind_index * 100 + colour_index)
                partial = path.with_suffix(".partial")
                partial.write_bytes(data)
                partial.replace(path)  # a run stopped halfway never leaves a torn picture in the cache
            pictures.append(Picture(kind, colour, path.read_bytes()))
    return pictures


def centre_colour(image_bytes: bytes) -> tuple[int, int, int]:
    image = Image.open(io.BytesIO(image_bytes)).convert("RGB")
    r, g, b = image.getpixel((image.width // 2, image.height // 2))  # type: ignore[misc]
    return r, g, b


def matches(seen: tuple[int, int, int], sent: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= TOLERANCE for a, b in zip(seen, sent, strict=True))
