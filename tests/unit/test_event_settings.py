"""`events:` (a list of webhooks) and the observability settings load, and bad entries are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from server import settings

HOOK = "{url: 'https://app.example/hooks', secret: s3cret, types: [avatar.changed]}"


def test_webhooks_come_from_the_file_or_the_environment(tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text(f"events:\n  - {HOOK}\nserver: {{log_format: json, metrics_token: t0k}}\n")
    loaded = settings.load(path, environ={})
    (hook,) = loaded.events
    assert (hook.url, hook.secret, hook.types) == ("https://app.example/hooks", "s3cret", ("avatar.changed",))
    assert loaded.server.log_format == "json" and loaded.server.metrics_token == "t0k"
    assert settings.load(path, environ={"AVS_EVENTS": "[]"}).events == ()


@pytest.mark.parametrize(
    "entry",
    [
        "{url: 'https://app.example/hooks', secret: s, types: [avatar.exploded]}",
        "{url: 'ftp://app.example/hooks', secret: s}",
        "{url: 'https://app.example/hooks'}",
        "{url: 'https://app.example/hooks', secret: s, colour: red}",
    ],
)
def test_a_bad_webhook_entry_is_refused_with_its_index(tmp_path: Path, entry: str):
    path = tmp_path / "config.yaml"
    path.write_text(f"events:\n  - {HOOK}\n  - {entry}\n")
    with pytest.raises(settings.SettingsError, match=r"events\[1\]"):
        settings.load(path, environ={})
