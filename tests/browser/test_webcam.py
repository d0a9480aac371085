"""A picture taken with the camera becomes the avatar (Chromium's fake camera stands in for a real one)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.browser.avatar_page import AvatarPage
from tests.browser.conftest import launch_chromium

OpenPage = Callable[..., AvatarPage]


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    # A generated test pattern for a camera, and camera permission granted without a prompt.
    with launch_chromium("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream") as browser:
        yield browser


def test_a_picture_from_the_camera_becomes_the_avatar(
    open_page: OpenPage, token: Callable[..., str], user: str
) -> None:
    page = open_page(permissions=["camera"]).open()
    page.sign_in(token(user))
    page.page.get_by_role("tab", name="Camera").click()
    shutter = page.page.get_by_role("button", name="Take a picture")
    shutter.wait_for()
    page.page.wait_for_function(
        "() => { const v = document.querySelector('.uppy-Webcam-video'); return v && v.videoWidth > 0 }"
    )
    page.shot("camera")
    shutter.click()
    page.page.locator(".uppy-Webcam-button--submit").click()
    page.editor()
    page.save_edit()
    page.upload()
    page.wait_for_avatar()
    page.wait_for_message("Your new avatar is live")
    page.shot("camera-avatar")
