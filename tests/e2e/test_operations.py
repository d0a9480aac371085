"""What an operator sees: /metrics moved by real uploads, its token, and the per-request log lines."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from tests.support import images
from tests.support.config import API_KEY, JWT_SECRET
from tests.support.metrics import scrape, value
from tests.support.server import ServerProcess, StartServer
from tests.support.tus import TUS, create, eventually, patch, upload_id

METRICS_TOKEN = "metrics-" + "7" * 32


@pytest.fixture(scope="module")
def observed(start_module_server: StartServer) -> ServerProcess:
    return start_module_server(
        server={"metrics_token": METRICS_TOKEN, "log_format": "json", "log_level": "info"},
        limits={"max_open_uploads": 1},
    )


def _delta(before: dict, after: dict, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_metrics_need_the_bearer_token(observed):
    assert httpx.get(f"{observed.url}/metrics").status_code == 401
    wrong = httpx.get(f"{observed.url}/metrics", headers={"Authorization": "Bearer " + "7" * 40})
    assert wrong.status_code == 401 and wrong.json()["code"] == "metrics-unauthorized"
    ok = httpx.get(f"{observed.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/plain")


def test_a_real_upload_moves_the_counters_by_the_right_amounts(observed, auth):
    data = images.jpeg()
    before = scrape(observed.url, METRICS_TOKEN)
    with httpx.Client(base_url=observed.url, timeout=30) as client:
        url = create(client, auth, len(data))
        assert patch(client, url, auth, 0, data).status_code == 204
    after = scrape(observed.url, METRICS_TOKEN)

    assert _delta(before, after, "tusd_uploads_created_total") == 1
    assert _delta(before, after, "tusd_uploads_finished_total") == 1
    assert _delta(before, after, "tusd_bytes_received_total") == len(data)
    assert _delta(before, after, "tusd_requests_total", method="POST", route="/files/", status="201") == 1
    assert _delta(before, after, "tusd_requests_total", method="PATCH", route="/files/{upload_id}", status="204") == 1
    assert _delta(before, after, "avs_image_processing_seconds_count", format="jpeg") == 1
    assert _delta(before, after, "avs_lock_wait_seconds_count", contended="false") >= 1


def test_refusals_terminations_and_limits_are_counted_by_kind(observed, auth):
    before = scrape(observed.url, METRICS_TOKEN)
    with httpx.Client(base_url=observed.url, timeout=30) as client:
        text = images.text_file()
        url = create(client, auth, len(text))
        assert patch(client, url, auth, 0, text).status_code == 415
        kept = create(client, auth, 100)
        # max_open_uploads is 1: a second open upload is refused.
        second = client.post("/files/", headers={**auth, **TUS, "Upload-Length": "100"})
        assert second.status_code == 429
        assert client.delete(kept, headers={**auth, **TUS}).status_code == 204
    after = scrape(observed.url, METRICS_TOKEN)

    assert _delta(before, after, "avs_uploads_failed_total", code="unsupported-format") == 1
    assert _delta(before, after, "tusd_uploads_terminated_total") == 1
    assert _delta(before, after, "avs_limit_rejections_total", kind="too-many-uploads") == 1
    assert _delta(before, after, "tusd_errors_total", status="429", code="too-many-uploads") == 1


def _lines(server: ServerProcess) -> list[dict]:
    text = server.log_path.read_text(errors="replace")
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_one_json_line_per_request_with_its_id_and_never_a_secret(observed, auth, user):
    data = images.png_rgb()
    with httpx.Client(base_url=observed.url, timeout=30) as client:
        url = create(client, auth, len(data))
        response = patch(client, url, auth, 0, data, **{"X-Request-Id": "client-chosen-42"})
        assert response.status_code == 204
        assert response.headers["x-request-id"] == "client-chosen-42"
        by_key = client.get("/me/avatar", headers={"X-Api-Key": API_KEY})
        bad = client.get("/me/avatar", headers={"Authorization": "Bearer not.a.token-secretish"})
        assert bad.status_code == 401
    # A request's line is written once its answer has gone out: wait for the last one.
    eventually(lambda: any(e.get("status") == 401 for e in _lines(observed)), what="the last request's log line")
    logged = (observed.log_path).read_bytes()
    lines = _lines(observed)
    (line,) = [entry for entry in lines if entry.get("request_id") == "client-chosen-42"]
    assert line["method"] == "PATCH" and line["route"] == "/files/{upload_id}" and line["status"] == 204
    assert line["user"] == user and line["upload_id"] == upload_id(url) and line["bytes"] == len(data)
    assert line["duration_ms"] >= 0
    (keyed,) = [e for e in lines if e.get("request_id") == by_key.headers["x-request-id"]]
    assert keyed["user"] == "api-key-user"

    token = auth["Authorization"].split(" ", 1)[1]
    middle = data[len(data) // 2 : len(data) // 2 + 24]
    for secret in (token.encode(), API_KEY.encode(), JWT_SECRET.encode(), METRICS_TOKEN.encode(), b"secretish"):
        assert secret not in logged
    for form in (middle, base64.b64encode(middle), middle.hex().encode()):
        assert form not in logged


def test_readable_lines_by_default(start_server, auth):
    server = start_server(server={"log_level": "info"})
    response = httpx.get(f"{server.url}/me/avatar", headers=auth)
    rid = response.headers["x-request-id"]
    # The line is written once the answer has gone out, so it may trail the response.
    line = eventually(
        lambda: next((line for line in server.log().splitlines() if f"request_id={rid}" in line), None),
        what="the request's log line",
    )
    assert "GET /me/avatar 404" in line and not line.startswith("{")
