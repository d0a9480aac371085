"""Animated WebP derivatives of an animated upload (only with `keep_animation`).

Frames are decoded, cropped and resized one at a time while the encoder
consumes them, so memory stays at one source frame plus one small frame,
whatever the frame count.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from avatars._imaging import decoding, finish_square, normalize_mode, srgb_tag, write_file
from avatars.processing import PipelineSettings, Rendition

# Browsers play frames shorter than this at 100 ms; so do we, explicitly.
_MIN_FRAME_MS = 20
_DEFAULT_FRAME_MS = 100


def write_animated(
    im: Image.Image,
    frames: int,
    workdir: Path,
    settings: PipelineSettings,
    icc_profile: bytes | None,
    orientation: int,
) -> list[Rendition]:
    width, height = im.size
    if frames < 2 or width * height * frames > settings.max_animation_pixels:
        return []  # a still avatar is always made; the animation is a bonus
    sizes = sorted((s for s in set(settings.sizes) if s <= settings.max_animated_size), reverse=True)
    renditions = []
    for size in sizes:
        data = _encode_animation(im, frames, size, settings, icc_profile, orientation)
        renditions.append(write_file(data, workdir / f"{size}.animated.webp", size, "webp", animated=True))
    return renditions


def _encode_animation(
    im: Image.Image, frames: int, size: int, settings: PipelineSettings, icc_profile: bytes | None, orientation: int
) -> bytes:
    durations: list[int] = []

    def square(index: int) -> Image.Image:
        with decoding():
            im.seek(index)
            im.load()
        duration = im.info.get("duration") or 0
        durations.append(duration if duration >= _MIN_FRAME_MS else _DEFAULT_FRAME_MS)
        base = normalize_mode(im)
        if base.mode != "RGBA":
            base = base.convert("RGBA")
        side = min(base.size)
        left, top = (base.width - side) // 2, (base.height - side) // 2
        small = base.resize((size, size), Image.Resampling.LANCZOS, box=(left, top, left + side, top + side))
        return finish_square(small, icc_profile, orientation, keep_alpha=True)

    first = square(0)
    rest = _LazyFrames(square, frames - 1)
    # Durations are only known once every frame was decoded, after the encoder
    # has taken them; WebP stores them per frame, so pass a list that fills up.
    buf = io.BytesIO()
    clean = Image.frombytes(first.mode, first.size, first.tobytes())
    clean.save(
        buf,
        "WEBP",
        save_all=True,
        append_images=[rest],
        duration=durations,
        loop=0,
        quality=settings.webp_quality,
        method=4,
        **srgb_tag(bool(icc_profile)),
    )
    return buf.getvalue()


class _LazyFrames:
    """Looks like a multi-frame image to Pillow's WebP writer; renders on seek."""

    mode = "RGBA"

    def __init__(self, render: Callable[[int], Image.Image], count: int) -> None:
        self._render = render
        self.n_frames = count
        self._frame: Image.Image | None = None

    def seek(self, index: int) -> None:
        # Keep a reference while the encoder reads the frame's memory.
        self._frame = self._render(index + 1)

    def getim(self) -> object:
        assert self._frame is not None
        return self._frame.getim()
