"""A PATCH whose connection dies mid-body, as a phone's does when it loses the network.

A plain socket (gevent's, under Locust) writes the request head and part of the body, then closes:
half the time politely (FIN), half the time with a reset (RST, SO_LINGER 0), which is what a
carrier's NAT dropping the flow looks like to the server.
"""

from __future__ import annotations

import random
import socket
import struct
import time
from urllib.parse import urlsplit


def cut_patch(url: str, headers: dict[str, str], body: bytes, keep: int, rng: random.Random) -> float:
    """Send the head of `PATCH url` announcing all of `body`, then `keep` bytes of it, then drop
    the connection. Returns the seconds it took (for the report)."""
    started = time.perf_counter()
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError("cut PATCHes need a plain-HTTP URL (point LOADTEST_URL at the server, not a TLS proxy)")
    port = parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"PATCH {path} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    with socket.create_connection((parts.hostname, port), timeout=10) as sock:
        sock.sendall(head)
        sent = 0
        while sent < keep:  # in pieces, as a radio sends them
            piece = body[sent : min(keep, sent + 16384)]
            sock.sendall(piece)
            sent += len(piece)
        if rng.random() < 0.5:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return time.perf_counter() - started
