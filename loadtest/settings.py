"""The kit's parameters, all from the environment (docs/loadtest.md lists them), so that
`make loadtest`, `python -m loadtest` and a plain `locust -f loadtest/locustfile.py` read the same."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def _range(name: str, default: str) -> tuple[float, float]:
    low, _, high = os.environ.get(name, default).partition(",")
    return float(low), float(high or low)


def _weights(text: str) -> dict[str, int]:
    weights = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        weights[name.strip()] = int(value)
    return weights


@dataclass(frozen=True)
class LoadSettings:
    # Scenario weights: phone (tus, flaky), web (tus, Uppy defaults), app (JSON chunks), reader.
    weights: dict[str, int] = field(
        default_factory=lambda: _weights(os.environ.get("LOADTEST_WEIGHTS", "phone=3,web=1,app=2,reader=4"))
    )
    # The phone's network: chunk sizes, how often a PATCH is cut, how long it is offline.
    chunk_kib: tuple[float, float] = field(default_factory=lambda: _range("LOADTEST_CHUNK_KIB", "64,256"))
    cut_rate: float = field(default_factory=lambda: _float("LOADTEST_CUT_RATE", 0.2))
    offline_seconds: tuple[float, float] = field(default_factory=lambda: _range("LOADTEST_OFFLINE_SECONDS", "0.2,2"))
    # The share of phone uploads left halfway, and when they come back.
    give_up_rate: float = field(default_factory=lambda: _float("LOADTEST_GIVE_UP_RATE", 0.2))
    comeback_seconds: tuple[float, float] = field(default_factory=lambda: _range("LOADTEST_COMEBACK_SECONDS", "5,30"))
    # The app on the chunk API: chunk size, share of chunks lost (re-sent after a status call) and sent twice.
    json_chunk_kib: float = field(default_factory=lambda: _float("LOADTEST_JSON_CHUNK_KIB", 256))
    loss_rate: float = field(default_factory=lambda: _float("LOADTEST_LOSS_RATE", 0.15))
    duplicate_rate: float = field(default_factory=lambda: _float("LOADTEST_DUPLICATE_RATE", 0.15))
    # Seconds between one task and the next of one simulated client.
    think_seconds: tuple[float, float] = field(default_factory=lambda: _range("LOADTEST_THINK_SECONDS", "1,3"))
    # The pictures: their cache and a scale on their sides (1 = the sizes in loadtest/images.py).
    images_dir: Path = field(
        default_factory=lambda: Path(os.environ.get("LOADTEST_IMAGES", ROOT / "var" / "loadtest" / "images"))
    )
    image_scale: float = field(default_factory=lambda: _float("LOADTEST_IMAGE_SCALE", 1.0))
    # {user_id: token} as JSON, written by `python -m loadtest` (or by hand for a deployment).
    tokens_file: Path = field(
        default_factory=lambda: Path(os.environ.get("LOADTEST_TOKENS_FILE", ROOT / "var" / "loadtest" / "tokens.json"))
    )
    request_timeout: float = field(default_factory=lambda: _float("LOADTEST_REQUEST_TIMEOUT", 60))
    seed: int | None = field(
        default_factory=lambda: int(os.environ["LOADTEST_SEED"]) if "LOADTEST_SEED" in os.environ else None
    )
