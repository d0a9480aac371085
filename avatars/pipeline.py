"""The image pipeline: an uploaded file in, a set of clean square renditions out.

The pixel work happens in `avatars._render`, inside a pool of worker processes:
a decoder that crashes or balloons on a hostile file takes a worker down, not
the server, and decoding never holds the event loop or the GIL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from avatars import errors
from avatars._process_guard import expect_children
from avatars._sniff import sniff_file
from avatars.processing import PipelineSettings, ProcessedAvatar

log = logging.getLogger(__name__)


class _Worker:
    """One worker process, behind its own single-process executor: killing it (a job past
    its wall clock) or losing it (a crash, the OOM killer) breaks only the job it was running,
    where a shared pool would fail every job in flight."""

    def __init__(self, settings: PipelineSettings):
        # forkserver: workers never inherit the server's threads, sockets or event loop, and
        # start much faster than with spawn.
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        context = multiprocessing.get_context(method)
        if method == "forkserver":
            # Read when the forkserver starts (the first worker): it dies with this process.
            # The guard first, before the slow import of the server's own modules.
            expect_children()
            context.set_forkserver_preload(["avatars._forkserver_preload", "__main__"])
        self.executor = ProcessPoolExecutor(
            max_workers=1,
            mp_context=context,
            initializer=_init_worker,
            initargs=(settings.max_pixels,),
            max_tasks_per_child=settings.max_tasks_per_worker,
        )

    def kill(self) -> None:
        # The executor keeps its processes in a private map; it is the only handle on them.
        processes = list(getattr(self.executor, "_processes", {}).values())
        for process in processes:
            with contextlib.suppress(ProcessLookupError, OSError, ValueError):
                process.kill()
        self.executor.shutdown(wait=False, cancel_futures=True)


class _WorkerDied(Exception):
    pass


class Pipeline:
    """Validates and renders uploads in a bounded set of worker processes, one job each."""

    def __init__(self, settings: PipelineSettings):
        self.settings = settings
        self.workers = settings.workers or os.cpu_count() or 1
        # Queueing happens here, in the event loop, not in an executor's unbounded queue.
        self._slots = asyncio.Semaphore(self.workers)
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()

    async def process(self, source: Path, workdir: Path) -> ProcessedAvatar:
        # Bytes that are no image at all are refused here, from their first 64 bytes (a file
        # just written, in the page cache), before any wait for a worker and a round trip to
        # it; the worker sniffs again (render_avatar) for callers that reach it otherwise.
        sniff_file(source)
        async with self._slots:
            try:
                return await self._run(source, workdir)
            except _WorkerDied:
                # A worker that dies takes only its own job; the job gets one more try on a
                # fresh worker (the OOM killer may have picked the process for another's sake).
                log.warning("an image worker died; retrying its job once on a fresh worker")
            try:
                return await self._run(source, workdir)
            except _WorkerDied:
                raise errors.worker_died() from None

    async def _run(self, source: Path, workdir: Path) -> ProcessedAvatar:
        worker = self._idle.pop() if self._idle else _Worker(self.settings)
        self._busy.add(worker)
        keep = False
        try:
            future = asyncio.get_running_loop().run_in_executor(
                worker.executor, _render_in_worker, Path(source), Path(workdir), self.settings
            )
            async with asyncio.timeout(self.settings.job_seconds):
                result = await future
            keep = True
            return result
        except TimeoutError:
            raise errors.image_timeout(self.settings.job_seconds) from None
        except BrokenProcessPool:
            raise _WorkerDied from None
        except errors.ImageRejected:
            keep = True
            raise
        finally:
            self._busy.discard(worker)
            if keep:
                self._idle.append(worker)
            else:
                # Timed out, died, or the caller went away (shutdown, a cancelled request):
                # the process may still be decoding; kill it rather than wait for it.
                worker.kill()

    async def aclose(self) -> None:
        workers = [*self._idle, *self._busy]
        self._idle, self._busy = [], set()
        for worker in workers:
            worker.kill()
        for worker in workers:
            await asyncio.to_thread(worker.executor.shutdown, wait=True, cancel_futures=True)


def _init_worker(max_pixels: int) -> None:
    from avatars._process_guard import die_with_parent
    from avatars._render import init_worker

    die_with_parent()  # and with the forkserver, which dies with the server

    init_worker(max_pixels)


def _render_in_worker(source: Path, workdir: Path, settings: PipelineSettings) -> ProcessedAvatar:
    from avatars._render import render_avatar

    return render_avatar(source, workdir, settings)
