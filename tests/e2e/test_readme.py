"""The README's curl walk-through works as written (against a test server instead of port 8000)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_walkthrough_runs_as_written(server, tmp_path):
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- walkthrough:start -->\n```bash\n(.*?)```\n<!-- walkthrough:end -->", readme, re.S)
    assert block, "README lost its walk-through"
    script = block.group(1).replace("127.0.0.1:8000", f"127.0.0.1:{server.port}")
    script = script.replace("/tmp/", f"{tmp_path}/")
    # The token command reads config.yaml; point it at the test server's secret.
    script = script.replace(
        ".venv/bin/python -m server token alice",
        f"{sys.executable} -m server token alice --config {server.config_path}",
    )
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    answers = [json.loads(line) for line in lines[:3]]
    assert [a["received_chunks"] for a in answers] == [[2], [0, 2], [0, 1, 2]]
    assert answers[-1]["complete"] is True
    assert json.loads(lines[3])["version"] == answers[-1]["avatar"]["version"]
    assert lines[4] == "200 image/webp"
    assert (tmp_path / "avatar.webp").read_bytes()[8:12] == b"WEBP"
