"""tus 1.0.0 request headers parsed without a server: `Upload-Metadata`, `Upload-Concat`, and the
file name and type a client describes in its metadata."""

from __future__ import annotations

import base64

import pytest

from tests.unit._targets import BadRequest, problem_for, tus_concat, tus_described_file, tus_metadata

ID_A = "a" * 32
ID_B = "B-_" + "b" * 29


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def refused(parse, header: str | None, code: str) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        parse(header)
    assert caught.value.code == code
    assert problem_for(caught.value).status == 400
    return caught.value


# -- Upload-Metadata --------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "", "   "])
def test_no_metadata_is_an_empty_mapping(header):
    assert tus_metadata(header) == {}


def test_metadata_values_are_kept_as_the_base64_sent():
    header = f"filename {b64('me.jpg')},filetype {b64('image/jpeg')}"
    assert tus_metadata(header) == {"filename": b64("me.jpg"), "filetype": b64("image/jpeg")}


def test_a_metadata_key_without_a_value_has_an_empty_value():
    assert tus_metadata(f"is_confidential,filename {b64('a')}") == {"is_confidential": "", "filename": b64("a")}


def test_spaces_around_metadata_pairs_and_values_are_ignored():
    assert tus_metadata(f"  name   {b64('x')} ,  other {b64('y')}  ") == {"name": b64("x"), "other": b64("y")}


def test_a_metadata_value_may_encode_non_ascii_text():
    assert tus_metadata(f"filename {b64('café 😀.jpg')}") == {"filename": b64("café 😀.jpg")}


def test_a_duplicate_metadata_key_is_refused():
    refused(tus_metadata, f"filename {b64('a')},filename {b64('b')}", "invalid-metadata")


@pytest.mark.parametrize("header", [f",filename {b64('a')}", f"filename {b64('a')},", f"a {b64('a')},,b"])
def test_an_empty_metadata_key_is_refused(header):
    refused(tus_metadata, header, "invalid-metadata")


@pytest.mark.parametrize("key", ["schlüssel", "ключ", "a\tb", "a\x00"])
def test_a_metadata_key_must_be_printable_ascii(key):
    refused(tus_metadata, f"{key} {b64('v')}", "invalid-metadata")


@pytest.mark.parametrize("value", ["not base64!", "YQ", "YQ=", "Y Q==", "YQ==\x00", "é==="])
def test_a_metadata_value_that_is_not_base64_is_refused(value):
    error = refused(tus_metadata, f"key {value}", "invalid-metadata")
    assert "'key'" in error.message


def test_metadata_up_to_the_limit_is_accepted_and_one_character_more_is_refused():
    longest = "key " + "A" * 8188
    assert len(longest) == 8192
    assert tus_metadata(longest) == {"key": "A" * 8188}
    refused(tus_metadata, longest + " ", "invalid-metadata")


# -- Upload-Concat ----------------------------------------------------------------------------


def test_no_concat_header_is_a_plain_upload():
    assert tus_concat(None) == (None, [])


@pytest.mark.parametrize("header", ["partial", "  partial "])
def test_a_partial_upload_names_no_parts(header):
    assert tus_concat(header) == ("partial", [])


def test_a_final_upload_lists_its_parts_in_order():
    assert tus_concat(f"final;/files/{ID_B} /files/{ID_A}") == ("final", [ID_B, ID_A])


def test_final_upload_parts_may_be_absolute_urls_with_query_and_fragment():
    header = f"final;https://avatars.example/files/{ID_A}?x=1 http://h:8080/prefix/files/{ID_B}#top"
    assert tus_concat(header) == ("final", [ID_A, ID_B])


def test_final_upload_parts_may_be_separated_by_several_spaces():
    assert tus_concat(f"final; /files/{ID_A}   /files/{ID_B} ") == ("final", [ID_A, ID_B])


@pytest.mark.parametrize(
    "header", ["", "final", "final;", "final;   ", "partial;/files/" + ID_A, "whole;/files/" + ID_A]
)
def test_a_concat_header_of_another_shape_is_refused(header):
    refused(tus_concat, header, "invalid-concat")


@pytest.mark.parametrize(
    "url", [f"/uploads/{ID_A}", "/files/short", f"/files/{ID_A}/", f"/files/{'a' * 31}.", "/files/"]
)
def test_a_final_upload_part_that_is_not_one_of_our_uploads_is_refused(url):
    refused(tus_concat, f"final;/files/{ID_B} {url}", "invalid-concat")


def test_a_foreign_part_url_is_quoted_in_the_error_cut_to_100_characters():
    url = "https://elsewhere.example/" + "x" * 500
    error = refused(tus_concat, f"final;{url}", "invalid-concat")
    assert repr(url[:100]) in error.message and url[:101] not in error.message


def test_a_final_upload_naming_a_part_twice_is_refused():
    refused(tus_concat, f"final;/files/{ID_A} /files/{ID_B} /files/{ID_A}", "invalid-concat")


def test_a_final_upload_has_at_most_1000_parts():
    ids = [f"{n:032d}" for n in range(1001)]
    assert tus_concat("final;" + " ".join(f"/files/{i}" for i in ids[:1000])) == ("final", ids[:1000])
    refused(tus_concat, "final;" + " ".join(f"/files/{i}" for i in ids), "invalid-concat")


# -- the described file -----------------------------------------------------------------------


def described(**values: str) -> tuple[str, str]:
    return tus_described_file({key: b64(value) for key, value in values.items()})


def test_an_undescribed_file_has_no_name_and_no_type():
    assert tus_described_file({}) == ("", "")


def test_the_file_name_keeps_only_its_last_path_segment():
    assert described(filename="photos/2024/me.jpg") == ("me.jpg", "")
    assert described(filename="C:\\Users\\me\\me.jpg") == ("me.jpg", "")
    assert described(filename="../../etc/passwd") == ("passwd", "")


def test_the_file_name_drops_control_characters_and_keeps_non_ascii():
    assert described(filename="ca\nfé\x00 😀.jpg") == ("café 😀.jpg", "")


def test_the_file_name_is_cut_to_255_characters():
    name, _ = described(filename="é" * 300)
    assert name == "é" * 255


def test_a_file_name_that_is_not_utf8_or_not_base64_is_dropped():
    assert tus_described_file({"filename": base64.b64encode(b"\xff\xfe.jpg").decode()}) == ("", "")
    assert tus_described_file({"filename": "not base64"}) == ("", "")


def test_the_file_type_is_trimmed_and_lowercased():
    assert described(filetype="  Image/JPEG ") == ("", "image/jpeg")


@pytest.mark.parametrize("file_type", ["image/jpég", "image/\x01jpeg", "image/" + "x" * 95])
def test_a_file_type_that_is_not_short_printable_ascii_is_dropped(file_type):
    assert described(filetype=file_type) == ("", "")
