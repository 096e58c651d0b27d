"""Logging: readable text or one JSON object per line, each with the request id.

``mailprov serve`` hands ``log_config()`` to uvicorn, so uvicorn's own lines
(start, stop, errors) come out in the same format. The access log is ours
(``mailprov.access``, written by app.middleware.Instrument): it knows the route
template, the request id and the time taken. Lines never carry headers or
bodies, so keys, passwords and submission credentials cannot reach them.
"""

import json
import logging
from datetime import UTC, datetime
from typing import Any

from app.errors import request_id

# Attributes every LogRecord has; anything else was passed as `extra=` and is kept.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_id"}


class RequestIdFilter(logging.Filter):
    """Stamp each record with the id of the request being served (or None)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if rid := getattr(record, "request_id", None):
            entry["request_id"] = rid
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_"):
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(message)s%(rid)s")

    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None)
        record.rid = f" [{rid}]" if rid else ""
        return super().format(record)


def log_config(log_format: str, level: str = "info") -> dict[str, Any]:
    """A logging.config.dictConfig document for the service and uvicorn."""
    formatter = "json" if log_format == "json" else "text"
    handler = {"class": "logging.StreamHandler", "formatter": formatter,
               "filters": ["request_id"], "stream": "ext://sys.stderr"}  # fmt: skip
    named = {"level": level.upper(), "handlers": ["default"], "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"json": {"()": JsonFormatter}, "text": {"()": TextFormatter}},
        "handlers": {"default": handler},
        "loggers": {
            "mailprov": named,
            "uvicorn": named,
            "uvicorn.error": {"level": level.upper()},
            # Instrument writes the access log; uvicorn's would be a second, poorer copy.
            "uvicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
        },
        "root": {"level": "WARNING", "handlers": ["default"]},
    }
