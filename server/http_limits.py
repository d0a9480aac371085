"""Limits on the request head (request line and headers), enforced in uvicorn's protocol layer.

uvicorn with httptools sets no limit on header size (httptools keeps accumulating a header for
as long as it grows) and no timeout for a head that stops half-way: its keep-alive timer is
cancelled by the first byte of a request. Neither can be fixed by ASGI middleware, which only
sees a request once its head is complete, so `python -m server` runs uvicorn with the protocol
class made here (uvicorn takes a class for its `http` option):

- the request line or one header longer than `server.max_header_bytes`, or a head longer than
  `server.max_headers_total_bytes`, is answered 431 with the JSON error shape, and the
  connection is closed;
- a connection whose head has not fully arrived `server.header_timeout_seconds` after its first
  byte (or, for a new connection, after it was opened) is closed.
"""

from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .settings import ServerSettings

# Per header line: name, ": " and CRLF around the name and value the parser hands over.
_LINE_OVERHEAD = 4


class HeadTooLarge(Exception):
    """Raised inside a parser callback; httptools turns it into a parser error."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    max_header_bytes = 16 * 1024
    max_headers_total_bytes = 64 * 1024
    header_timeout_seconds = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_problem: str | None = None
        self._in_head = True
        self._head_seen = 0  # raw bytes received while the head was incomplete
        self._head_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._head_problem is not None:
            return
        if self._in_head:
            self._head_seen += len(data)
        super().data_received(data)
        # A header still growing has not reached on_header yet: the raw count bounds it.
        if self._in_head and self._head_seen > self.max_headers_total_bytes and not self.transport.is_closing():
            self._head_problem = f"the request head is larger than {self.max_headers_total_bytes} bytes"
            self._send_431()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.max_header_bytes:
            self._refuse(f"the request line is longer than {self.max_header_bytes} bytes")

    def on_headers_complete(self) -> None:
        # Measured once the head is whole rather than in an on_header override, a Python call
        # per header of every request; the raw count in data_received bounds a head while it grows.
        counted = len(self.url)
        for name, value in self.headers:
            size = len(name) + len(value) + _LINE_OVERHEAD
            if size > self.max_header_bytes:
                self._refuse(f"a header is longer than {self.max_header_bytes} bytes")
            counted += size
        if counted > self.max_headers_total_bytes:
            self._refuse(f"the request headers are larger than {self.max_headers_total_bytes} bytes in all")
        self._in_head = False
        self._head_seen = 0
        self._cancel_head_timer()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers any parser error with 400; one raised by our own limits is a 431.
        if self._head_problem is not None:
            self._send_431()
        else:
            super().send_400_response(msg)

    def _refuse(self, message: str) -> None:
        self._head_problem = message
        raise HeadTooLarge(message)

    def _send_431(self) -> None:
        body = json.dumps({"error": self._head_problem, "code": "headers-too-large"}).encode()
        head = (
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n"
        )
        self._cancel_head_timer()
        self.transport.write(head + body)
        self.transport.close()

    def _arm_head_timer(self) -> None:
        if self._head_timer is None and self.header_timeout_seconds > 0:
            self._head_timer = self.loop.call_later(self.header_timeout_seconds, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        # Only a head still arriving is cut off; an idle keep-alive connection is uvicorn's own.
        if self._in_head and not self.transport.is_closing():
            self.transport.close()


def limited_protocol(settings: ServerSettings) -> type[LimitedHttpToolsProtocol]:
    """The protocol class for uvicorn's `http` option, with these settings' limits."""
    return type(
        "ConfiguredHttpToolsProtocol",
        (LimitedHttpToolsProtocol,),
        {
            "max_header_bytes": settings.max_header_bytes,
            "max_headers_total_bytes": settings.max_headers_total_bytes,
            "header_timeout_seconds": settings.header_timeout_seconds,
        },
    )
