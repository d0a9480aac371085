"""The IETF resumable-upload draft's request headers read without a server: the Structured Field
booleans and lengths, the completeness flag per interop version, the interop version itself, and
the file name a `Content-Disposition` carries."""

from __future__ import annotations

import pytest

from tests.support.asgi import request_with
from tests.unit._targets import (
    BadRequest,
    ietf_completeness,
    ietf_file_name,
    problem_for,
    sf_boolean,
    sf_length,
    version_of,
)


def refused(read, request, *args, code: str) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        read(request, *args)
    assert (problem_for(caught.value).status, caught.value.code) == (400, code)
    return caught.value


# -- sf-boolean -------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [("?1", True), ("?0", False)])
def test_a_boolean_field_reads_its_value(value, expected):
    assert sf_boolean(request_with(upload_complete=value), "upload-complete") is expected


@pytest.mark.parametrize("value", ["?1;param", "?1; a=1;b", " ?1 ", "?1 ;x=?0"])
def test_a_boolean_fields_parameters_and_surrounding_spaces_are_ignored(value):
    assert sf_boolean(request_with(upload_complete=value), "upload-complete") is True


def test_a_missing_boolean_field_has_no_value():
    assert sf_boolean(request_with(), "upload-complete") is None


@pytest.mark.parametrize("value", ["", "1", "0", "?2", "?", "true", "?1?0", ";?1", "?¹"])
def test_a_boolean_field_with_any_other_value_is_ignored(value):
    assert sf_boolean(request_with(upload_complete=value), "upload-complete") is None


def test_a_repeated_boolean_field_is_read_from_its_first_line():
    request = request_with(("upload-complete", "?0"), ("upload-complete", "?1"))
    assert sf_boolean(request, "upload-complete") is False


# -- non-negative sf-integer ------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [("0", 0), ("1234", 1234), (" 7 ", 7), ("012", 12)])
def test_a_length_field_reads_its_integer(value, expected):
    assert sf_length(request_with(upload_length=value), "upload-length") == expected


def test_a_length_fields_parameters_are_ignored():
    assert sf_length(request_with(upload_length="100;unit=bytes"), "upload-length") == 100


def test_a_length_field_takes_up_to_15_digits():
    assert sf_length(request_with(upload_length="9" * 15), "upload-length") == 10**15 - 1
    assert sf_length(request_with(upload_length="1" + "0" * 15), "upload-length") is None


@pytest.mark.parametrize("value", ["-1", "-0", "+5", "", "1.5", "1e3", "0x10", "12 34", "?1", "¹²"])
def test_a_length_field_that_is_not_a_non_negative_integer_is_ignored(value):
    assert sf_length(request_with(upload_length=value), "upload-length") is None


def test_a_missing_length_field_has_no_value():
    assert sf_length(request_with(), "upload-length") is None


# -- completeness -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", [4, 5, 6, 7, 8])
@pytest.mark.parametrize(("value", "complete"), [("?1", True), ("?0", False), ("?1;x=1", True)])
def test_from_interop_version_4_upload_complete_says_whether_this_is_the_last_request(version, value, complete):
    assert ietf_completeness(request_with(upload_complete=value), version) is complete


@pytest.mark.parametrize(("value", "complete"), [("?1", False), ("?0", True)])
def test_interop_version_3_says_the_opposite_with_upload_incomplete(value, complete):
    assert ietf_completeness(request_with(upload_incomplete=value), 3) is complete


@pytest.mark.parametrize(
    ("headers", "version"),
    [
        ({}, 8),
        ({}, 3),
        ({"upload_complete": "yes"}, 8),
        ({"upload_incomplete": "?0"}, 8),
        ({"upload_complete": "?1"}, 3),
    ],
)
def test_an_upload_without_a_readable_completeness_flag_is_refused(headers, version):
    refused(ietf_completeness, request_with(**headers), version, code="missing-upload-complete")


# -- interop version --------------------------------------------------------------------------


@pytest.mark.parametrize("version", [3, 4, 5, 6, 7, 8])
def test_each_supported_interop_version_is_read(version):
    assert version_of(request_with(upload_draft_interop_version=str(version))) == version


def test_spaces_around_the_interop_version_are_ignored():
    assert version_of(request_with(upload_draft_interop_version=" 6 ")) == 6


@pytest.mark.parametrize("value", ["", "2", "9", "08x", "-3", "+3", "3.0", "3;a", "?1", "1" * 40])
def test_an_unsupported_interop_version_is_refused_naming_the_supported_ones(value):
    error = refused(version_of, request_with(upload_draft_interop_version=value), code="unsupported-interop-version")
    assert "3, 4, 5, 6, 7, 8" in error.message


def test_a_request_without_an_interop_version_is_refused():
    refused(version_of, request_with(), code="unsupported-interop-version")


def test_a_non_ascii_digit_as_interop_version_is_refused():
    # b"\xb3" is "³" in Latin-1, which is how header bytes are read: a digit to isdigit(), not to int().
    refused(version_of, request_with(upload_draft_interop_version=b"\xb3"), code="unsupported-interop-version")


# -- Content-Disposition file name -------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        'attachment; filename="me.jpg"',
        "attachment; filename=me.jpg",
        "inline;FILENAME = me.jpg;size=3",
        'filename="me.jpg"',
    ],
)
def test_the_file_name_is_read_quoted_or_bare_in_any_case(header):
    assert ietf_file_name(request_with(content_disposition=header)) == "me.jpg"


@pytest.mark.parametrize("header", [None, "", "attachment", 'attachment; name="me.jpg"'])
def test_without_a_file_name_the_name_is_empty(header):
    request = request_with() if header is None else request_with(content_disposition=header)
    assert ietf_file_name(request) == ""


def test_the_file_name_keeps_only_its_last_path_segment():
    assert ietf_file_name(request_with(content_disposition='attachment; filename="a/b/me.jpg"')) == "me.jpg"
    assert ietf_file_name(request_with(content_disposition=r'attachment; filename="C:\\me\\me.jpg"')) == "me.jpg"


def test_the_file_name_drops_control_characters_and_keeps_latin1():
    request = request_with(content_disposition='attachment; filename="ca\x01fé.jpg"')
    assert ietf_file_name(request) == "café.jpg"


def test_the_file_name_is_cut_to_255_characters():
    request = request_with(content_disposition=f'attachment; filename="{"n" * 400}.jpg"')
    assert ietf_file_name(request) == "n" * 255
