"""Job options: their names, validation, durations and retry backoff.

Every check runs at dispatch, before anything is sent to Redis.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

__all__ = ["Backoff", "parse_duration", "OPTION_NAMES", "MAX_DURATION", "MAX_DATETIME"]

Duration = int | float | timedelta | str

#: Options accepted by ``.with_(name, value)``.
OPTION_NAMES = frozenset({"queue", "delay", "at", "job_id", "idempotency_key", "attempts", "backoff", "timeout", "priority", "meta",
                          "deduplicate", "debounce", "group", "on_complete", "on_failure", "on_retry", "callback", "failure_callback"})

#: The longest deduplication key, in bytes of UTF-8.
MAX_DEDUP_KEY = 255

#: The longest duration fastjobs takes anywhere (delays, timeouts, backoff delays, schedule
#: intervals, result ttl, leases): 100 years of 365.25 days, 3,155,760,000 seconds. Delays
#: travel as integer µs added to the Redis clock inside Lua, whose numbers are doubles, exact
#: to 2**53 µs (year 2255): 100 years from now stays well inside.
MAX_DURATION = 100 * 365.25 * 86400.0
#: The latest due time `.at()` and a schedule's `start`/`end` take (Python's own limit).
MAX_DATETIME = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")


def _shown(value: Any) -> str:
    """A duration as given, for messages: ``1e+30 seconds``, ``'5000000w'``."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**21:
        return f"{'-' if value < 0 else ''}an integer of {len(str(abs(value)))} digits (seconds)"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value!r} seconds"
    return repr(value)


def _range_error(what: str, value: Any, minimum: float, exclusive: bool) -> ValueError:
    if exclusive:
        low = "more than 0"
    elif minimum == 0:
        low = "between 0"
    else:
        low = f"between {minimum:g} seconds"
    joint = " and at most" if exclusive else " and"
    return ValueError(f"{what} must be {low}{joint} 100 years ({MAX_DURATION:.0f} seconds), got {_shown(value)}")


def parse_duration(value: Duration, what: str = "duration", *, minimum: float = 0.0, exclusive: bool = False) -> float:
    """Seconds from a number of seconds, a ``timedelta``, or a string like ``"500ms"``,
    ``"30s"``, ``"10m"``, ``"2h"``, ``"3d"``, ``"1w"``. Values under ``minimum`` (or equal to
    it when ``exclusive``), over 100 years (:data:`MAX_DURATION`), NaN or infinite raise
    ``ValueError`` naming ``what`` and the allowed range."""
    seconds = seconds_of(value, what)
    # Written so that NaN fails too.
    if not (seconds > minimum if exclusive else seconds >= minimum) or not seconds <= MAX_DURATION:
        raise _range_error(what, value, minimum, exclusive)
    return seconds


def seconds_of(value: Duration, what: str) -> float:
    """The seconds of a duration as ``parse_duration`` reads it, range not checked (an int
    past the floats is ±inf)."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be seconds, a timedelta or a string like '10m', got {value!r}")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:  # an int past the floats: out of range whatever its sign
            seconds = math.inf if value > 0 else -math.inf
    elif isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise ValueError(f"{what} {value!r} is not a duration: use a number and one of ms, s, m, h, d, w (e.g. '30s', '10m', '3d')")
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError(f"{what} must be seconds, a timedelta or a string like '10m', got {type(value).__name__}")
    return seconds


def check_seconds(value: Any, what: str, *, minimum: float = 0.0, exclusive: bool = False) -> float:
    """A number of seconds only (no strings): ``configure``'s timeouts, ``Worker(lease=,
    grace=)``, ``wait_result(timeout=)``; range as :func:`parse_duration`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, timedelta)):
        raise ValueError(f"{what} must be a number of seconds, got {type(value).__name__}")
    return parse_duration(value, what, minimum=minimum, exclusive=exclusive)


def check_wait_timeout(timeout: Any) -> float | None:
    """``wait_result(timeout=...)``: None (no limit) or 0 to 100 years."""
    return None if timeout is None else check_seconds(timeout, "wait_result timeout")


def due_time_us(when: datetime, what: str) -> int:
    """µs since the epoch of a due time: naive means UTC; later than 9999-12-31 UTC (an
    aware datetime late in 9999 with a negative offset) raises ``ValueError``."""
    if not isinstance(when, datetime):
        raise ValueError(f"{what} takes a datetime, got {type(when).__name__}")
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    if when > MAX_DATETIME:
        raise ValueError(f"{what} must be no later than 9999-12-31 23:59:59.999999 UTC, got {when.isoformat()}")
    return (when - _EPOCH) // _MICROSECOND  # exact: no float rounding


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def check_dedup_key(key: Any, what: str = "deduplication key") -> str:
    """A deduplication key: a str of 1 to 255 bytes (UTF-8) without control characters."""
    if not isinstance(key, str):
        raise TypeError(f"{what} must be a str, got {type(key).__name__}")
    if not key:
        raise ValueError(f"{what} must not be empty")
    try:
        size = len(key.encode())
    except UnicodeEncodeError:
        raise ValueError(f"{what} must be valid Unicode (no lone surrogates), got {key!r}") from None
    if size > MAX_DEDUP_KEY:
        raise ValueError(f"{what} must be at most {MAX_DEDUP_KEY} bytes of UTF-8, got {size}")
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise ValueError(f"{what} must not hold control characters, got {key!r}")
    return key


def check_group_key(key: Any, what: str = "group") -> str:
    """A group key (``.group()``): a str of 1 to 255 bytes (UTF-8) without control characters."""
    return check_dedup_key(key, what)


def check_attempts(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(f"attempts must be a whole number from 1 to 65535, got {value!r}")
    return value


def check_priority(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 9:
        raise ValueError(f"priority must be a whole number from 0 (default) to 9 (runs first), got {value!r}")
    return value


def check_timeout(value: Any) -> float | None:
    if value is None:
        return None
    return parse_duration(value, "timeout", exclusive=True)


class Backoff:
    """How long a failed job waits before its next attempt.

    - ``Backoff.fixed(5)``: 5 s every time;
    - ``Backoff.exponential(1, max_delay=3600, jitter=True)``: 1 s, 2 s, 4 s ... capped,
      each spread at random over its upper half when ``jitter`` is on;
    - any callable ``f(attempt) -> seconds`` (class attribute only: it cannot travel in Redis);
    - BullMQ's dict form: ``{"type": "exponential", "delay": 2}`` (delay in seconds, or a
      duration string like ``"2s"``).
    """

    __slots__ = ("kind", "delay", "max_delay", "jitter")

    def __init__(self, kind: str, delay: float, max_delay: float | None = None, jitter: bool = False) -> None:
        if kind not in ("fixed", "exponential"):
            raise ValueError(f"unknown backoff type {kind!r}: use 'fixed' or 'exponential'")
        self.kind = kind
        self.delay = parse_duration(delay, "backoff delay")
        self.max_delay = None if max_delay is None else parse_duration(max_delay, "backoff max_delay")
        self.jitter = bool(jitter)

    @classmethod
    def fixed(cls, delay: Duration) -> Backoff:
        return cls("fixed", parse_duration(delay, "backoff delay"))

    @classmethod
    def exponential(cls, delay: Duration = 1.0, *, max_delay: Duration | None = 3600.0, jitter: bool = True) -> Backoff:
        return cls(
            "exponential",
            parse_duration(delay, "backoff delay"),
            None if max_delay is None else parse_duration(max_delay, "backoff max_delay"),
            jitter,
        )

    def seconds(self, attempt: int) -> float:
        """Delay before the next run, after ``attempt`` failed attempts (1 after the first)."""
        if self.kind == "fixed":
            d = self.delay
        else:
            d = self.delay * (2.0 ** min(attempt - 1, 62))
        # Doubling past 100 years (no max_delay, many attempts) stops there.
        d = min(d, MAX_DURATION if self.max_delay is None else self.max_delay)
        if self.jitter:
            d = d / 2 + random.random() * d / 2
        return d

    def to_json(self) -> dict[str, Any]:
        return {"type": self.kind, "delay": self.delay, "max_delay": self.max_delay, "jitter": self.jitter}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Backoff) and self.to_json() == other.to_json()

    def __repr__(self) -> str:
        return f"Backoff({self.kind!r}, delay={self.delay}, max_delay={self.max_delay}, jitter={self.jitter})"


BackoffSpec = None | int | float | str | Mapping[str, Any] | Backoff | Callable[[int], float]


def check_backoff(value: BackoffSpec, *, allow_callable: bool) -> Backoff | Callable[[int], float] | None:
    if value is None or isinstance(value, Backoff):
        return value
    if isinstance(value, (int, float, str, timedelta)) and not isinstance(value, bool):
        return Backoff.fixed(value)
    if isinstance(value, Mapping):
        unknown = set(value) - {"type", "delay", "max_delay", "jitter"}
        if unknown:
            raise ValueError(f"unknown backoff setting(s) {sorted(unknown)}: use type, delay, max_delay, jitter")
        kind = value.get("type", "fixed")
        if kind not in ("fixed", "exponential"):
            raise ValueError(f"unknown backoff type {kind!r}: use 'fixed' or 'exponential'")
        return Backoff(kind, value.get("delay", 1.0), value.get("max_delay"), bool(value.get("jitter", False)))
    if callable(value):
        if not allow_callable:
            raise ValueError("a callable backoff can only be set on the job class (it cannot be stored in Redis)")
        return value
    raise ValueError(f"backoff must be a Backoff, a number of seconds, a dict or a callable, got {type(value).__name__}")


def backoff_from_json(data: Mapping[str, Any]) -> Backoff:
    return Backoff(data["type"], data["delay"], data.get("max_delay"), bool(data.get("jitter", False)))
