"""README.md: every endpoint curl example runs as written (against a test server), in order."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"<!-- endpoints:(?:setup|example) -->\n```bash\n(.*?)```", re.S)


def test_every_curl_example_succeeds(server, tmp_path):
    blocks = BLOCK.findall((ROOT / "README.md").read_text())
    assert len(blocks) >= 8, "README lost its endpoint examples"
    script = "\n".join(blocks).replace("/tmp/", f"{tmp_path}/")
    script = script.replace("BASE=http://127.0.0.1:8000", f"BASE={server.url}")
    script = script.replace("-m server token alice", f"-m server token alice --config {server.config_path}")
    script = script.replace(".venv/bin/python", sys.executable)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=90
    )
    assert result.returncode == 0, f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    gravatar = "https://gravatar.com/avatar/" + hashlib.sha256(b"alice@example.com").hexdigest()
    assert f"302 {gravatar}?d=mp&s=128" in result.stdout
    assert (tmp_path / "alice.webp").read_bytes()[8:12] == b"WEBP"
    assert (tmp_path / "alice-64.webp").read_bytes()[8:12] == b"WEBP"
