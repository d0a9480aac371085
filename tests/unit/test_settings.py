from pathlib import Path

import pytest

from server import settings

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_config_loads_with_documented_defaults():
    loaded = settings.load(ROOT / "config.yaml", environ={})
    assert loaded.redis.url == "embedded"
    assert loaded.limits.max_image_bytes == 20 * 1024 * 1024
    assert loaded.limits.max_chunk_bytes == 8 * 1024 * 1024
    assert loaded.uploads.expire_seconds == 24 * 3600
    assert loaded.avatars.sizes == (512, 256, 128, 64)


def test_environment_overrides_any_setting():
    loaded = settings.load(
        ROOT / "config.yaml",
        environ={
            "AVS_REDIS_URL": "redis://db:6379/1",
            "AVS_LIMITS_MAX_IMAGE_BYTES": "1048576",
            "AVS_AUTH_API_KEYS": "{k1: alice}",
            "AVS_AVATARS_SIZES": "[128, 32]",
            "AVS_PROTOCOLS_CHUNK_API": "false",
        },
    )
    assert loaded.redis.url == "redis://db:6379/1"
    assert loaded.limits.max_image_bytes == 1048576
    assert dict(loaded.auth.api_keys) == {"k1": "alice"}
    assert loaded.avatars.sizes == (128, 32)
    assert not loaded.protocol_enabled("chunk_api")


def test_unknown_setting_is_an_error_not_silently_ignored(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("limits:\n  max_image_byte: 5\n")
    with pytest.raises(settings.SettingsError, match="max_image_byte"):
        settings.load(path, environ={})


def test_wrong_type_is_an_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("limits:\n  max_image_bytes: lots\n")
    with pytest.raises(settings.SettingsError, match="integer"):
        settings.load(path, environ={})


def test_the_example_secret_is_refused_on_a_public_interface():
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "server", "--config", str(ROOT / "config.yaml"), "--host", "0.0.0.0", "--port", "1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert "AVS_AUTH_JWT_SECRET" in result.stderr
