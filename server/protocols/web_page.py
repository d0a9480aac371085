"""The avatar page for people (`GET /`), its static files (`/web/...`) and the API reference (`GET /docs`).

The page and its vendored Uppy and Swagger UI bundles live in the repository's `web/` folder;
`make install` copies the bundles from npm into `web/vendor/`, so nothing is loaded from a CDN.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ..settings import Settings

WEB_ROOT = Path(__file__).resolve().parents[2] / "web"

# Only the page's own origin. The exceptions, each needed by a part of Uppy:
# - img-src blob: data: the Dashboard's thumbnails and the image editor show the chosen file
#   through a blob: URL; Uppy's and Swagger UI's style sheets draw small icons as data: SVGs.
# - media-src blob: the webcam's preview of a recording plays from a blob: URL.
# - connect-src blob: the image editor (cropper.js) reads a JPEG's orientation by fetching the
#   chosen file's blob: URL.
# Scripts and styles stay 'self' only: no inline code, no eval.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        "media-src 'self' blob:",
        "connect-src 'self' blob:",
        "font-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)

# What /web/ serves, by file extension; anything else (package.json, node_modules, maps) is not found.
_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}
_SERVED_FOLDERS = ("", "vendor")
_MAX_PATH = 200


def routes(settings: Settings) -> list[BaseRoute]:
    """The page's routes, or none when `server.web_page` is off."""
    if not settings.server.web_page:
        return []
    return [
        Route("/", page, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Route("/web/{path:path}", web_file, methods=["GET"]),
    ]


async def page(request: Request) -> Response:
    return _file(request, WEB_ROOT / "index.html")


async def docs(request: Request) -> Response:
    return _file(request, WEB_ROOT / "docs.html")


async def web_file(request: Request) -> Response:
    target = _resolve(request.path_params["path"])
    if target is None:
        return _not_found()
    return _file(request, target)


def _resolve(path: str) -> Path | None:
    """The file under `web/` that `path` names, or None for anything outside the served folders."""
    if not path or len(path) > _MAX_PATH or not path.isascii():
        return None
    folder, _, name = path.rpartition("/")
    if folder not in _SERVED_FOLDERS or not name or name.startswith("."):
        return None
    if not all(c.isalnum() or c in "._-" for c in name):
        return None
    target = WEB_ROOT / folder / name
    if target.suffix not in _MEDIA_TYPES:
        return None
    return target if target.is_file() else None


def _file(request: Request, target: Path) -> Response:
    try:
        stat = target.stat()
    except OSError:
        # web/vendor/ is filled by `make install`; a checkout without it says so instead of a blank page.
        return _not_found("this file is missing; run `make install` to fetch the page's libraries")
    headers = {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        # Revalidate every time: a `make install` that updates Uppy must reach the browser at once.
        "Cache-Control": "no-cache",
    }
    response = FileResponse(target, media_type=_MEDIA_TYPES[target.suffix], headers=headers, stat_result=stat)
    etag = response.headers["etag"]
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={**headers, "ETag": etag})
    return response


def _not_found(message: str = "no such file") -> Response:
    return JSONResponse({"error": message, "code": "not-found"}, status_code=404)


def openapi_paths() -> dict[str, Any]:
    """The page's operations for `/openapi.json`, which documents every route the server has."""
    html = {"description": "An HTML page", "content": {"text/html": {}}}
    missing = {
        "description": "No such file",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    files = {
        "description": "A file of the page (style sheet, script, image, licence text)",
        "content": {media_type.split(";")[0]: {} for media_type in _MEDIA_TYPES.values()},
    }

    def operation(summary: str, found: dict[str, Any]) -> dict[str, Any]:
        responses = {"200": found, "304": {"description": "Not modified (If-None-Match)"}, "404": missing}
        return {"get": {"summary": summary, "tags": ["Web page"], "responses": responses, "security": []}}

    web = operation("A file of the page or of a library it uses (web/, web/vendor/)", files)
    web["get"]["parameters"] = [
        {"name": "path", "in": "path", "required": True, "schema": {"type": "string"}, "description": "Under web/"}
    ]
    return {
        "/": operation("The avatar page: sign in, crop, upload (Uppy over tus)", html),
        "/docs": operation("This reference, interactive (Swagger UI)", html),
        "/web/{path}": web,
    }
