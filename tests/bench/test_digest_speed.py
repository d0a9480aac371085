"""`make bench`: what running digests cost a stream upload, in MB/s (prints numbers, asserts none).

Every byte of a stream upload goes through SHA-256 and SHA-512 (chunks/running_digest.py, libcrypto
through ctypes so the state can be saved); this compares that with hashlib over the same 64 KiB
blocks (what a request body arrives in) and with fsyncing the same bytes to disk.
Run alone: `.venv/bin/python -m tests.bench.test_digest_speed`.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time

import pytest

from chunks import running_digest

pytestmark = pytest.mark.bench
BLOCK = 64 * 1024
TOTAL = 256 * 1024 * 1024


def _rate(seconds: float) -> float:
    return TOTAL / seconds / 1e6


def measure() -> dict[str, float]:
    block = os.urandom(BLOCK)
    blocks = TOTAL // BLOCK
    rates: dict[str, float] = {}
    for names in (("sha256",), ("sha512",), ("sha256", "sha512")):
        label = "+".join(names)
        if running_digest.AVAILABLE:
            running = [running_digest.RunningDigest(name) for name in names]
            start = time.perf_counter()
            for _ in range(blocks):
                for digest in running:
                    digest.update(block)
            rates[f"running {label}"] = _rate(time.perf_counter() - start)
        hashers = [hashlib.new(name) for name in names]
        start = time.perf_counter()
        for _ in range(blocks):
            for hasher in hashers:
                hasher.update(block)
        rates[f"hashlib {label}"] = _rate(time.perf_counter() - start)
    with tempfile.NamedTemporaryFile() as f:
        start = time.perf_counter()
        for i in range(blocks // 16):  # a 1 MiB checkpoint: write, then fsync
            for _ in range(16):
                f.write(block)
            f.flush()
            os.fsync(f.fileno())
            if i == 64:
                break
        rates["write+fsync per MiB"] = (i + 1) * 16 * BLOCK / (time.perf_counter() - start) / 1e6
    return rates


def report() -> None:
    for label, rate in measure().items():
        print(f"{label:>24}: {rate:8.0f} MB/s")


def test_running_digest_speed() -> None:
    report()


if __name__ == "__main__":
    report()
