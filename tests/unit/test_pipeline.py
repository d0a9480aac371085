"""The image pipeline, specified by what a person sees in the resulting avatar."""

from __future__ import annotations

import io
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageCms

from avatars import (
    ImageTooLarge,
    InvalidImage,
    Pipeline,
    PipelineSettings,
    ProcessedAvatar,
    UnsupportedFormat,
)
from avatars._fallback import deferred_entries, fallback_entry, make_deferred
from tests.support import images as img

SEED = Path(__file__).resolve().parents[1] / "fixtures" / "seed001.jpg"
SETTINGS = PipelineSettings(workers=2)


@pytest.fixture(scope="module")
async def pipeline():
    pipe = Pipeline(SETTINGS)
    yield pipe
    await pipe.aclose()


async def run(pipeline: Pipeline, tmp_path: Path, data: bytes, name: str = "upload.bin") -> ProcessedAvatar:
    source = img.write(tmp_path, name, data)
    return await pipeline.process(source, tmp_path / "out")


def decode(path: Path) -> Image.Image:
    im = Image.open(path)
    im.load()
    return im


def rendition(processed: ProcessedAvatar, size: int, media_type: str = "image/webp"):
    return next(r for r in processed.renditions if r.size == size and r.media_type == media_type and not r.animated)


def stills(processed: ProcessedAvatar) -> dict[int, Path]:
    """Every still WebP size as a client gets it: the largest as the upload made it, the smaller
    ones made by the avatar store's own code (avatars/_fallback.py) when first asked for, written
    beside it."""
    largest = rendition(processed, max(r.size for r in processed.renditions if not r.animated))
    made = [
        {
            "size": largest.size,
            "media_type": "image/webp",
            "animated": False,
            "name": largest.path.name,
            "sha256": largest.sha256,
        }
    ]
    paths = {largest.size: largest.path}
    for entry in deferred_entries(processed, made):
        if entry["media_type"] == "image/webp":
            path = largest.path.with_name(entry["name"])
            path.write_bytes(make_deferred(largest.path.read_bytes(), entry))
            paths[entry["size"]] = path
    return paths


def fallback(processed: ProcessedAvatar, size: int) -> Image.Image:
    """The fallback (JPEG, or PNG with alpha) the avatar store makes when a client first asks
    for it: from the largest WebP, by the store's own code (avatars/_fallback.py)."""
    source = rendition(processed, max(r.size for r in processed.renditions if not r.animated))
    assert processed.fallback is not None
    entry = fallback_entry(
        {"sha256": source.sha256, "name": source.path.name},
        size,
        processed.fallback.media_type,
        processed.fallback.quality,
    )
    im = Image.open(io.BytesIO(make_deferred(source.path.read_bytes(), entry)))
    im.load()
    return im


def close(pixel, expected, tolerance: int = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected))


def assert_upright_quadrants(im: Image.Image) -> None:
    rgb = im.convert("RGB")
    lo, hi = int(rgb.width * 0.2), int(rgb.width * 0.8)
    seen = {
        "top_left": rgb.getpixel((lo, lo)),
        "top_right": rgb.getpixel((hi, lo)),
        "bottom_left": rgb.getpixel((lo, hi)),
        "bottom_right": rgb.getpixel((hi, hi)),
    }
    for corner, expected in img.QUADRANTS.items():
        assert close(seen[corner], expected), f"{corner}: {seen[corner]} is not {expected} (all: {seen})"


# -- what comes out ------------------------------------------------------------


async def test_seed_photo_becomes_every_configured_size_in_webp_with_a_jpeg_fallback(pipeline, tmp_path):
    processed = await pipeline.process(SEED, tmp_path / "out")

    assert processed.source_format == "JPEG"
    assert (processed.width, processed.height) == (200, 200)
    assert not processed.has_alpha
    # The upload makes the largest WebP; the store makes the others from it when first asked for.
    assert [(r.size, r.media_type) for r in processed.renditions] == [(512, "image/webp")]
    assert processed.renditions[0].path.parent == tmp_path / "out"
    assert processed.sizes == (512, 256, 128, 64)
    for size, path in stills(processed).items():
        im = decode(path)
        assert im.size == (size, size)
        assert im.format == "WEBP"
    # The JPEG fallback is offered, made by the store when first asked for.
    assert processed.fallback is not None and processed.fallback.media_type == "image/jpeg"
    for size in (512, 256, 128, 64):
        im = fallback(processed, size)
        assert im.format == "JPEG" and im.size == (size, size)


async def test_configured_sizes_are_exactly_the_sizes_written(tmp_path):
    pipe = Pipeline(PipelineSettings(sizes=(300, 48), workers=1))
    try:
        processed = await pipe.process(img.write(tmp_path, "a.jpg", img.jpeg()), tmp_path / "out")
    finally:
        await pipe.aclose()
    assert processed.sizes == (300, 48)
    assert sorted(decode(path).size for path in stills(processed).values()) == [(48, 48), (300, 300)]


@pytest.mark.parametrize("orientation", range(1, 9))
async def test_every_exif_orientation_lands_upright(pipeline, tmp_path, orientation):
    processed = await run(pipeline, tmp_path, img.jpeg(orientation=orientation))

    assert (processed.width, processed.height) == (240, 160)
    for path in stills(processed).values():
        assert_upright_quadrants(decode(path))


@pytest.mark.parametrize(
    "factory, source_format",
    [
        (lambda: img.webp(orientation=6), "WEBP"),
        (lambda: img.heic(orientation=6), "HEIF"),
        (lambda: img.avif(orientation=8), "AVIF"),
        (lambda: img.jpeg(orientation=5, progressive=True), "JPEG"),
    ],
    ids=["webp", "heic", "avif", "progressive-jpeg"],
)
async def test_orientation_is_applied_for_other_formats(pipeline, tmp_path, factory, source_format):
    processed = await run(pipeline, tmp_path, factory())

    assert processed.source_format == source_format
    assert (processed.width, processed.height) == (240, 160)
    assert_upright_quadrants(decode(rendition(processed, 512).path))


ACCEPTED = {
    "jpeg-baseline": (img.jpeg, "JPEG"),
    "jpeg-large": (lambda: img.jpeg(3000, 2000, quality=80), "JPEG"),
    "heic-large-rotated": (lambda: img.heic(2400, 2100, orientation=6), "HEIF"),
    "png-large": (lambda: img.png_rgb(2400, 2100), "PNG"),
    "jpeg-progressive": (lambda: img.jpeg(progressive=True), "JPEG"),
    "jpeg-cmyk": (img.jpeg_cmyk, "JPEG"),
    "png-rgb": (img.png_rgb, "PNG"),
    "png-palette": (img.png_palette, "PNG"),
    "webp-lossy": (img.webp, "WEBP"),
    "webp-lossless": (lambda: img.webp(lossless=True), "WEBP"),
    "webp-animated": (img.webp_animated, "WEBP"),
    "gif-animated": (img.gif_animated, "GIF"),
    "heic": (img.heic, "HEIF"),
    "avif": (img.avif, "AVIF"),
}


@pytest.mark.parametrize("kind", ACCEPTED)
async def test_each_accepted_format_becomes_an_upright_avatar(pipeline, tmp_path, kind):
    factory, source_format = ACCEPTED[kind]
    processed = await run(pipeline, tmp_path, factory())

    assert processed.source_format == source_format
    for path in stills(processed).values():
        assert_upright_quadrants(decode(path))


@pytest.mark.parametrize("side", [64, 2100])
async def test_16_bit_greyscale_png_keeps_its_brightness(pipeline, tmp_path, side):
    processed = await run(pipeline, tmp_path, img.png_16bit_grey(side, side, value=40000))

    pixel = decode(stills(processed)[64]).convert("RGB").getpixel((32, 32))
    assert close(pixel, (156, 156, 156), 4)  # 40000 / 256, not clipped to white


async def test_animations_become_their_first_frame(pipeline, tmp_path):
    for name, data in {"gif": img.gif_animated(frames=6), "webp": img.webp_animated(frames=6)}.items():
        processed = await run(pipeline, tmp_path, data, f"anim.{name}")
        assert not any(r.animated for r in processed.renditions)
        for path in stills(processed).values():
            im = decode(path)
            assert getattr(im, "n_frames", 1) == 1
            assert_upright_quadrants(im)


# -- transparency --------------------------------------------------------------


@pytest.mark.parametrize(
    "factory",
    [img.png_alpha, lambda: img.png_alpha(2600, 2200), lambda: img.webp(alpha=True), lambda: img.avif(alpha=True)],
    ids=["png", "large-png", "webp", "avif"],
)
async def test_transparency_is_kept_in_webp_and_png_fallback(pipeline, tmp_path, factory):
    processed = await run(pipeline, tmp_path, factory())

    assert processed.has_alpha
    assert {r.media_type for r in processed.renditions} == {"image/webp"}
    assert processed.fallback is not None and processed.fallback.media_type == "image/png"
    made = [decode(path) for path in stills(processed).values()] + [fallback(processed, s) for s in (256, 64)]
    assert {im.format for im in made} == {"WEBP", "PNG"}
    for im in made:
        im = im.convert("RGBA")
        s = im.width
        assert im.getpixel((s // 8, s // 2))[3] < 10  # left half: transparent
        assert im.getpixel((s * 7 // 8, s // 8))[3] > 245  # right half: opaque
        assert close(im.getpixel((s * 7 // 8, s // 8))[:3], img.GREEN)


@pytest.mark.parametrize("width, height", [(240, 160), (2400, 2100)])
async def test_palette_transparency_is_kept(pipeline, tmp_path, width, height):
    processed = await run(pipeline, tmp_path, img.png_palette(width, height, transparent=True))

    im = fallback(processed, 256).convert("RGBA")
    assert im.getpixel((40, 40))[3] == 0
    assert im.getpixel((216, 216))[3] == 255
    assert close(im.getpixel((216, 216))[:3], img.YELLOW)


async def test_fully_opaque_alpha_channel_gets_a_jpeg_fallback(pipeline, tmp_path):
    data = img._save(img.quadrants(mode="RGBA"), "PNG")
    processed = await run(pipeline, tmp_path, data)

    assert not processed.has_alpha
    assert processed.fallback is not None and processed.fallback.media_type == "image/jpeg"
    assert fallback(processed, 64).mode == "RGB"


# -- privacy -------------------------------------------------------------------


def is_srgb_profile(icc: bytes) -> bool:
    return "sRGB" in ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc)))


def assert_no_metadata(path: Path) -> None:
    """Nothing of the source's metadata; the only profile allowed is the sRGB one the pipeline adds."""
    data = path.read_bytes()
    assert img.SECRET not in data
    im = decode(path)
    tagged = "icc_profile" in im.info
    if tagged:
        assert is_srgb_profile(im.info["icc_profile"]), f"a non-sRGB profile survived in {path.name}"
    markers = [b"Exif", b"GPS", b"xpacket", b"XMP", b"tEXt", b"iTXt", b"zTXt", b"eXIf"]
    for marker in markers + ([] if tagged else [b"ICCP", b"iCCP"]):
        assert marker not in data, f"{marker!r} found in {path.name}"
    assert len(im.getexif()) == 0
    for key in ("exif", "xmp", "comment", "XML:com.adobe.xmp", "Comment"):
        assert key not in im.info, f"{key} survived in {path.name}"
    if im.format == "JPEG":
        assert b"\xff\xfe" not in data[: data.find(b"\xff\xda")]  # no COM segment before the scan


@pytest.mark.parametrize(
    "factory",
    [
        lambda: img.jpeg(
            orientation=6, gps=True, xmp=True, comment=b"hello " + img.SECRET, icc_profile=img.display_p3_profile()
        ),
        img.png_with_text,
        lambda: img.webp(alpha=True),
        img.heic,
        img.avif,
    ],
    ids=["jpeg", "png", "webp", "heic", "avif"],
)
async def test_no_metadata_survives(pipeline, tmp_path, factory):
    processed = await run(pipeline, tmp_path, factory())

    for path in stills(processed).values():
        assert_no_metadata(path)


@pytest.mark.parametrize(
    "profile, colour",
    [(img.display_p3_profile, (180, 60, 60)), (img.adobe_rgb_profile, (60, 180, 60))],
    ids=["display-p3", "adobe-rgb"],
)
async def test_wide_gamut_colours_are_converted_to_srgb_not_dropped(pipeline, tmp_path, profile, colour):
    expected = img.expected_srgb(profile(), colour)
    assert not close(expected, colour, 12)  # the test colour really moves

    processed = await run(pipeline, tmp_path, img.jpeg_with_profile(profile(), colour))

    for im in (decode(stills(processed)[128]), fallback(processed, 128)):
        assert is_srgb_profile(im.info["icc_profile"])  # converted, and says so
        assert close(im.convert("RGB").getpixel((64, 64)), expected, 8)


async def test_sources_without_a_profile_give_untagged_srgb_outputs(pipeline, tmp_path):
    processed = await run(pipeline, tmp_path, img.jpeg())

    for path in stills(processed).values():
        assert "icc_profile" not in decode(path).info


# -- determinism ---------------------------------------------------------------


async def test_same_input_gives_identical_bytes_and_digest(pipeline, tmp_path):
    source = img.write(tmp_path, "a.jpg", img.jpeg(orientation=6, icc_profile=img.adobe_rgb_profile()))
    first = await pipeline.process(source, tmp_path / "one")
    second = await pipeline.process(source, tmp_path / "two")

    assert first.digest == second.digest
    assert [p.read_bytes() for p in stills(first).values()] == [p.read_bytes() for p in stills(second).values()]


async def test_different_settings_give_a_different_digest(tmp_path):
    source = img.write(tmp_path, "a.jpg", img.jpeg())
    pipe = Pipeline(PipelineSettings(webp_quality=40, workers=1))
    try:
        low = await pipe.process(source, tmp_path / "low")
    finally:
        await pipe.aclose()
    pipe = Pipeline(PipelineSettings(workers=1))
    try:
        default = await pipe.process(source, tmp_path / "default")
    finally:
        await pipe.aclose()
    assert low.digest != default.digest


# -- refusals ------------------------------------------------------------------

REJECTED = {
    "text-named-jpg": ("photo.jpg", img.text_file, UnsupportedFormat, "unsupported-format"),
    "svg-with-script": ("avatar.svg", img.svg_with_script, UnsupportedFormat, "unsupported-format"),
    "html": ("avatar.png", img.html_page, UnsupportedFormat, "unsupported-format"),
    "bmp": ("avatar.bmp", img.bmp, UnsupportedFormat, "unsupported-format"),
    "tiff": ("avatar.jpg", img.tiff, UnsupportedFormat, "unsupported-format"),
    "mp4": ("avatar.heic", img.mp4_header, UnsupportedFormat, "unsupported-format"),
    "empty": ("avatar.jpg", lambda: b"", InvalidImage, "empty-file"),
    "truncated-jpeg": ("avatar.jpg", img.truncated_jpeg, InvalidImage, "truncated-image"),
    "jpeg-magic-garbage": ("avatar.jpg", img.jpeg_magic_then_garbage, InvalidImage, "invalid-image"),
    "png-bomb": ("bomb.png", img.png_bomb, ImageTooLarge, "too-many-pixels"),
    "too-wide": ("wide.png", img.png_wide, ImageTooLarge, "image-too-large"),
}


@pytest.mark.parametrize("case", REJECTED)
async def test_refusals_carry_their_class_and_code(pipeline, tmp_path, case):
    name, factory, cls, code = REJECTED[case]

    with pytest.raises(cls) as caught:
        await run(pipeline, tmp_path, factory(), name)

    assert caught.value.code == code
    assert str(tmp_path) not in caught.value.message


async def test_too_many_frames_is_refused(tmp_path):
    pipe = Pipeline(PipelineSettings(max_frames=3, workers=1))
    try:
        with pytest.raises(ImageTooLarge) as caught:
            await pipe.process(img.write(tmp_path, "a.gif", img.gif_animated(frames=5)), tmp_path / "out")
    finally:
        await pipe.aclose()
    assert caught.value.code == "too-many-frames"


async def test_pixel_limit_is_the_configured_one(tmp_path):
    pipe = Pipeline(PipelineSettings(max_pixels=10_000, workers=1))
    try:
        with pytest.raises(ImageTooLarge) as caught:
            await pipe.process(img.write(tmp_path, "a.png", img.png_rgb(200, 100)), tmp_path / "out")
    finally:
        await pipe.aclose()
    assert caught.value.code == "too-many-pixels"


def test_bomb_is_refused_quickly_and_without_decoding(tmp_path):
    # In a fresh interpreter so that its peak RSS is the bomb's cost alone.
    source = img.write(tmp_path, "bomb.png", img.png_bomb())
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from avatars import PipelineSettings, ImageTooLarge\n"
        "from avatars._render import init_worker, render_avatar\n"
        "init_worker(40_000_000)\n"
        "def hwm():\n"
        "    status = Path('/proc/self/status').read_text().split('VmHWM:')[1]\n"
        "    return int(status.split()[0])\n"
        "before = hwm()\n"
        "t = time.perf_counter()\n"
        "try:\n"
        "    render_avatar(Path(sys.argv[1]), Path(sys.argv[2]), PipelineSettings())\n"
        "except ImageTooLarge as e:\n"
        "    print(e.code, time.perf_counter() - t, hwm() - before)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(source), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout.split()
    code, seconds, grown_kib = out[0], float(out[1]), int(out[2])
    assert code == "too-many-pixels"
    assert seconds < 0.5
    assert grown_kib < 20 * 1024  # 30000x30000 would be ~900 MB decoded


@pytest.mark.parametrize("factory", [img.jpeg_html_polyglot, img.gif_jar_polyglot], ids=["jpeg+html", "gif+jar"])
async def test_polyglot_payloads_do_not_survive(pipeline, tmp_path, factory):
    processed = await run(pipeline, tmp_path, factory())

    for path in stills(processed).values():
        data = path.read_bytes()
        for trace in (img.SECRET, b"<script", b"<html", b"PK\x03\x04", b"MANIFEST"):
            assert trace not in data
        assert_upright_quadrants(decode(path))


async def test_processing_does_not_block_the_event_loop(pipeline, tmp_path):
    import asyncio

    source = img.write(tmp_path, "big.jpg", img.jpeg(3000, 2000))
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    started = time.perf_counter()
    await pipeline.process(source, tmp_path / "out")
    task.cancel()
    assert ticks > 10, f"the loop ran only {ticks} times in {time.perf_counter() - started:.3f}s"


# -- animation -------------------------------------------------------------------


@pytest.fixture(scope="module")
async def animating_pipeline():
    pipe = Pipeline(PipelineSettings(keep_animation=True, workers=1))
    yield pipe
    await pipe.aclose()


@pytest.mark.parametrize("factory", [img.gif_animated, img.webp_animated], ids=["gif", "webp"])
async def test_keep_animation_adds_animated_webp_next_to_the_still_avatar(animating_pipeline, tmp_path, factory):
    processed = await run(animating_pipeline, tmp_path, factory(frames=5))

    animated = [r for r in processed.renditions if r.animated]
    assert sorted(r.size for r in animated) == [64, 128, 256]
    for r in animated:
        im = Image.open(r.path)
        assert r.media_type == "image/webp" and im.format == "WEBP"
        assert im.n_frames == 5 and im.size == (r.size, r.size)
        assert_upright_quadrants(im.convert("RGB"))  # frame 0
        im.seek(3)
        expected = ((3 * 37) % 256, (3 * 91) % 256, (3 * 53) % 256)
        assert close(im.convert("RGB").getpixel((r.size // 2, r.size // 2)), expected)
        assert im.info["duration"] == (60 if factory is img.gif_animated else 80)
        assert_no_metadata(r.path)
    still_paths = stills(processed)
    assert len(still_paths) == 4 and all(getattr(Image.open(p), "n_frames", 1) == 1 for p in still_paths.values())


async def test_keep_animation_leaves_stills_alone(animating_pipeline, tmp_path):
    processed = await run(animating_pipeline, tmp_path, img.jpeg())

    assert not any(r.animated for r in processed.renditions)


async def test_animated_output_is_deterministic(animating_pipeline, tmp_path):
    source = img.write(tmp_path, "a.gif", img.gif_animated(frames=4))
    first = await animating_pipeline.process(source, tmp_path / "one")
    second = await animating_pipeline.process(source, tmp_path / "two")

    assert first.digest == second.digest


# -- encoder effort and the resize chain (docs/performance.md, "W5: real photos") -------------


def test_webp_effort_follows_the_setting(tmp_path):
    from avatars._render import render_avatar

    made = {}
    for method in (0, 6):
        processed = render_avatar(SEED, tmp_path / f"m{method}", PipelineSettings(webp_method=method))
        made[method] = rendition(processed, 512).path.read_bytes()
    assert made[0] != made[6]
    assert len(made[6]) < len(made[0])  # more effort, fewer bytes, same quality setting
    assert decode(rendition(processed, 512).path).size == (512, 512)


def test_webp_effort_out_of_range_is_refused():
    with pytest.raises(ValueError, match="webp_method"):
        PipelineSettings(webp_method=7)


async def test_smaller_sizes_look_like_a_direct_resize_of_the_largest(pipeline, tmp_path):
    """Smaller sizes are made later from the largest WebP (a second lossy generation); each must
    still look like the largest rendition resized straight to it."""
    processed = await run(pipeline, tmp_path, SEED.read_bytes())
    paths = stills(processed)
    largest = decode(paths[512]).convert("RGB")
    for size in (256, 128, 64):
        direct = largest.resize((size, size), Image.Resampling.LANCZOS)
        made = decode(paths[size]).convert("RGB")
        # From the histogram of differences: squaring the 8-bit difference image would clip at 255.
        diff = ImageChops.difference(direct, made)
        squared = sum(count * (level % 256) ** 2 for level, count in enumerate(diff.histogram()))
        assert 10 * math.log10(255**2 / max(squared / (3 * size * size), 1e-9)) > 30, size
