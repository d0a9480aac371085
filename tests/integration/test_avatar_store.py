"""The avatar store: atomic swaps, negotiation, hostile user ids.

`store` runs every test against each backend in BACKENDS; tests that look at the local store's
files on disk take `local_store` and are skipped for other backends.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from avatars import AvatarStore, LocalAvatarStore, PipelineSettings, ProcessedAvatar, RenditionFile
from avatars._fallback import deferred_entries, make_deferred
from avatars._render import init_worker, render_avatar
from avatars.s3_store import S3AvatarStore
from tests.support import images as img
from tests.support.s3 import Bucket, fresh_prefix

REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "tests" / "fixtures" / "seed001.jpg"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, ProcessedAvatar]:
    """Real pipeline output, rendered once in this process (no pool needed here)."""
    init_worker(PipelineSettings().max_pixels)
    root = tmp_path_factory.mktemp("rendered")
    sources = {
        "seed": SEED,
        "alpha": img.write(root, "alpha.png", img.png_alpha()),
        **{f"flat{i}": img.write(root, f"flat{i}.jpg", img.jpeg(64, 64, colour=(i * 20, 90, 200))) for i in range(8)},
    }
    return {name: render_avatar(path, root / name, PipelineSettings()) for name, path in sources.items()}


BACKENDS = ["local", "s3"]


def avatar_store(backend: str, root: Path, bucket: Bucket | None = None) -> AvatarStore:
    if backend == "local":
        return LocalAvatarStore(root)
    if backend == "s3":
        assert bucket is not None, "the s3 backend needs the bucket fixture"
        return S3AvatarStore(bucket.client, bucket.name, prefix=fresh_prefix())
    raise ValueError(f"no avatar store backend named {backend!r}")


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> AvatarStore:
    bucket = request.getfixturevalue("bucket") if request.param == "s3" else None
    return avatar_store(request.param, tmp_path / "store", bucket)


@pytest.fixture()
def local_store(store: AvatarStore) -> LocalAvatarStore:
    if not isinstance(store, LocalAvatarStore):
        pytest.skip("looks at the local store's files")
    return store


def version_dirs(store: LocalAvatarStore) -> list[Path]:
    return sorted(p for p in store.root.rglob("v-*") if p.is_dir())


def pointer(store: LocalAvatarStore) -> dict:
    (path,) = store.root.rglob("current.json")
    return json.loads(path.read_text())


async def test_swap_in_makes_the_avatar_current_and_describes_it(store, rendered):
    version = await store.swap_in("alice", rendered["seed"])

    assert await store.current("alice") == version
    assert version.version == rendered["seed"].digest
    assert (version.width, version.height) == (512, 512)
    assert version.sizes == (512, 256, 128, 64)
    assert version.media_types == ("image/webp", "image/jpeg")
    assert version.source_format == "JPEG"
    described = version.describe("https://cdn.example")
    assert described["urls"]["128"] == f"https://cdn.example/avatars/alice/{version.version}/128.webp"
    assert described["fallback_urls"]["64"].endswith("/64.jpg")
    assert described["content_type"] == "image/webp"
    assert described["updated_at"].endswith("+00:00")
    json.dumps(described)


async def test_a_user_without_avatar_has_nothing(store):
    assert await store.current("nobody") is None
    assert await store.rendition("nobody", None, None) is None
    assert await store.remove("nobody") is False


async def test_second_swap_switches_pointer_and_deletes_the_old_files(local_store, rendered):
    first = await local_store.swap_in("alice", rendered["flat0"])
    (old_dir,) = version_dirs(local_store)
    second = await local_store.swap_in("alice", rendered["flat1"])

    assert not old_dir.exists()
    (new_dir,) = version_dirs(local_store)
    assert pointer(local_store)["directory"] == new_dir.name
    assert (await local_store.current("alice")).version == second.version != first.version
    assert await local_store.rendition("alice", 64, None, version=first.version) is None
    assert await local_store.rendition("alice", 64, None, version=second.version) is not None


async def test_stored_files_are_byte_identical_to_the_renditions(store, rendered):
    await store.swap_in("alice", rendered["seed"])
    for r in rendered["seed"].renditions:
        found = await store.rendition("alice", r.size, r.media_type)
        assert found.media_type == r.media_type
        assert await read_rendition(found) == r.path.read_bytes()
        assert found.etag == f'"{r.sha256}"'
        assert found.content_length == r.path.stat().st_size


async def read_rendition(found: RenditionFile) -> bytes:
    """What a server answering with `found` sends: its bytes, from a file or streamed from the bucket."""
    opened = await found.open()
    assert opened is not None, "the rendition is gone"
    body, length = opened
    try:
        data = b""
        while block := await body.read(7000):
            data += block
    finally:
        body.close()
    assert len(data) == length
    return data


async def test_a_rendition_found_before_a_swap_opens_as_gone_and_one_opened_before_reads_whole(store, rendered):
    await store.swap_in("alice", rendered["seed"])
    stale = await store.rendition("alice", 512, "image/webp")
    opened = await (await store.rendition("alice", 512, "image/webp")).open()
    assert opened is not None
    await store.swap_in("alice", rendered["alpha"])

    assert await stale.open() is None  # the server asks again and gets the new version
    body, length = opened
    try:
        data = await body.read(length + 1)
        while block := await body.read(length):
            data += block
    finally:
        body.close()
    expected = next(r for r in rendered["seed"].renditions if r.size == 512 and r.media_type == "image/webp")
    assert data == expected.path.read_bytes()
    fresh = await store.rendition("alice", 64, "image/webp")
    assert fresh.version == rendered["alpha"].digest


@pytest.mark.parametrize(
    "accept, expected",
    [
        (None, "image/webp"),
        ("", "image/webp"),
        ("*/*", "image/webp"),
        ("image/avif,image/webp,image/apng,image/*,*/*;q=0.8", "image/webp"),
        ("image/jpeg", "image/jpeg"),
        ("image/png,image/jpeg;q=0.9", "image/jpeg"),
        ("image/webp;q=0, */*", "image/jpeg"),
        ("image/*;q=0.5, image/jpeg", "image/jpeg"),
        ("text/html", "image/jpeg"),
    ],
)
async def test_rendition_format_follows_the_accept_header(store, rendered, accept, expected):
    await store.swap_in("alice", rendered["seed"])

    found = await store.rendition("alice", 128, accept)

    assert found.media_type == expected


async def test_transparent_avatars_fall_back_to_png(store, rendered):
    await store.swap_in("alice", rendered["alpha"])

    assert (await store.rendition("alice", 128, "image/png")).media_type == "image/png"
    assert (await store.rendition("alice", 128, "image/webp")).media_type == "image/webp"


def psnr(a: Image.Image, b: Image.Image) -> float:
    # From the histogram of differences: squaring the 8-bit difference image itself would clip at 255.
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    squared = sum(count * (level % 256) ** 2 for level, count in enumerate(diff.histogram()))
    return 10 * math.log10(255**2 / max(squared / (3 * diff.width * diff.height), 1e-9))


@pytest.mark.parametrize("size", [512, 128])
async def test_a_fallback_first_asked_for_is_made_from_the_webp_and_then_kept(store, rendered, size):
    await store.swap_in("alice", rendered["seed"])
    webp = Image.open(io.BytesIO(await read_rendition(await store.rendition("alice", size, "image/webp"))))

    first = await store.rendition("alice", size, "image/jpeg")
    data = await read_rendition(first)
    again = await store.rendition("alice", size, "image/jpeg")

    jpeg = Image.open(io.BytesIO(data))
    assert (jpeg.format, jpeg.size, jpeg.mode) == ("JPEG", (size, size), "RGB")
    assert "exif" not in jpeg.info and not jpeg.getexif() and "icc_profile" not in jpeg.info
    assert psnr(jpeg, webp) > 30  # the same picture, one JPEG encode away
    assert (again.etag, again.media_type) == (first.etag, "image/jpeg")
    assert await read_rendition(again) == data


async def test_a_transparent_avatars_png_fallback_keeps_its_alpha(store, rendered):
    await store.swap_in("alice", rendered["alpha"])

    png = Image.open(io.BytesIO(await read_rendition(await store.rendition("alice", 128, "image/png"))))

    assert (png.format, png.size, png.mode) == ("PNG", (128, 128), "RGBA")
    assert png.getpixel((16, 64))[3] < 10 and png.getpixel((112, 16))[3] > 245  # left clear, right opaque


async def test_fallbacks_are_written_on_the_first_request_only(local_store, rendered):
    await local_store.swap_in("alice", rendered["seed"])
    (version,) = version_dirs(local_store)
    assert sorted(p.name for p in version.iterdir()) == ["512.webp"]  # an upload makes the largest WebP only

    await read_rendition(await local_store.rendition("alice", 256, "image/jpeg"))
    made = (version / "256.jpg").stat()
    await read_rendition(await local_store.rendition("alice", 256, "image/jpeg"))
    await read_rendition(await local_store.rendition("alice", 256, "image/jpeg", rendered["seed"].digest))

    kept = (version / "256.jpg").stat()
    assert (kept.st_ino, kept.st_mtime_ns) == (made.st_ino, made.st_mtime_ns)
    assert sorted(p.name for p in version.iterdir() if p.suffix != ".webp") == ["256.jpg"]


@pytest.mark.parametrize("accept, name", [("image/jpeg", "128.jpg"), ("image/webp", "128.webp")])
async def test_concurrent_first_requests_for_a_deferred_rendition_get_the_same_bytes(store, rendered, accept, name):
    await store.swap_in("alice", rendered["seed"])

    async def fetch() -> tuple[str, bytes]:
        found = await store.rendition("alice", 128, accept)
        return found.etag, await read_rendition(found)

    answers = await asyncio.gather(*(fetch() for _ in range(8)))

    assert len(set(answers)) == 1
    assert Image.open(io.BytesIO(answers[0][1])).size == (128, 128)
    if isinstance(store, LocalAvatarStore):
        (version,) = version_dirs(store)
        assert sorted(p.name for p in version.iterdir()) == sorted(["512.webp", name])  # kept; no temp left


async def test_smaller_sizes_are_made_on_the_first_request_and_kept(local_store, rendered):
    await local_store.swap_in("alice", rendered["seed"])
    (version,) = version_dirs(local_store)

    first = await read_rendition(await local_store.rendition("alice", 64, "image/webp"))
    made = (version / "64.webp").stat()
    again = await read_rendition(await local_store.rendition("alice", 64, None, rendered["seed"].digest))

    assert first == again and Image.open(io.BytesIO(first)).size == (64, 64)
    kept = (version / "64.webp").stat()
    assert (kept.st_ino, kept.st_mtime_ns) == (made.st_ino, made.st_mtime_ns)
    assert sorted(p.name for p in version.iterdir()) == ["512.webp", "64.webp"]


@pytest.mark.parametrize(
    "wanted, served", [(None, 512), (512, 512), (100, 128), (96, 128), (70, 64), (1, 64), (9000, 512)]
)
async def test_size_picks_the_nearest_configured_one(store, rendered, wanted, served):
    await store.swap_in("alice", rendered["seed"])

    found = await store.rendition("alice", wanted, None)

    assert found.size == served and found.media_type == "image/webp"
    data = await read_rendition(found)
    assert Image.open(io.BytesIO(data)).size == (served, served)
    # Exact, except from a bucket for a rendition made on this request (not known ahead: 0).
    assert found.content_length == len(data) or (found.path is None and found.content_length == 0)


@pytest.mark.parametrize("user_id", ["../../etc/passwd", "a/b", "/abs", "..", "ünï 🙂", "x" * 500, ""])
async def test_hostile_user_ids_stay_inside_the_root(local_store, rendered, user_id):
    version = await local_store.swap_in(user_id, rendered["seed"])

    found = await local_store.rendition(user_id, None, None)
    assert found.path.resolve().is_relative_to(local_store.root.resolve())
    assert (await local_store.current(user_id)).user_id == user_id
    assert await local_store.current(user_id + "x") is None
    assert version.describe()["urls"]["64"].count("/") == 4


async def test_remove_deletes_files_and_pointer(local_store, rendered):
    await local_store.swap_in("alice", rendered["seed"])
    await local_store.swap_in("bob", rendered["alpha"])

    assert await local_store.remove("alice") is True

    assert await local_store.current("alice") is None
    assert await local_store.rendition("alice", None, None) is None
    assert await local_store.remove("alice") is False
    assert len(version_dirs(local_store)) == 1  # bob's
    assert (await local_store.current("bob")).source_format == "PNG"


async def test_concurrent_swaps_for_one_user_leave_exactly_one_version(local_store, rendered):
    avatars = [rendered[f"flat{i}"] for i in range(8)]

    await asyncio.gather(*(local_store.swap_in("alice", a) for a in avatars))

    (only,) = version_dirs(local_store)
    current = pointer(local_store)
    assert current["directory"] == only.name
    assert current["version"] in {a.digest for a in avatars}
    # Every file the pointer names as made; the fallbacks are made when first asked for.
    made = [f["name"] for f in current["files"] if "deferred" not in f]
    assert sorted(p.name for p in only.iterdir()) == sorted(made)


async def test_swaps_from_two_processes_sharing_the_root_leave_one_version(local_store, rendered):
    script = (
        "import asyncio, pickle, sys\n"
        "from pathlib import Path\n"
        "from avatars import LocalAvatarStore\n"
        "avatars = pickle.loads(bytes.fromhex(sys.argv[2]))\n"
        "async def main():\n"
        "    store = LocalAvatarStore(Path(sys.argv[1]))\n"
        "    for a in avatars:\n"
        "        await store.swap_in('alice', a)\n"
        "asyncio.run(main())\n"
    )
    import pickle

    payload = pickle.dumps([rendered[f"flat{i}"] for i in range(8)]).hex()
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(local_store.root), payload], cwd=REPO) for _ in range(2)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]

    (only,) = version_dirs(local_store)
    assert pointer(local_store)["directory"] == only.name
    assert not list(local_store.root.rglob("*.tmp"))


def first_made(processed: ProcessedAvatar, size: int) -> tuple[bytes, str]:
    """The bytes and ETag of the smaller WebP `size` the store makes when first asked for."""
    largest = processed.renditions[0]
    made = [
        {
            "size": largest.size,
            "media_type": "image/webp",
            "animated": False,
            "name": "512.webp",
            "sha256": largest.sha256,
        }
    ]
    entry = next(e for e in deferred_entries(processed, made) if e["size"] == size and e["media_type"] == "image/webp")
    return make_deferred(largest.path.read_bytes(), entry), f'"{entry["sha256"]}"'


@pytest.mark.parametrize("size", [512, 64], ids=["made-at-upload", "made-when-first-asked"])
async def test_readers_never_see_a_mix_of_versions_during_swaps(local_store, rendered, size):
    """Every read during repeated swaps finds an avatar, whole and of the version it names (the
    64 px one is made by the reader, under the user's lock held shared, while swaps go on)."""
    avatars = [rendered[f"flat{i}"] for i in range(4)]
    await local_store.swap_in("alice", avatars[0])
    if size == 512:
        expected = {a.digest: (a.renditions[0].path.read_bytes(), f'"{a.renditions[0].sha256}"') for a in avatars}
    else:
        expected = {a.digest: first_made(a, size) for a in avatars}
    done = threading.Event()
    mismatches: list[str] = []

    def read_forever() -> int:
        reads = 0
        while not done.is_set():
            found = local_store._rendition("alice", size, None, None, False)
            assert found is not None, "an avatar exists at every moment of a swap"
            try:
                data = found.path.read_bytes()
            except FileNotFoundError:
                continue  # deleted after we looked: the next read sees the new pointer
            if (data, found.etag) != expected[found.version]:
                mismatches.append(found.path.name)
            reads += 1
        return reads

    reader = asyncio.create_task(asyncio.to_thread(read_forever))
    for a in avatars * 5:
        await local_store.swap_in("alice", a)
    done.set()
    assert await reader > 0
    assert mismatches == []


async def test_a_crashed_swap_leftover_is_cleaned_by_the_next_swap(local_store, rendered):
    await local_store.swap_in("alice", rendered["flat0"])
    (user_dir,) = {p.parent for p in version_dirs(local_store)}
    (user_dir / "v-leftover-00000000").mkdir()
    (user_dir / ".current.json.dead.tmp").write_text("{")

    await local_store.swap_in("alice", rendered["flat1"])

    assert [p.name for p in version_dirs(local_store)] == [pointer(local_store)["directory"]]
    assert not list(user_dir.glob("*.tmp"))


async def test_swap_refuses_a_rendition_changed_after_processing(local_store, rendered, tmp_path):
    import dataclasses

    source = rendered["flat2"].renditions[0]
    tampered_path = tmp_path / "tampered.webp"
    tampered_path.write_bytes(source.path.read_bytes() + b"<script>")
    tampered = dataclasses.replace(rendered["flat2"], renditions=(dataclasses.replace(source, path=tampered_path),))

    with pytest.raises(ValueError):
        await local_store.swap_in("alice", tampered)
    assert await local_store.current("alice") is None
    assert version_dirs(local_store) == []


async def test_animated_renditions_are_served_only_when_asked_for(store, tmp_path):
    settings = PipelineSettings(keep_animation=True)
    processed = render_avatar(img.write(tmp_path, "a.gif", img.gif_animated(frames=3)), tmp_path / "out", settings)
    version = await store.swap_in("alice", processed)

    assert version.animated and version.describe()["animated"]
    still = await store.rendition("alice", 128, None)
    moving = await store.rendition("alice", 128, None, animated=True)
    assert not still.animated and moving.animated
    expected = next(r for r in processed.renditions if r.size == 128 and r.animated and r.media_type == "image/webp")
    assert await read_rendition(moving) == expected.path.read_bytes()
    assert (await store.rendition("alice", 128, "image/jpeg", animated=True)).media_type == "image/jpeg"
    assert not (await store.rendition("alice", 512, None, animated=True)).animated  # none at 512
