"""The image pipeline: an uploaded file in, a set of clean square renditions out.

The pixel work happens in `avatars._render`, inside a pool of worker processes:
a decoder that crashes or balloons on a hostile file takes a worker down, not
the server, and decoding never holds the event loop or the GIL.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from avatars import errors


@dataclass(frozen=True)
class PipelineSettings:
    sizes: tuple[int, ...] = (512, 256, 128, 64)
    max_pixels: int = 40_000_000
    max_side: int = 16_384
    max_frames: int = 300
    webp_quality: int = 82
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

    def __post_init__(self) -> None:
        if not self.sizes or any(s < 1 for s in self.sizes):
            raise ValueError("sizes must be positive pixel counts")
        if self.max_pixels < 1 or self.max_side < 1 or self.max_frames < 1:
            raise ValueError("limits must be positive")


@dataclass(frozen=True)
class Rendition:
    size: int  # square side in px
    media_type: str  # "image/webp", "image/jpeg" or "image/png"
    path: Path  # file written in the work dir
    sha256: str  # hex digest of the file's bytes
    animated: bool = False


@dataclass(frozen=True)
class ProcessedAvatar:
    source_format: str  # "JPEG", "PNG", "WEBP", "GIF", "HEIF", "AVIF"
    width: int  # upright source size (after EXIF orientation)
    height: int
    has_alpha: bool
    renditions: tuple[Rendition, ...]
    digest: str  # content hash over all renditions: the version id


class Pipeline:
    """Validates and renders uploads in a bounded pool of worker processes."""

    def __init__(self, settings: PipelineSettings):
        self.settings = settings
        self.workers = settings.workers or os.cpu_count() or 1
        # Queueing happens here, in the event loop, not in the executor's
        # unbounded internal queue.
        self._slots = asyncio.Semaphore(self.workers)
        self._executor: ProcessPoolExecutor | None = None

    async def process(self, source: Path, workdir: Path) -> ProcessedAvatar:
        async with self._slots:
            loop = asyncio.get_running_loop()
            executor = self._pool()
            try:
                return await loop.run_in_executor(
                    executor, _render_in_worker, Path(source), Path(workdir), self.settings
                )
            except BrokenProcessPool:
                # The decoder died (a crash or the OOM killer) on this file.
                self._discard(executor)
                raise errors.invalid_image() from None

    async def aclose(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            # forkserver: workers never inherit the server's threads, sockets or
            # event loop, and start much faster than with spawn.
            method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context(method),
                initializer=_init_worker,
                initargs=(self.settings.max_pixels,),
                max_tasks_per_child=self.settings.max_tasks_per_worker,
            )
        return self._executor

    def _discard(self, executor: ProcessPoolExecutor) -> None:
        if self._executor is executor:
            self._executor = None
        executor.shutdown(wait=False, cancel_futures=True)


def _init_worker(max_pixels: int) -> None:
    from avatars._render import init_worker

    init_worker(max_pixels)


def _render_in_worker(source: Path, workdir: Path, settings: PipelineSettings) -> ProcessedAvatar:
    from avatars._render import render_avatar

    return render_avatar(source, workdir, settings)
