"""schemathesis against the server's own `/openapi.json`, served by a real server process.

Every documented operation gets generated requests, schema-valid (positive) and, where a
parameter or body can be made invalid, schema-invalid (negative), sent with a valid Bearer
token. Every answer goes through schemathesis's checks: no 5xx, a documented status, content
type and headers, a body matching the response schema, invalid data refused with a 4xx.
Examples are bounded and derandomized so the module takes seconds, not minutes.

Left out:
- the tus / IETF `/files` operations: their bodies are opaque bytes whose meaning lives in
  headers (Upload-Offset, Upload-Length, Upload-Checksum ...) that schemathesis can only fill
  with random strings, so it would exercise nothing but the header parser. They have their
  own conformance suites (`test_tus_conformance.py`, `test_ietf_conformance.py`) and the
  hostile battery (`test_hostile.py`).
- the `positive_data_acceptance` check: a body that is valid by the document (any bytes, any
  base64, any data URI) is almost never a decodable image, so the upload operations rightly
  answer 415/422 to it. What the document can say (name lengths, size ranges) it says; the
  regression tests at the end hold those.

schemathesis's own pytest loader (`schemathesis.pytest.from_fixture`) does not run on pytest
9.2 (it reads `Function._nodeid`), so each operation is a plain parametrized test driving
`APIOperation.as_strategy()` with hypothesis.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from server.protocols import openapi_document
from server.settings import Settings
from tests.support.encoding import b64

# The operations of a server with every protocol on (the `server` fixture's config), minus /files.
PATHS = {path: item for path, item in openapi_document(Settings())["paths"].items() if not path.startswith("/files")}
EXAMPLES = {GenerationMode.POSITIVE: 25, GenerationMode.NEGATIVE: 15}


def _negatable(operation: dict[str, Any]) -> bool:
    """Only a body or a query/header parameter can be made schema-invalid (path strings cannot)."""
    return "requestBody" in operation or any(p["in"] != "path" for p in operation.get("parameters", []))


CASES = [
    (method.upper(), path, mode)
    for path, item in PATHS.items()
    for method, operation in item.items()
    for mode in EXAMPLES
    if mode is GenerationMode.POSITIVE or _negatable(operation)
]


@pytest.fixture(scope="module")
def api_schema(server: Any) -> Any:
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json")


def test_the_served_document_is_the_one_fuzzed(server: Any) -> None:
    served = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert {p: sorted(i) for p, i in served.items() if not p.startswith("/files")} == {
        p: sorted(i) for p, i in PATHS.items()
    }


@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=[f"{m} {p} {g.value}" for m, p, g in CASES])
def test_every_answer_is_documented_and_never_5xx(
    api_schema: Any,
    server: Any,
    token: Callable[..., str],
    user: str,
    method: str,
    path: str,
    mode: GenerationMode,
) -> None:
    operation = api_schema[path][method]
    headers = {"Authorization": f"Bearer {token(user)}"}

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES[mode],
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        case.call_and_validate(
            base_url=server.url, headers=headers, timeout=30, excluded_checks=[positive_data_acceptance]
        )

    check()


# Findings of the runs above, kept as regressions: the document said less than the server checks.


def test_the_document_bounds_the_avatar_size_the_way_the_server_does(server: Any) -> None:
    size = openapi_document(Settings())["paths"]["/avatars/{user_id}"]["get"]["parameters"][1]["schema"]
    assert (size["minimum"], size["maximum"]) == (1, 999_999_999)
    for bad in ("0", "-7304596", "1000000000", "\u00b2", "1\u0662"):  # superscript two: isdigit() but not int()
        r = httpx.get(f"{server.url}/avatars/nobody", params={"size": bad})
        assert (r.status_code, r.json()["code"]) == (400, "invalid-size")
    # Any size the document allows is taken (the nearest configured square is served).
    r = httpx.get(f"{server.url}/avatars/nobody", params={"size": "999999999"})
    assert (r.status_code, r.json()["code"]) == (404, "avatar-not-found")


def test_the_document_bounds_the_chunk_file_name_the_way_the_server_does(
    server: Any,
    auth: dict[str, str],
) -> None:
    name = openapi_document(Settings())["components"]["schemas"]["ChunkRequest"]["properties"]["file_name"]
    assert (name["minLength"], name["maxLength"]) == (1, 255)
    for bad in ("", "n" * 256):
        r = httpx.post(
            f"{server.url}/accounts/profile-image",
            headers=auth,
            json={"file_name": bad, "content_type": "image/png", "file": b64(b"x")},
        )
        assert (r.status_code, r.json()["code"]) == (400, "invalid-file-name")
