"""How log lines look: one JSON object per line, or readable text (`server.log_format`).

Kept apart from request_log.py, which imports the metrics: the supervisor of `server.workers`
configures logging too, and stays small by importing only this (server/workers.py)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any


class JsonFormatter(logging.Formatter):
    """One JSON object per line. A request's fields come from RequestObserver; other records
    carry their message (and traceback), which the code writes without secrets."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "request", None)
        if isinstance(fields, dict):
            line.update({k: v for k, v in fields.items() if v is not None})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """Readable lines; a request's line ends with its fields as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, "request", None)
        if isinstance(fields, dict):
            extra = " ".join(
                f"{k}={v}" for k, v in fields.items() if v is not None and k not in ("method", "route", "status")
            )
            text = f"{text} {extra}"
        return text


def configure(log_format: str, level: str) -> None:
    """Every logger (uvicorn's too, started with log_config=None) writes through one handler in
    the chosen format: "json" or readable text."""
    handler = logging.StreamHandler()
    formatter: Callable[[], logging.Formatter] = JsonFormatter if log_format == "json" else TextFormatter
    handler.setFormatter(formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
