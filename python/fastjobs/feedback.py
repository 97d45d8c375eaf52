"""Progress and log lines of running jobs: what ``self.progress()`` and ``self.log()`` write,
and what ``JobHandle.progress()`` and ``JobHandle.logs()`` read back.

Both live beside the job's result, under its queue's keys: ``…:progress:<id>`` (a string, the
last progress) and ``…:logs:<id>`` (a list, the newest ``MAX_LOG_LINES`` lines). Each write is
one script call that also sets the key's time to live: ``max(result_ttl, 1 day)`` from that
write (docs/DESIGN.md, "Progress and log lines").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from . import serde

__all__ = ["LEVELS", "MAX_LINE_BYTES", "MAX_LOG_LINES", "LogLine", "Progress"]

#: Log lines kept per job: a line past them drops the oldest.
MAX_LOG_LINES = 1000
#: The longest log line (its level, message and data as JSON) or progress data, in bytes.
MAX_LINE_BYTES = 8 * 1024
#: The levels a log line may have.
LEVELS = ("debug", "info", "success", "warning", "error")


@dataclass(frozen=True)
class Progress:
    """A job's last progress: ``value`` from 0 to 1, the ``data`` given with it, and when it
    was recorded (``at``, the Redis clock)."""

    value: float
    data: dict[str, Any] = field(default_factory=dict)
    at: datetime | None = None


@dataclass(frozen=True)
class LogLine:
    """One log line of a job, as ``self.log()`` wrote it (``at``: the Redis clock)."""

    at: datetime
    level: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)


def _when(ms: Any) -> datetime:
    return datetime.fromtimestamp(ms / 1000, timezone.utc)


def progress_entry(value: Any, data: dict[str, Any]) -> tuple[float, bytes]:
    """The checked value and the JSON entry of ``self.progress(value, **data)``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"progress must be a number from 0 to 1, got {type(value).__name__} {value!r}")
    v = float(value)
    if not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise ValueError(f"progress must be a number from 0 to 1, got {value!r}")
    d = serde.dumps(data, "progress data")
    if len(d) > MAX_LINE_BYTES:
        raise ValueError(f"progress data takes at most {MAX_LINE_BYTES} bytes of JSON, got {len(d)}")
    return v, b'{"value":' + serde.dumps(v) + b',"data":' + d + b"}"


def log_entry(message: Any, level: Any, data: dict[str, Any]) -> bytes:
    """The JSON entry of ``self.log(message, level=level, **data)``."""
    if not isinstance(message, str):
        raise TypeError(f"a log message must be a str, got {type(message).__name__}")
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}; got {level!r}")
    entry: bytes = b'{"level":"' + str(level).encode() + b'","message":' + serde.dumps(message) + b',"data":' + serde.dumps(data, "log data") + b"}"
    if len(entry) > MAX_LINE_BYTES:
        raise ValueError(f"a log line (message and data as JSON) takes at most {MAX_LINE_BYTES} bytes, got {len(entry)}")
    return entry


def parse_progress(raw: bytes | None) -> Progress | None:
    if raw is None:
        return None
    p = serde.loads(raw)
    return Progress(value=float(p["value"]), data=p.get("data") or {}, at=_when(p["at"]))


def parse_log(raw: bytes) -> LogLine:
    e = serde.loads(raw)
    return LogLine(at=_when(e["at"]), level=e["level"], message=e["message"], data=e.get("data") or {})


def check_range(start: Any, limit: Any) -> tuple[int, int]:
    """``JobHandle.logs(start, limit)``: ints of at least 0 (past the list: no lines)."""
    for name, n in (("start", start), ("limit", limit)):
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"{name} must be an int, got {type(n).__name__}")
        if n < 0:
            raise ValueError(f"{name} must be at least 0, got {n}")
    return min(start, 1 << 62), min(limit, 1 << 62)


def now() -> datetime:
    return datetime.now(timezone.utc)
