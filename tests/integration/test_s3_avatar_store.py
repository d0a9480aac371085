"""What only the S3 avatar store has to get right: old versions' objects go after the switch,
removal leaves no object, and a public base URL turns renditions into redirects."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from avatars import PipelineSettings
from avatars._render import init_worker, render_avatar
from avatars.s3_store import S3AvatarStore
from tests.support import images as img
from tests.support.s3 import Bucket, fresh_prefix


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    init_worker(PipelineSettings().max_pixels)
    root = tmp_path_factory.mktemp("rendered")
    return [
        render_avatar(
            img.write(root, f"{i}.jpg", img.jpeg(64, 64, colour=(i * 40, 90, 200))), root / str(i), PipelineSettings()
        )
        for i in range(2)
    ]


def make_store(bucket: Bucket, tmp_path: Path, **kwargs) -> S3AvatarStore:
    return S3AvatarStore(bucket.client, bucket.name, prefix=fresh_prefix(), **kwargs)


async def test_a_second_swap_leaves_only_the_new_version_and_remove_leaves_nothing(bucket, tmp_path, rendered):
    store = make_store(bucket, tmp_path)
    await store.swap_in("alice", rendered[0])
    second = await store.swap_in("alice", rendered[1])

    keys, _ = await bucket.leftovers(store.prefix)
    versions = {key.split("/")[-2] for key in keys if "/v-" in key}
    assert len(versions) == 1 and next(iter(versions)).startswith(f"v-{second.version}-")
    assert len(keys) == 1 + len(rendered[1].renditions)  # the pointer and the new renditions

    assert await store.remove("alice") is True
    assert await bucket.leftovers(store.prefix) == ([], [])


async def test_with_a_public_base_url_a_rendition_is_a_url_to_its_object(bucket, tmp_path, rendered):
    store = make_store(bucket, tmp_path, public_base_url="https://cdn.example/avatars-bucket/")
    await store.swap_in("alice", rendered[0])

    found = await store.rendition("alice", 64, "image/jpeg")

    assert found.path is None
    assert found.url.startswith(f"https://cdn.example/avatars-bucket/{store.prefix}avatars/")
    key = found.url.removeprefix("https://cdn.example/avatars-bucket/")
    answer = await bucket.client.get_object(Bucket=bucket.name, Key=key)
    async with answer["Body"] as body:
        data = await body.read()
    # The JPEG fallback is made when first asked for, from the largest WebP, and put beside it.
    assert answer["ContentType"] == "image/jpeg"
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "JPEG" and im.size == (64, 64)
    assert answer["CacheControl"] == "public, max-age=31536000, immutable"
