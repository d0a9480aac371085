"""The JSON chunk API's field rules checked without a server: the base64 it accepts for `file`,
and the plain names it accepts for `file_name`."""

from __future__ import annotations

import base64

import pytest

from tests.unit._targets import BadRequest, check_chunk_file_name, chunk_base64, problem_for


def refused(check, value: str, code: str) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        check(value)
    assert (problem_for(caught.value).status, caught.value.code) == (400, code)
    return caught.value


# -- base64 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"\x00", b"hello", bytes(range(256)), b"\xfb\xff\xfe"])
def test_standard_padded_base64_decodes_to_its_bytes(data):
    assert chunk_base64(base64.b64encode(data).decode()) == data


@pytest.mark.parametrize("text", ["aGVs\nbG8=", "aGVsbG8=\r\n", " aGVs bG8= ", "aGVs\r\nbG8=\n", "\taGVsbG8="])
def test_line_breaks_and_spaces_inside_base64_are_ignored(text):
    assert chunk_base64(text) == b"hello"


@pytest.mark.parametrize(
    "text",
    [
        "aGVsbG8",  # padding missing
        "aGVsbG8==",  # one "=" too many
        "aGVsbG8=====",
        "aGVsbG9=",  # the last character carries bits that are not zero
        "-_8=",  # the URL-safe alphabet
        "aGVsbG8*",
        "aGVs=bG8=",
        "data:image/jpeg;base64,aGVsbG8=",
        "aGVsbG8é",
    ],
)
def test_base64_that_is_not_canonical_standard_base64_is_refused(text):
    refused(chunk_base64, text, "invalid-base64")


@pytest.mark.parametrize("text", ["", "   ", "\r\n"])
def test_empty_base64_is_an_empty_file(text):
    refused(chunk_base64, text, "empty-file")


# -- file_name --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["me.jpg", "a", "..jpg", "my photo (1).JPG", "café 😀.jpg", "é" * 255, ".hidden"])
def test_a_plain_file_name_of_1_to_255_characters_is_accepted(name):
    assert check_chunk_file_name(name) is None


@pytest.mark.parametrize("name", ["", "n" * 256, "é" * 256])
def test_a_file_name_outside_1_to_255_characters_is_refused(name):
    assert "1 to 255" in refused(check_chunk_file_name, name, "invalid-file-name").message


@pytest.mark.parametrize("name", [".", "..", "a/b.jpg", "../me.jpg", "a\\b.jpg", "/me.jpg", "C:\\me.jpg"])
def test_a_file_name_that_is_a_path_is_refused(name):
    refused(check_chunk_file_name, name, "invalid-file-name")


@pytest.mark.parametrize("name", ["a\x00.jpg", "a\nb.jpg", "\tme.jpg", "me.jpg\x7f", "\x1b[31m.jpg"])
def test_a_file_name_with_control_characters_is_refused(name):
    refused(check_chunk_file_name, name, "invalid-file-name")
