"""docs/operations.md and docs/grafana-dashboard.json name only metrics the server exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from server.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def _exported() -> set[str]:
    names = set()
    for family in Metrics().registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def _base(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def test_every_metric_the_docs_and_the_dashboard_name_is_exported():
    exported = {_base(n) for n in _exported()}
    doc = (ROOT / "docs" / "operations.md").read_text()
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for panel in dashboard["panels"] for t in panel["targets"])
    named = set(re.findall(r"\b((?:tusd|avs)_[a-z_]+)\b", doc + " " + exprs))
    # The tusd column of the table names tusd's own metrics, which are documented, not exported.
    tusd_only = {"tusd_uploads_created", "tusd_uploads_finished", "tusd_uploads_terminated", "tusd_bytes_received"}
    tusd_only |= {"tusd_connections_open"}
    missing = {n for n in named if _base(n) not in exported and n not in tusd_only}
    assert not missing, f"named but not exported: {sorted(missing)}"


def test_every_exported_metric_is_documented():
    doc = (ROOT / "docs" / "operations.md").read_text()
    for family in Metrics().registry.collect():
        assert family.name in doc, family.name
