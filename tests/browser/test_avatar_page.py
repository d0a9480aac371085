"""The avatar page in a real browser: choose, crop, upload, see; resume after a cut or a reload; refusals in words.

Each step leaves a numbered screenshot in the test's tmp_path. The page server allows 3 MiB and
2 megapixels per image (conftest.py); the page uploads in 1 MiB tus chunks.
"""

from __future__ import annotations

import io
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from tests.browser.avatar_page import AvatarPage
from tests.browser.conftest import MiB

ROOT = Path(__file__).resolve().parents[2]
README_SHOT = ROOT / "docs" / "page.png"
RED, BLUE = (220, 30, 30), (30, 60, 220)
OpenPage = Callable[..., AvatarPage]


def two_tone(path: Path) -> Path:
    """600x400: the top half red, the bottom half blue; a rotation shows in where the colours end up."""
    image = Image.new("RGB", (600, 400), BLUE)
    image.paste(RED, (0, 0, 600, 200))
    image.save(path, "PNG")
    return path


def noise(path: Path, side: int, seed: int) -> Path:
    """Random pixels, which PNG cannot compress: a file of about 3 x side² bytes."""
    pixels = random.Random(seed).randbytes(side * side * 3)
    Image.frombytes("RGB", (side, side), pixels).save(path, "PNG", compress_level=1)
    return path


def near(pixel: Any, colour: tuple[int, int, int], tolerance: int = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel[:3], colour, strict=True))


def patch_offsets(page: AvatarPage) -> list[int | None]:
    return [r.offset for r in page.tus if r.method == "PATCH"]


def test_choose_crop_rotate_upload_and_see_the_new_avatar(
    open_page: OpenPage, token: Callable[..., str], user: str, tmp_path: Path
) -> None:
    page = open_page().open()
    page.shot("signed-out")
    secret = token(user)
    page.sign_in(secret)
    page.wait_for_caption("no avatar yet")
    page.shot("signed-in")

    page.choose_file(two_tone(tmp_path / "two-tone.png"))
    page.editor()
    page.shot("editor-opens-square")
    page.rotate()  # a quarter turn to the left: the red top becomes the left side
    page.shot("rotated")
    page.save_edit()
    page.shot("cropped")
    # What the page keeps to upload (Golden Retriever's copy of the edited file) is square.
    page.poll(
        lambda: any(s and s[0] == s[1] >= 300 for s in page.stored_state()["sizes"]), "a square crop to be stored"
    )
    page.upload()
    src = page.wait_for_avatar()
    page.wait_for_message("Your new avatar is live")
    page.shot("new-avatar")

    avatar = Image.open(io.BytesIO(httpx.get(src).content)).convert("RGB")
    width, height = avatar.size
    assert width == height
    assert near(avatar.getpixel((width // 4, height // 2)), RED), "the rotation did not reach the avatar"
    assert near(avatar.getpixel((3 * width // 4, height // 2)), BLUE)
    assert not any(secret in url for url in page.urls), "the token appeared in a URL"
    assert page.page.evaluate("sessionStorage.getItem('avatar-page.token')") == secret
    if os.environ.get("UPDATE_SCREENSHOTS") == "1" or not README_SHOT.exists():
        page.page.screenshot(path=str(README_SHOT), full_page=True)


def test_an_upload_cut_mid_way_resumes_where_the_server_stands(
    open_page: OpenPage, token: Callable[..., str], user: str, tmp_path: Path
) -> None:
    page = open_page().open()
    page.sign_in(token(user))
    # The second chunk is lost twice: once before the server sees it, once after the server
    # stored it but before its answer arrives. Each time the client asks (HEAD) and goes on.
    cuts = ["before-the-server", "answer-lost"]

    def cut(route: Any) -> None:
        request = route.request
        if request.method == "PATCH" and request.headers.get("upload-offset") == str(MiB) and cuts:
            if cuts.pop(0) == "answer-lost":
                route.fetch()
            route.abort("connectionreset")
            return
        route.continue_()

    page.page.route("**/files/**", cut)
    page.choose_file(noise(tmp_path / "noise.png", 900, seed=1))
    page.skip_edit()
    page.shot("chosen")
    page.upload()
    page.wait_for_avatar()
    page.wait_for_message("Your new avatar is live")
    page.shot("resumed-to-the-end")

    assert cuts == []
    assert patch_offsets(page) == [0, MiB, MiB, 2 * MiB], "the upload did not resume from the server's offset"
    assert [r.method for r in page.tus].count("HEAD") == 2
    assert [r.method for r in page.tus].count("POST") == 1


def test_a_reload_mid_upload_resumes_from_the_stored_state(
    open_page: OpenPage, token: Callable[..., str], user: str, tmp_path: Path
) -> None:
    page = open_page().open()
    page.sign_in(token(user))
    held: list[Any] = []

    def hold_second_chunk(route: Any) -> None:
        if route.request.method == "PATCH" and route.request.headers.get("upload-offset") == str(MiB) and not held:
            held.append(route)  # never answered: the upload hangs mid-way, as on a dead network
            return
        route.continue_()

    page.page.route("**/files/**", hold_second_chunk)
    page.choose_file(noise(tmp_path / "noise.png", 900, seed=2))
    page.skip_edit()
    page.upload()
    page.poll(lambda: bool(held), "the second chunk to be sent")
    stored = page.wait_until_stored()
    page.shot("mid-upload")
    before_reload = len(page.tus)

    page.page.reload()
    page.wait_for_avatar()
    page.shot("resumed-after-reload")

    after = page.tus[before_reload:]
    assert [r.method for r in after if r.method != "HEAD"] == ["PATCH", "PATCH"], "a new upload was created"
    assert after[0].method == "HEAD" and after[0].url == stored["uploadUrls"][0]
    assert [r.offset for r in after if r.method == "PATCH"] == [MiB, 2 * MiB]


def test_an_svg_and_a_too_large_picture_are_refused_in_words(
    open_page: OpenPage, token: Callable[..., str], user: str, tmp_path: Path
) -> None:
    page = open_page().open()
    page.sign_in(token(user))
    svg = tmp_path / "drawing.svg"
    svg.write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'
    )
    page.choose_file(svg)
    text = page.wait_for_message("not a picture the server can use")
    assert "JPEG, PNG, WebP, GIF" in text
    page.shot("svg-refused")

    big = noise(tmp_path / "big.png", 1100, seed=3)
    assert big.stat().st_size > 3 * MiB
    page.choose_file(big)
    text = page.wait_for_message("too large")
    assert "at most 3 MB" in text
    page.shot("too-large-refused")
    assert page.tus == [], "a refused file was sent anyway"


def test_the_servers_refusals_are_shown_in_words(
    open_page: OpenPage, token: Callable[..., str], user: str, tmp_path: Path
) -> None:
    page = open_page().open()
    page.sign_in(token(user))
    huge = tmp_path / "huge.png"
    Image.new("RGB", (1500, 1500), RED).save(huge, "PNG")  # small file, 2.25 megapixels
    page.choose_file(huge)
    page.skip_edit()
    page.upload()
    text = page.wait_for_message("too many pixels")
    assert "2000000 pixels" in text, "the server's own detail is missing"
    page.shot("too-many-pixels")

    page = open_page().open()
    page.sign_in(token(user))
    disguised = tmp_path / "drawing.png"  # the browser believes the name; the server reads the bytes
    disguised.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>')
    page.choose_file(disguised)
    page.skip_edit()
    page.upload()
    page.wait_for_message("not a picture the server can use")
    page.shot("unsupported-format")


def test_the_page_fits_a_phone(open_page: OpenPage, token: Callable[..., str], user: str) -> None:
    page = open_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True)
    page.open()
    page.sign_in(token(user))
    page.wait_for_caption("no avatar yet")
    page.shot("phone")
    overflow = page.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than the phone's screen"
    dashboard = page.page.locator(".uppy-Dashboard-inner").bounding_box()
    assert dashboard is not None and dashboard["x"] >= 0 and dashboard["x"] + dashboard["width"] <= 390
