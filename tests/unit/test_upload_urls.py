"""Which URLs name an upload of this server: the parser tus's `Upload-Concat: final;...` relies on."""

from __future__ import annotations

import pytest

from tests.unit._targets import upload_id_from_url

UPLOAD_ID = "Zx-_09" + "a" * 26


@pytest.mark.parametrize(
    "url",
    [
        f"/files/{UPLOAD_ID}",
        f"https://avatars.example/files/{UPLOAD_ID}",
        f"http://127.0.0.1:8080/files/{UPLOAD_ID}",
        f"https://avatars.example/api/v1/files/{UPLOAD_ID}",
        f"/files/{UPLOAD_ID}?token=x",
        f"/files/{UPLOAD_ID}#part",
        f"/files/{UPLOAD_ID}?a=/files/x#/files/y",
    ],
)
def test_an_upload_url_names_its_upload(url):
    assert upload_id_from_url(url) == UPLOAD_ID


def test_the_last_files_segment_names_the_upload():
    assert upload_id_from_url(f"/files/{'b' * 32}/files/{UPLOAD_ID}") == UPLOAD_ID


@pytest.mark.parametrize(
    "url",
    [
        "",
        "/files/",
        "/files",
        f"/uploads/{UPLOAD_ID}",
        f"{UPLOAD_ID}",
        f"/files/{UPLOAD_ID}/",
        f"/files/{UPLOAD_ID}x",
        f"/files/{UPLOAD_ID[:-1]}",
        f"/files/{UPLOAD_ID[:-1]}.",
        f"/files/{UPLOAD_ID[:-3]}%2F",
        f"/FILES/{UPLOAD_ID}",
    ],
)
def test_a_url_that_names_no_upload_of_ours_has_no_upload_id(url):
    assert upload_id_from_url(url) is None
