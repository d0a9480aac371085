"""The avatar page as a person uses it, driven through Playwright: one method per thing they do."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The state Golden Retriever keeps for after a reload: how many file blobs are in IndexedDB,
# and the tus upload URL of each file in its stored metadata (keyed by the page's Uppy id).
# Also the pixel size of each stored picture: what the page will upload, edits included.
_STORED_STATE = """async () => {
  const db = await new Promise((ok, fail) => {
    const request = indexedDB.open('uppy-blobs');
    request.onsuccess = () => ok(request.result);
    request.onerror = () => fail(request.error);
  });
  const read = (name, query) => new Promise((ok, fail) => {
    const request = query(db.transaction([name]).objectStore(name));
    request.onsuccess = () => ok(request.result);
    request.onerror = () => fail(request.error);
  });
  const blobs = await read('files', (store) => store.getAll());
  const record = await read('metadata', (store) => store.get('avatar'));
  db.close();
  const sizes = await Promise.all(blobs.map(async (blob) => {
    const bitmap = await createImageBitmap(blob.data).catch(() => null);
    return bitmap ? [bitmap.width, bitmap.height] : null;
  }));
  const files = record ? Object.values(JSON.parse(record.metadata).files ?? {}) : [];
  return { blobs: blobs.length, sizes, uploadUrls: files.map((file) => (file.tus && file.tus.uploadUrl) || null) };
}"""


@dataclass
class TusRequest:
    method: str
    url: str
    offset: int | None


@dataclass
class AvatarPage:
    page: Any
    base_url: str
    shots_dir: Path
    csp_violations: list[str] = field(default_factory=list)
    tus: list[TusRequest] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    # Shared by the pages of one test, so its screenshots are numbered in the order taken.
    shot_numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self.page.on("console", self._console)
        self.page.on("request", self._request)

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text:
            self.csp_violations.append(message.text)

    def _request(self, request: Any) -> None:
        self.urls.append(request.url)
        if "/files/" not in request.url or request.method == "OPTIONS":
            return
        offset = request.headers.get("upload-offset")
        self.tus.append(TusRequest(request.method, request.url, int(offset) if offset else None))

    def shot(self, name: str) -> Path:
        """A screenshot of this step, numbered in order, in the test's output directory."""
        path = self.shots_dir / f"{next(self.shot_numbers):02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def open(self, path: str = "/") -> AvatarPage:
        self.page.goto(self.base_url + path)
        self.page.locator(".uppy-Dashboard").wait_for()
        return self

    def sign_in(self, token: str) -> None:
        self.page.locator("#token").fill(token)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.locator("#signed-in").wait_for()

    def avatar_caption(self) -> str:
        return str(self.page.locator("#avatar-caption").text_content())

    def wait_for_caption(self, words: str) -> None:
        self.page.locator("#avatar-caption", has_text=words).wait_for()

    def choose_file(self, path: Path) -> None:
        """Pick a file in the operating system's file chooser, as "browse files" opens it."""
        with self.page.expect_file_chooser() as chooser:
            self.page.get_by_role("button", name="browse files").click()
        chooser.value.set_files(str(path))

    def editor(self) -> Any:
        """The image editor, which opens by itself on a chosen picture, once its crop box is up."""
        self.page.locator(".cropper-crop-box").wait_for()
        return self.page.locator(".uppy-DashboardContent-panel")

    def rotate(self) -> None:
        self.page.get_by_role("button", name="Rotate 90°").click()

    def save_edit(self) -> None:
        self.page.locator(".uppy-DashboardContent-save").click()
        self.page.locator(".cropper-crop-box").wait_for(state="detached")

    def skip_edit(self) -> None:
        """Leave the image editor with the picture as it was (Cancel)."""
        panel = self.page.locator(".uppy-DashboardContent-panel")
        panel.locator(".uppy-DashboardContent-back").click()
        panel.wait_for(state="detached")

    def upload(self) -> None:
        self.page.locator(".uppy-StatusBar-actionBtn--upload").click()

    def message(self) -> Any:
        return self.page.locator("#message")

    def wait_for_message(self, words: str) -> str:
        box = self.page.locator("#message", has_text=words)
        box.wait_for()
        return str(box.text_content())

    def wait_for_avatar(self, not_version: str | None = None) -> str:
        """The versioned URL the page shows once the avatar is there (and differs from `not_version`)."""
        image = self.page.locator("#avatar")
        image.wait_for()
        if not_version is not None:
            self.page.wait_for_function("v => document.getElementById('avatar').dataset.version !== v", arg=not_version)
        return str(image.get_attribute("src"))

    def stored_state(self) -> dict[str, Any]:
        return dict(self.page.evaluate(_STORED_STATE))

    def poll(self, condition: Callable[[], Any], what: str, deadline_seconds: float = 10.0) -> Any:
        """Wait for `condition()` to be truthy, letting Playwright deliver events in between."""
        deadline = time.monotonic() + deadline_seconds
        while not (result := condition()):
            assert time.monotonic() < deadline, f"gave up waiting for {what}"
            self.page.wait_for_timeout(25)
        return result

    def wait_until_stored(self) -> dict[str, Any]:
        """Golden Retriever's state once it holds the file and its upload URL (it writes lazily)."""

        def stored() -> dict[str, Any] | None:
            state = self.stored_state()
            return state if state["blobs"] >= 1 and state["uploadUrls"] and all(state["uploadUrls"]) else None

        return self.poll(stored, "Golden Retriever to store the upload")
