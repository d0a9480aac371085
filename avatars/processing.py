"""What the image pipeline is asked for and what it produces, as plain data.

Kept apart from `avatars.pipeline` (the process pool) so that the code running inside the
workers (`_render`, `_animation`, `_structure`) and the avatar store can name these types
without importing the pool that imports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PipelineSettings:
    sizes: tuple[int, ...] = (512, 256, 128, 64)
    max_pixels: int = 40_000_000
    max_side: int = 16_384
    max_frames: int = 300
    webp_quality: int = 82
    # libwebp's effort (0 fastest - 6 smallest). Measured on 1080x1080 photos, all four sizes
    # (docs/performance.md, "W5: real photos"): 4 takes ~31 ms, 2 ~10 ms, for 2 % more bytes.
    webp_method: int = 2
    jpeg_quality: int = 85
    keep_animation: bool = False
    # Animated WebP derivatives are made for sizes up to this side, and only for
    # animations whose frames hold at most this many pixels in total.
    max_animated_size: int = 256
    max_animation_pixels: int = 100_000_000
    workers: int = 0  # 0 = os.cpu_count()
    # A worker is replaced after this many images, so fragmentation left by a
    # huge decode does not stay resident for the life of the server.
    max_tasks_per_worker: int = 200
    # Structure counted before decoding (avatars._structure): JPEG scans, PNG chunks.
    max_scans: int = 100
    max_png_chunks: int = 20_000
    # Wall clock of one job in its worker; past it the worker is killed and replaced.
    job_seconds: float = 30.0

    def __post_init__(self) -> None:
        if not self.sizes or any(s < 1 for s in self.sizes):
            raise ValueError("sizes must be positive pixel counts")
        if min(self.max_pixels, self.max_side, self.max_frames, self.max_scans, self.max_png_chunks) < 1:
            raise ValueError("limits must be positive")
        if not 0 <= self.webp_method <= 6:
            raise ValueError("webp_method must be 0-6")
        if self.job_seconds <= 0:
            raise ValueError("job_seconds must be positive")


@dataclass(frozen=True)
class Rendition:
    size: int  # square side in px
    media_type: str  # "image/webp", "image/jpeg" or "image/png"
    path: Path  # file written in the work dir
    sha256: str  # hex digest of the file's bytes
    animated: bool = False


@dataclass(frozen=True)
class DeferredFallback:
    """A fallback offered for every still size but made only when first asked for, by the avatar
    store (avatars/_fallback.py): clients that do not take WebP are rare, and the JPEG (or PNG)
    encodes and their fsyncs were a third of an upload's work."""

    media_type: str  # "image/jpeg", or "image/png" for images with alpha
    quality: int  # JPEG quality


@dataclass(frozen=True)
class DeferredSizes:
    """The smaller still WebP sizes, offered but made only when first asked for, by the avatar
    store from the largest WebP (avatars/_fallback.py), like the fallbacks: an upload then
    encodes and syncs one file instead of four. Resizing the decoded 512 px WebP instead of the
    original square costs under 0.1 dB PSNR (docs/images.md, "Smaller sizes and fallbacks")."""

    sizes: tuple[int, ...]  # largest first
    quality: int  # WebP quality
    method: int  # libwebp effort


@dataclass(frozen=True)
class ProcessedAvatar:
    source_format: str  # "JPEG", "PNG", "WEBP", "GIF", "HEIF", "AVIF"
    width: int  # upright source size (after EXIF orientation)
    height: int
    has_alpha: bool
    renditions: tuple[Rendition, ...]
    digest: str  # content hash over all renditions and what is deferred: the version id
    fallback: DeferredFallback | None = None
    smaller: DeferredSizes | None = None  # still WebP sizes made by the store when first asked for

    @property
    def sizes(self) -> tuple[int, ...]:
        """Every size offered, largest first: the renditions' and the deferred ones."""
        made = {r.size for r in self.renditions}
        return tuple(sorted(made | set(self.smaller.sizes if self.smaller else ()), reverse=True))
