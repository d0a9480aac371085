"""Choosing WebP or the fallback from an HTTP Accept header value."""

from __future__ import annotations


def quality(accept: str | None, media_type: str) -> float:
    """The q-value `accept` gives `media_type`: the most specific matching range wins."""
    if accept is None or not accept.strip():
        return 1.0  # no Accept header: the client takes anything
    kind = media_type.split("/", 1)[0]
    best = (-1, 0.0)  # (specificity, q)
    for part in accept.split(","):
        media_range, *params = (p.strip() for p in part.split(";"))
        media_range = media_range.lower()
        if media_range == media_type:
            specificity = 2
        elif media_range == f"{kind}/*":
            specificity = 1
        elif media_range == "*/*":
            specificity = 0
        else:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        if specificity > best[0] or (specificity == best[0] and q > best[1]):
            best = (specificity, q)
    return best[1]


def prefers_webp(accept: str | None, fallback: str) -> bool:
    """WebP unless the client refuses it or ranks the fallback strictly higher."""
    webp = quality(accept, "image/webp")
    return webp > 0 and webp >= quality(accept, fallback)
