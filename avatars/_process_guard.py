"""Image worker processes die with the server that started them, however it dies.

The pipeline's workers are forked by multiprocessing's forkserver, which the server starts once.
A server that is SIGKILLed (or OOM-killed) cannot stop them: the forkserver kept waiting for
requests and each idle worker for its next job, ~50 MiB per server left behind for good. With
PR_SET_PDEATHSIG the kernel kills the forkserver when the server's thread that started it goes,
and a worker when the forkserver goes. Linux only; elsewhere this does nothing.

The kernel sends that signal only for a parent that dies after the child asked for it. A server
killed while its forkserver was still starting (importing the server's modules takes a few
hundred milliseconds) left the forkserver, its first worker and multiprocessing's resource
tracker running for good: a run of tests/e2e/test_crash_resume.py's SIGKILL storm left two such
sets. So each parent names itself in the environment (`expect_children`) before it starts
processes that call `die_with_parent`, and a child whose parent is no longer that one by the
time it asked exits at once.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1
_PARENT = "AVATARS_GUARDED_PARENT_PID"


def expect_children() -> None:
    """Name this process as the parent the processes it starts next must still have."""
    os.environ[_PARENT] = str(os.getpid())


def die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    expected = os.environ.get(_PARENT)
    if expected and os.getppid() != int(expected):
        os._exit(1)  # the parent died before the signal was asked for: it will never come
