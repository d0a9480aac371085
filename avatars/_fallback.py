"""Renditions made when first asked for: the smaller WebP sizes and the fallbacks (JPEG, or PNG
for images with alpha).

An upload encodes and stores only the largest WebP. The smaller WebP sizes are made from it the
first time one is asked for (resized from the decoded WebP: under 0.1 dB PSNR from resizing the
original square, docs/images.md "Smaller sizes and fallbacks"), then kept like any other file:
an upload encodes and syncs one file instead of four.

Fallbacks: only clients that do not take WebP ask for them, so an upload makes no fallback and the
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
    """The pointer's record (`current.json` "files") of a fallback not made yet."""
    return _deferred_entry(source, size, media_type, FALLBACK_EXTENSIONS[media_type], quality=quality)


def smaller_entry(source: dict, size: int, quality: int, method: int) -> dict:
    """The pointer's record of a smaller WebP size not made yet."""
    return _deferred_entry(source, size, "image/webp", "webp", quality=quality, method=method)


def _deferred_entry(source: dict, size: int, media_type: str, extension: str, **settings: int) -> dict:
    """A rendition made from `source` (the largest WebP) when first asked for.

    Its "sha256" (the ETag) is derived from the source WebP's bytes and the encoder settings, not
    from the rendition's own bytes, which do not exist yet: the same inputs give the same bytes
    (the encoders are deterministic), and a kept rendition is never replaced.
    """
    tag = " ".join([source["sha256"], str(size), media_type, *map(str, settings.values())]).encode()
    return {
        "size": size,
        "media_type": media_type,
        "animated": False,
        "name": f"{size}.{extension}",
        "sha256": hashlib.sha256(tag).hexdigest(),
        "deferred": {"from": source["name"], **settings},
    }


def deferred_entries(processed: ProcessedAvatar, files: list[dict]) -> list[dict]:
    """An entry, not made yet, for every smaller still WebP size the upload did not make and for
    every still size's fallback: all made from the largest still WebP."""
    stills = [f for f in files if not f["animated"]]
    webps = [f for f in stills if f["media_type"] == "image/webp"]
    if not webps:
        return []
    source = max(webps, key=lambda f: f["size"])
    made = {f["size"] for f in webps}
    entries = []
    if processed.smaller is not None:
        smaller = processed.smaller
        sizes = sorted(set(smaller.sizes) - made, reverse=True)
        entries = [smaller_entry(source, size, smaller.quality, smaller.method) for size in sizes]
    fallback = processed.fallback
    if fallback is None:
        return entries
    present = {f["size"] for f in stills if f["media_type"] == fallback.media_type}
    sizes = sorted(made.union(e["size"] for e in entries) - present, reverse=True)
    return entries + [fallback_entry(source, size, fallback.media_type, fallback.quality) for size in sizes]


def make_deferred(webp: bytes, entry: dict) -> bytes:
    """The rendition `entry` names (a smaller WebP or a fallback), made from the largest WebP's
    bytes: square, sRGB (tagged as such when the WebP is), no metadata."""
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
    deferred = entry["deferred"]
    if entry["media_type"] == "image/webp":
        clean.save(buf, "WEBP", quality=deferred["quality"], method=deferred["method"], **srgb_tag(tagged))
    elif entry["media_type"] == "image/png":
        clean.save(buf, "PNG", optimize=True, **srgb_tag(tagged))
    else:
        clean.convert("RGB").save(buf, "JPEG", quality=deferred["quality"], optimize=True, **srgb_tag(tagged))
    return buf.getvalue()
