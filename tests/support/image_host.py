"""A real HTTP server on loopback that the upload server fetches images from (the profile-image API's URL imports).

Paths: `/image.jpg` (a JPEG), `/not-an-image`, `/missing` (404), `/big` (more bytes than the
test's limit, no Content-Length), `/slow` (headers, then nothing until the host stops) and
`/redirect?to=URL` (302 to URL).
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class ImageHost:
    def __init__(self, image: bytes, big_bytes: int):
        self.image, self.big_bytes = image, big_bytes
        self.released = threading.Event()
        self.requests: list[str] = []  # paths
        self.targets: list[str] = []  # paths with their query
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> ImageHost:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.released.set()
        self._server.shutdown()
        self._server.server_close()


def _handler(host: ImageHost) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            host.requests.append(url.path)
            host.targets.append(self.path)
            if url.path == "/image.jpg":
                self._send(200, "image/jpeg", host.image)
            elif url.path == "/not-an-image":
                self._send(200, "text/html", b"<html><body>hello</body></html>")
            elif url.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", parse_qs(url.query)["to"][0])
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif url.path == "/big":
                self._big()
            elif url.path == "/slow":
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(host.image)))
                self.end_headers()
                self.wfile.write(host.image[:100])
                self.wfile.flush()
                host.released.wait(30)
            else:
                self._send(404, "text/plain", b"not found")

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _big(self) -> None:
            # No Content-Length: the fetcher must count, not trust a header.
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Connection", "close")
            self.end_headers()
            block = host.image[:1024].ljust(1024, b"\0")
            try:
                for _ in range(host.big_bytes // 1024 + 2):
                    self.wfile.write(block)
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler
