"""Structured logging, set up once per process by the entry point."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, component and any `extra` fields."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "component": self.component,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(component: str, level: str = "INFO", fmt: str = "json") -> None:
    """Route every logger to stderr in the chosen format. Idempotent."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(component))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s {component} %(name)s: %(message)s")
        )
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("snowflake.connector", "aiokafka", "kafka", "urllib3", "botocore", "faust"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # Rare and telling: group joins and assignments, transactional producers started for them,
    # and table recovery's progress (what a worker that is not processing yet is waiting for).
    for telling in (
        "aiokafka.consumer.group_coordinator",
        "faust.transport.consumer",
        "faust.tables.recovery",
    ):
        logging.getLogger(telling).setLevel(root.level)
