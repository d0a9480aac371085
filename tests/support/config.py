"""The config a test server starts with, and the credentials it accepts."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

JWT_SECRET = "test-secret-" + "0123456789abcdef" * 2
API_KEY = "test-api-key-" + "f" * 32


def server_config(root: Path, redis_url: str, **sections: Any) -> dict[str, Any]:
    """A config for a test server: its own storage root and key prefix on the shared Redis."""
    config: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "log_level": "warning"},
        "redis": {"url": redis_url, "key_prefix": f"t{secrets.token_hex(4)}"},
        "storage": {"root": str(root / "storage")},
        "auth": {"jwt_secret": JWT_SECRET, "api_keys": {API_KEY: "api-key-user"}},
        # Short, so tests that wait for expiry see it within their deadline.
        "uploads": {"reap_interval_seconds": 0.5},
    }
    for name, values in sections.items():
        if isinstance(values, list):  # a list section (`events:`) is given whole
            config[name] = values
        else:
            config.setdefault(name, {}).update(values)
    return config
