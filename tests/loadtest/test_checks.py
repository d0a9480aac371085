"""The load-test kit's judge of answers (loadtest/checks.py): what counts as wrong."""

from __future__ import annotations

import pytest

from loadtest.checks import WrongAnswer, documented_codes, judge

CODES = documented_codes()


def test_the_codes_a_flaky_client_meets_are_documented() -> None:
    for code in (
        "offset-mismatch",
        "upload-locked",
        "upload-expired",
        "rate-limited",
        "chunk-conflict",
        "body-timeout",
    ):
        assert code in CODES


def test_expected_status_passes_and_documented_refusal_is_not_wrong() -> None:
    assert judge(204, b"", {204}, CODES) is None
    assert judge(429, b'{"error": "slow down", "code": "rate-limited"}', {204}, CODES) == "rate-limited"


@pytest.mark.parametrize(
    "status, body",
    [
        (409, b'{"error": "x", "code": "made-up-code"}'),  # undocumented code
        (400, b"not json"),  # no machine-readable code
        (500, b'{"error": "x", "code": "invalid-json"}'),  # a status nobody expects
        (200, b"{}"),  # a success where another was expected
    ],
)
def test_wrong_answers(status: int, body: bytes) -> None:
    with pytest.raises(WrongAnswer):
        judge(status, body, {204}, CODES)
