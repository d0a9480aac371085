"""Image worker processes die with the server that started them, however it dies.

The pipeline's workers are forked by multiprocessing's forkserver, which the server starts once.
A server that is SIGKILLed (or OOM-killed) cannot stop them: the forkserver kept waiting for
requests and each idle worker for its next job, ~50 MiB per server left behind for good. With
PR_SET_PDEATHSIG the kernel kills the forkserver when the server's thread that started it goes,
and a worker when the forkserver goes. Linux only; elsewhere this does nothing.
"""

from __future__ import annotations

import ctypes
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
