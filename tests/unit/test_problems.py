"""The HTTP status, code and headers each known failure gets, whichever protocol renders it."""

from __future__ import annotations

import pytest

from tests.unit._targets import (
    AuthError,
    BadRequest,
    BodyError,
    BodyTimeout,
    BodyTooLarge,
    Disconnected,
    ImageTooLarge,
    InvalidImage,
    InvalidJson,
    MethodNotAllowed,
    RedisError,
    UnsupportedFormat,
    chunks,
    error,
    problem_for,
)

STATUS = [
    (chunks.UploadNotFound, 404),
    (chunks.UploadGone, 410),
    (chunks.OffsetMismatch, 409),
    (chunks.ChecksumMismatch, 460),
    (chunks.ChunkConflict, 409),
    (chunks.SessionConflict, 409),
    (chunks.UploadTooLarge, 413),
    (chunks.InvalidRequest, 400),
    (chunks.UploadBusy, 423),
    (chunks.StorageFull, 507),
    (chunks.StoreUnavailable, 503),
    (chunks.QuotaExceeded, 429),
    (chunks.UploadError, 400),
    (AuthError, 401),
    (BodyTooLarge, 413),
    (BodyTimeout, 408),
    (InvalidJson, 400),
    (Disconnected, 400),
    (BodyError, 400),
    (UnsupportedFormat, 415),
    (ImageTooLarge, 413),
    (InvalidImage, 422),
    (RedisError, 503),
]


@pytest.mark.parametrize(("kind", "status"), STATUS, ids=[kind.__name__ for kind, _ in STATUS])
def test_each_known_failure_has_its_status(kind, status):
    problem = problem_for(error(kind))
    assert problem is not None
    assert problem.status == status


@pytest.mark.parametrize(("kind", "status"), STATUS, ids=[kind.__name__ for kind, _ in STATUS])
def test_a_subclass_of_a_known_failure_has_its_parents_status(kind, status):
    subclass = type(f"Special{kind.__name__}", (kind,), {})
    problem = problem_for(error(subclass))
    assert problem is not None and problem.status == status


@pytest.mark.parametrize("kind", [kind for kind, _ in STATUS if kind is not RedisError], ids=lambda kind: kind.__name__)
def test_a_known_failure_keeps_its_code_and_message(kind):
    failure = error(kind, message="what went wrong")
    problem = problem_for(failure)
    assert problem is not None
    assert (problem.code, problem.message) == (failure.code, "what went wrong")


def test_a_core_failure_carries_the_code_it_was_given():
    problem = problem_for(error(chunks.SessionConflict, code="length-mismatch"))
    assert problem is not None and problem.code == "length-mismatch"


def test_a_protocol_rejection_has_the_status_it_names():
    assert problem_for(error(BadRequest, code="invalid-concat")).status == 400
    assert problem_for(error(MethodNotAllowed, code="method-not-allowed")).status == 405


def test_a_redis_failure_is_a_retryable_503_that_names_no_redis_detail():
    problem = problem_for(RedisError("Connection refused to 10.0.0.5:6379"), retry_after=9)
    assert problem is not None
    assert (problem.status, problem.code, problem.headers) == (503, "store-unavailable", {"Retry-After": "9"})
    assert "6379" not in problem.message


@pytest.mark.parametrize("kind", [chunks.UploadBusy, chunks.StoreUnavailable])
def test_a_busy_or_unavailable_upload_says_when_to_retry(kind):
    assert problem_for(error(kind), retry_after=5).headers == {"Retry-After": "5"}


def test_a_quota_failure_says_when_the_quota_frees_up():
    problem = problem_for(chunks.QuotaExceeded("too many", retry_after=42), retry_after=5)
    assert problem is not None and problem.headers == {"Retry-After": "42"}


def test_an_authentication_failure_names_the_bearer_scheme():
    problem = problem_for(error(AuthError))
    assert problem is not None and problem.headers == {"WWW-Authenticate": 'Bearer realm="avatars"'}


def test_a_body_timeout_closes_the_connection():
    problem = problem_for(error(BodyTimeout))
    assert problem is not None and problem.headers == {"Connection": "close"}


@pytest.mark.parametrize(
    "kind", [chunks.UploadNotFound, chunks.OffsetMismatch, BodyTooLarge, UnsupportedFormat, BadRequest]
)
def test_other_failures_carry_no_headers(kind):
    assert problem_for(error(kind)).headers == {}


@pytest.mark.parametrize("failure", [ValueError("x"), KeyError("x"), RuntimeError("x"), KeyboardInterrupt()])
def test_a_bug_has_no_problem_so_it_becomes_a_logged_500(failure):
    assert problem_for(failure) is None
