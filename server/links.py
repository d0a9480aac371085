"""Absolute links in answers: the configured public URL, or the request's own."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from .settings import Settings


def base_url(request: Request, settings: Settings) -> str:
    return (settings.server.base_url or str(request.base_url)).rstrip("/")


def absolute(described: dict[str, Any], base: str) -> dict[str, Any]:
    """An avatar description whose path-only URLs (as stored with an upload) are made absolute."""
    absolute_urls: dict[str, Any] = {
        key: {size: url if "://" in url else f"{base}{url}" for size, url in described[key].items()}
        for key in ("urls", "fallback_urls")
        if key in described
    }
    return {**described, **absolute_urls}
