"""Image pipeline benchmark: `python -m tests.bench.images` (or `make bench-images`).

For each input (generated once in a temp dir) it measures, in a fresh child
process per case so memory numbers are not polluted by earlier cases:
  - avatar:   Pipeline.process + LocalAvatarStore.swap_in (all sizes, WebP + fallback)
  - baseline: plain Pillow open -> exif_transpose -> fit -> save WebP for each size
Peak memory is the kernel's high-water mark (VmHWM) of the process that
decodes: the pool worker for the pipeline, the child itself for the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = (512, 256, 128, 64)
CASES = {
    # name: (file name, runs)
    "JPEG 24 MP": ("photo24mp.jpg", 7),
    "HEIC 12 MP": ("photo12mp.heic", 5),
    "PNG 4000x4000": ("screen4000.png", 5),
    "GIF 200 frames": ("anim200.gif", 7),
}


# -- inputs ----------------------------------------------------------------------


def _photo(width: int, height: int):
    """Smooth gradients plus sensor-like noise: compresses like a real photo."""
    from PIL import Image

    red = Image.linear_gradient("L").resize((width, height))
    green = Image.radial_gradient("L").resize((width, height))
    blue = Image.effect_noise((width, height), 40)
    base = Image.merge("RGB", (red, green, blue))
    noise = Image.effect_noise((width, height), 18).convert("RGB")
    return Image.blend(base, noise, 0.15)


def make_inputs(directory: Path) -> dict[str, Path]:
    import pillow_heif
    from PIL import Image

    pillow_heif.register_heif_opener()
    paths = {name: directory / file_name for name, (file_name, _) in CASES.items()}
    exif = Image.Exif()
    exif[0x0112] = 6  # a phone held upright: the pipeline must rotate
    _photo(6000, 4000).save(paths["JPEG 24 MP"], "JPEG", quality=90, exif=exif.tobytes())
    _photo(4032, 3024).save(paths["HEIC 12 MP"], "HEIF", quality=80)
    screen = _photo(4000, 4000).convert("RGBA")
    screen.save(paths["PNG 4000x4000"], "PNG", compress_level=1)
    frames = []
    for i in range(200):
        frame = Image.new("P", (480, 480), i % 16)
        frame.putpalette([(c * 16 + i) % 256 for c in range(48)] * 16)
        frame.paste((i * 7) % 16, (i * 2, i * 2, i * 2 + 40, i * 2 + 40))
        frames.append(frame)
    frames[0].save(paths["GIF 200 frames"], "GIF", save_all=True, append_images=frames[1:], duration=40, loop=0)
    return paths


# -- one case, in a child process ------------------------------------------------------


def _hwm_kib(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


async def _run_avatar(source: Path, runs: int) -> dict:
    import psutil

    from avatars import LocalAvatarStore, Pipeline, PipelineSettings

    pipeline = Pipeline(PipelineSettings(sizes=SIZES, workers=1))
    work = Path(tempfile.mkdtemp(prefix="bench-avatar-"))
    store = LocalAvatarStore(work / "store")
    times = []
    try:
        for i in range(runs + 1):  # the first run starts the worker: not timed
            started = time.perf_counter()
            processed = await pipeline.process(source, work / f"w{i}")
            await store.swap_in("bench-user", processed)
            if i:
                times.append(time.perf_counter() - started)
        workers = [p for p in psutil.Process().children(recursive=True) if p.pid]
        worker_peak = max((_hwm_kib(p.pid) for p in workers), default=0)
    finally:
        await pipeline.aclose()
    return {"times": times, "peak_kib": worker_peak, "parent_kib": _hwm_kib()}


def _run_baseline(source: Path, runs: int) -> dict:
    import pillow_heif
    from PIL import Image, ImageOps

    pillow_heif.register_heif_opener()
    out = Path(tempfile.mkdtemp(prefix="bench-baseline-"))
    times = []
    for i in range(runs + 1):
        started = time.perf_counter()
        with Image.open(source) as im:
            upright = ImageOps.exif_transpose(im)
            for size in SIZES:
                ImageOps.fit(upright, (size, size), Image.Resampling.LANCZOS).save(out / f"{size}.webp", quality=82)
        if i:
            times.append(time.perf_counter() - started)
    return {"times": times, "peak_kib": _hwm_kib(), "parent_kib": _hwm_kib()}


def _child(mode: str, source: Path, runs: int) -> None:
    result = asyncio.run(_run_avatar(source, runs)) if mode == "avatar" else _run_baseline(source, runs)
    print(json.dumps(result))


def measure(mode: str, source: Path, runs: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "tests.bench.images", "--child", mode, str(source), str(runs)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- the table -------------------------------------------------------------------------


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-images-") as tmp:
        print("generating inputs...", file=sys.stderr)
        inputs = make_inputs(Path(tmp))
        header = f"{'input':<16} {'size':>8} | {'avatar ms':>9} {'peak MB':>8} | {'baseline ms':>11} {'peak MB':>8} | {'speed-up':>8}"
        print(header)
        print("-" * len(header))
        for name, path in inputs.items():
            runs = CASES[name][1]
            avatar = measure("avatar", path, runs)
            baseline = measure("baseline", path, runs)
            a_ms = statistics.median(avatar["times"]) * 1000
            b_ms = statistics.median(baseline["times"]) * 1000
            print(
                f"{name:<16} {path.stat().st_size / 1e6:>6.1f}MB | {a_ms:>9.0f} {avatar['peak_kib'] / 1024:>8.0f} |"
                f" {b_ms:>11.0f} {baseline['peak_kib'] / 1024:>8.0f} | {b_ms / a_ms:>7.1f}x"
            )
        print(
            "\navatar = Pipeline.process + LocalAvatarStore.swap_in (4 sizes x WebP + fallback), median of warm runs;"
            "\npeak MB = VmHWM of the decoding process (pool worker / baseline process);"
            " the avatar's event-loop process peaked separately and is not included."
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=3, metavar=("MODE", "SOURCE", "RUNS"))
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], Path(args.child[1]), int(args.child[2]))
    else:
        main()
