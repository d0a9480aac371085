"""Absolute links in answers: the configured public URL, or the request's own."""

from __future__ import annotations

from starlette.requests import Request

from .settings import Settings


def base_url(request: Request, settings: Settings) -> str:
    return (settings.server.base_url or str(request.base_url)).rstrip("/")
