"""A short headless run of the load-test kit (`python -m loadtest`) against a real server process
with the embedded Redis: every simulated client checks every answer, so any wrong one fails here."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.server import ROOT

pytestmark = pytest.mark.timeout(120)


def test_short_load_run_has_no_wrong_answer(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AVS_", "LOADTEST_"))}
    env |= {
        "LOADTEST_OUT": str(tmp_path),
        "LOADTEST_USERS": "6",
        "LOADTEST_SECONDS": "15",
        "LOADTEST_SPAWN_RATE": "6",
        "LOADTEST_STOP_TIMEOUT": "15",
        # Half-size pictures, cut and lost often, left uploads back within the run: every behaviour shows.
        "LOADTEST_IMAGE_SCALE": "0.5",
        "LOADTEST_WEIGHTS": "phone=2,web=1,app=2,reader=1",
        "LOADTEST_CUT_RATE": "0.5",
        "LOADTEST_CHUNK_KIB": "16,48",
        "LOADTEST_JSON_CHUNK_KIB": "32",
        "LOADTEST_COMEBACK_SECONDS": "1,3",
        "LOADTEST_THINK_SECONDS": "0.2,1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "loadtest"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=110
    )
    output = done.stdout[-6000:] + done.stderr[-4000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["failures"] == 0, output
    assert done.returncode == 0, output
    rows = {
        (r["Type"], r["Name"]): int(r["Request Count"]) for r in csv.DictReader((tmp_path / "locust_stats.csv").open())
    }
    # The run did what it is for: avatars checked pixel by pixel, PATCHes cut and resumed, chunks lost.
    assert rows.get(("CHECK", "avatar pixels"), 0) > 0, output
    assert rows.get(("PATCH", "/files/[id] cut mid-body"), 0) > 0, output
    assert rows.get(("CHECK", "offset after a cut"), 0) > 0, output
    assert (tmp_path / "report.html").stat().st_size > 0
    assert (tmp_path / "metrics-after.txt").read_text().count("tusd_uploads_finished_total") > 0
