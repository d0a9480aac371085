"""Fallback renditions (JPEG, or PNG for images with alpha), made when first asked for.

Only clients that do not take WebP ask for them, so an upload makes and stores WebP only and the
avatar store (avatars/store.py, avatars/s3_store.py) makes a fallback from the version's largest
WebP the first time one is asked for, then keeps it beside the others. Each is resized straight
from the largest WebP, not re-encoded from the WebP of its own size: measured on 1080x1080
photos (docs/performance.md, "W5: real photos"), that stays within 0.2 dB PSNR of a fallback
made from the original square at every size, where re-encoding the same-size WebP lost up to
3 dB at 64 px (a second lossy generation). Keeping a lossless 512 px square instead would cost
25-85 ms and ~400 KB per upload, for every user, to spare a rare client 0.2 dB.

Runs in a thread of the server process: the input is a WebP this server wrote, not an upload.
"""

from __future__ import annotations

import hashlib
import io

from avatars.processing import ProcessedAvatar

# The mapping used by every store: a fallback's file name ends in its media type's extension.
FALLBACK_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png"}


def fallback_entry(source: dict, size: int, media_type: str, quality: int) -> dict:
    """The pointer's record (`current.json` "files") of a fallback not made yet.

    Its "sha256" (the ETag) is derived from the source WebP's bytes and the encoder settings, not
    from the fallback's own bytes, which do not exist yet: the same inputs give the same bytes
    (the encoders are deterministic), and a kept fallback is never replaced.
    """
    tag = f"{source['sha256']} {size} {media_type} {quality}".encode()
    return {
        "size": size,
        "media_type": media_type,
        "animated": False,
        "name": f"{size}.{FALLBACK_EXTENSIONS[media_type]}",
        "sha256": hashlib.sha256(tag).hexdigest(),
        "deferred": {"from": source["name"], "quality": quality},
    }


def deferred_entries(processed: ProcessedAvatar, files: list[dict]) -> list[dict]:
    """A fallback entry, not made yet, for every still size that has none: all made from the
    largest still WebP (avatars/_fallback.py)."""
    fallback = processed.fallback
    stills = [f for f in files if not f["animated"]]
    webps = [f for f in stills if f["media_type"] == "image/webp"]
    if fallback is None or not webps:
        return []
    source = max(webps, key=lambda f: f["size"])
    present = {f["size"] for f in stills if f["media_type"] == fallback.media_type}
    sizes = sorted({f["size"] for f in webps} - present, reverse=True)
    return [fallback_entry(source, size, fallback.media_type, fallback.quality) for size in sizes]


def make_fallback(webp: bytes, entry: dict) -> bytes:
    """The fallback `entry` names, made from the largest WebP's bytes: square, sRGB (tagged as
    such when the WebP is), no metadata."""
    from PIL import Image

    from avatars._imaging import srgb_tag

    with Image.open(io.BytesIO(webp), formats=["WEBP"]) as im:
        im.load()
        tagged = bool(im.info.get("icc_profile"))
        pixels = im.convert("RGBA" if im.mode in ("RGBA", "LA", "P") else "RGB")
    size = entry["size"]
    if pixels.size != (size, size):
        if pixels.mode == "RGBA":
            # Premultiplied, so colour under transparent pixels does not bleed into the edges.
            pixels = pixels.convert("RGBa").resize((size, size), Image.Resampling.LANCZOS).convert("RGBA")
        else:
            pixels = pixels.resize((size, size), Image.Resampling.LANCZOS)
    # A fresh image from raw pixels carries no info dict: nothing but the pixels reaches the encoder.
    clean = Image.frombytes(pixels.mode, pixels.size, pixels.tobytes())
    buf = io.BytesIO()
    if entry["media_type"] == "image/png":
        clean.save(buf, "PNG", optimize=True, **srgb_tag(tagged))
    else:
        clean.convert("RGB").save(buf, "JPEG", quality=entry["deferred"]["quality"], optimize=True, **srgb_tag(tagged))
    return buf.getvalue()
