"""Log records as JSON lines (``fastjobs worker --log-format json``, ``setup_logging``): one
object per record with ``time``, ``level``, ``logger``, ``message``, and for a record about a
job its ``job_id``, ``job_name`` and ``queue`` (the worker passes them as ``extra=``)."""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone
from typing import Any

from . import serde

__all__ = ["JsonFormatter", "setup_logging"]

#: The attributes of a record that become fields of its JSON object when set.
JOB_FIELDS = ("job_id", "job_name", "queue")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON: ``{"time", "level", "logger", "message"}``, the
    job fields when the record has them, and ``exception`` (the formatted traceback) if any."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in JOB_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return serde.dumps(out).decode()


def setup_logging(level: str | int = "INFO", format: str = "text") -> None:
    """Configures the root logger for a process that runs fastjobs (what the ``fastjobs``
    command does): ``level`` a name (``"INFO"``) or number, ``format`` ``"text"`` or
    ``"json"`` (``JsonFormatter``), to stderr. As ``logging.basicConfig``, it leaves a root
    logger that has handlers already as it is (add a handler with ``JsonFormatter`` to it then)."""
    if isinstance(level, str):
        if level.upper() not in LEVELS:
            raise ValueError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
        level = level.upper()
    elif isinstance(level, bool) or not isinstance(level, int):
        raise TypeError(f"level must be a level name or number, got {type(level).__name__}")
    if format not in ("text", "json"):
        raise ValueError(f"format must be 'text' or 'json', got {format!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
