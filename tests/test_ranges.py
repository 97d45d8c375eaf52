"""Range of every duration and datetime input: negative, NaN, infinite, over 100 years, or a due
time past 9999-12-31 UTC raise ValueError naming the option and the allowed range (never an
OverflowError, a panic, or a job written with a wrapped-around time)."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import fastjobs
from fastjobs import Backoff, JobScheduler, Queue
from fastjobs.options import MAX_DURATION

from .apps.jobs import Echo

HUGE = [1e30, math.inf, math.nan, -1, 10**400, "99999999w", timedelta(days=200 * 365)]
LATE = datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5)))  # 10000-01-01 04:00 UTC


def _handle() -> fastjobs.JobHandle[Any]:
    return fastjobs.JobHandle("x-1", "default")


CASES: list[tuple[str, Callable[[Any], Any], str]] = [
    ("delay", lambda v: Echo.dispatch(1).delay(v).send(), "delay must be between 0 and 100 years"),
    ("with delay", lambda v: Echo.dispatch(1).with_("delay", v).send(), "delay must be between 0 and 100 years"),
    ("dispatch_many delay", lambda v: Echo.dispatch_many([1, 2], delay=v), "delay must be between 0 and 100 years"),
    ("timeout", lambda v: Echo.dispatch(1).timeout(v).send(), "timeout must be more than 0 and at most 100 years"),
    ("backoff", lambda v: Echo.dispatch(1).backoff(v).send(), "backoff delay must be between 0 and 100 years"),
    ("Backoff.fixed", lambda v: Backoff.fixed(v), "backoff delay must be between 0 and 100 years"),
    ("Backoff.exponential", lambda v: Backoff.exponential(1, max_delay=v), "backoff max_delay must be between 0 and 100 years"),
    ("backoff dict", lambda v: Echo.dispatch(1).backoff({"type": "exponential", "delay": v}).send(), "backoff delay must be between"),
    ("class timeout", lambda v: type("T", (fastjobs.Job,), {"timeout": v, "process": lambda s, p: p, "name": "limits-T"}),
     "timeout must be more than 0"),
    ("worker lease", lambda v: fastjobs.Worker(lease=v), "lease must be between 0.3 seconds and 100 years"),
    ("worker grace", lambda v: fastjobs.Worker(grace=v), "grace must be between 0 and 100 years"),
    ("connect_timeout", lambda v: fastjobs.configure(connect_timeout=v), "connect_timeout must be between 0.001 seconds and 100 years"),
    ("response_timeout", lambda v: fastjobs.configure(response_timeout=v), "response_timeout must be between 0.001 seconds and 100 years"),
    ("result_ttl", lambda v: fastjobs.configure(result_ttl=v), "result_ttl must be between 0.001 seconds and 100 years"),
    ("wait_result", lambda v: _handle().wait_result(timeout=v), "wait_result timeout must be between 0 and 100 years"),
    ("dispatch wait_result", lambda v: Echo.dispatch(1).wait_result(timeout=v), "wait_result timeout must be between 0 and 100 years"),
    ("every", lambda v: JobScheduler.schedule(key="k", job=Echo, repeat={"every": v}), "'every' must be a positive duration between 1 ms"),
]


#: Options that take a number of seconds (or a timedelta), not a string like "10m".
SECONDS_ONLY = {"connect_timeout", "response_timeout", "result_ttl", "wait_result", "dispatch wait_result", "worker lease", "worker grace"}


@pytest.mark.parametrize("value", HUGE, ids=repr)
@pytest.mark.parametrize("name, use, message", CASES, ids=[c[0] for c in CASES])
def test_out_of_range_durations_raise_value_error_naming_the_limit(name: str, use: Callable[[Any], Any], message: str, value: Any) -> None:
    if isinstance(value, str) and name in SECONDS_ONLY:
        message = f"{name.split()[-1]}.* must be a number of seconds, got str"
    with pytest.raises(ValueError, match=message):
        use(value)
    assert Queue().size() == 0 and Queue().counts()["delayed"] == 0  # nothing written
    assert JobScheduler.list() == []


def test_the_message_names_the_value() -> None:
    with pytest.raises(ValueError) as e:
        Echo.dispatch(1).delay(1e30)
    assert str(e.value) == "delay must be between 0 and 100 years (3155760000 seconds), got 1e+30 seconds"


@pytest.mark.parametrize(
    "use",
    [
        lambda: Echo.dispatch(1).at(LATE),
        lambda: Echo.dispatch_many([1], at=LATE),
        lambda: JobScheduler.schedule(key="k", job=Echo, repeat={"every": 1000, "start": LATE}),
        lambda: JobScheduler.schedule(key="k", job=Echo, repeat={"every": 1000, "end": LATE}),
    ],
)
def test_due_times_past_year_9999_raise_value_error(use: Callable[[], Any]) -> None:
    with pytest.raises(ValueError, match=r"no later than 9999-12-31 23:59:59\.999999 UTC"):
        use()
    assert Queue().counts()["delayed"] == 0 and JobScheduler.list() == []


def test_schedule_limit_beyond_2_53_raises() -> None:
    with pytest.raises(ValueError, match="limit"):
        JobScheduler.schedule(key="k", job=Echo, repeat={"every": 1000, "limit": 2**64})


def test_the_limits_themselves_are_accepted(redis: Any, prefix: str) -> None:
    Echo.dispatch(1).delay(MAX_DURATION).send()
    Echo.dispatch(1).delay(timedelta(days=36525)).send()
    Echo.dispatch(1).at(datetime(9999, 12, 31, 23, 59, 59, 999999)).send()
    assert Queue().counts()["delayed"] == 3
    Echo.dispatch(1).timeout(MAX_DURATION).backoff(Backoff.exponential(1, max_delay=MAX_DURATION)).send()
    # a time before the epoch is in the past: due at once
    Echo.dispatch(1).at(datetime(1900, 1, 1)).send()
    Echo.dispatch(1).at(datetime(1, 1, 1, tzinfo=timezone.utc)).send()
    assert Queue().size() == 3
    s = JobScheduler.schedule(key="far", job=Echo, repeat={"every": int(MAX_DURATION * 1000), "end": datetime(9999, 12, 31)})
    assert s.repeat["every"] == int(MAX_DURATION * 1000)
    fastjobs.configure(connect_timeout=MAX_DURATION, response_timeout=MAX_DURATION, result_ttl=MAX_DURATION)
    assert Queue().size() == 3


class FarBackoff(fastjobs.Job[Any, None]):
    attempts = 2
    backoff = staticmethod(lambda attempt: math.inf)

    def process(self, payload: Any) -> None:
        raise RuntimeError("again later")


@pytest.mark.redis_only
def test_backoff_delays_computed_while_failing_are_capped_at_100_years(start_worker: Any, redis: Any, prefix: str) -> None:
    assert Backoff.exponential(1, max_delay=None, jitter=False).seconds(5000) == MAX_DURATION
    assert FarBackoff.retry_delay(1) == MAX_DURATION
    start_worker(jobs=[FarBackoff, Echo])
    h = FarBackoff.dispatch(None).send()
    from .conftest import eventually

    eventually(lambda: h.status() == "delayed")
    due_ms = float(redis("ZSCORE", f"{prefix}:{{default}}:delayed", h.id))
    now_ms = datetime.now(timezone.utc).timestamp() * 1000
    assert abs(due_ms - now_ms - MAX_DURATION * 1000) < 60_000
    assert Echo.dispatch("still working").send().wait_result(timeout=10) == "still working"
