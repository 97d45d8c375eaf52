"""JobScheduler and periodic jobs on a real Redis with real workers: upserts, ticks fired once
whatever the number of workers, catch-up after downtime, limits, code declarations, the CLI,
and the errors of bad schedules."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import fastjobs
from fastjobs import JobScheduler, _core

from .apps.jobs import CodeTick, Echo, Stamp, stamps
from .conftest import ROOT, RedisServer, eventually
from .resp import Redis


def test_schedule_is_an_upsert_by_key() -> None:
    first = JobScheduler.schedule(key="report", job=Echo, data={"v": 1}, repeat={"pattern": "0 3 * * *", "tz": "Europe/Paris"})
    again = JobScheduler.schedule(key="report", job=Echo, data={"v": 2}, repeat={"pattern": "0 3 * * *", "tz": "Europe/Paris"},
                                  options={"attempts": 4})
    assert [s.key for s in JobScheduler.list()] == ["report"]
    assert again.next_run == first.next_run  # same timing: the pending tick is kept, not duplicated or lost
    assert again.data == {"v": 2} and again.options == {} and again.job == "Echo" and again.queue == "default"
    found = JobScheduler.find("report")
    assert found is not None and found.data == {"v": 2}
    # 03:00 in Paris is 01:00 or 02:00 UTC depending on the season.
    assert found.next_run.hour in (1, 2) and found.next_run.minute == 0 and found.next_run > datetime.now(timezone.utc)
    retimed = JobScheduler.schedule(key="report", job=Echo, data={"v": 2}, repeat={"every": "1h"})
    assert retimed.repeat == {"every": 3_600_000} and retimed.next_run != first.next_run
    assert len(JobScheduler.list()) == 1


def test_find_exists_remove_clear_list_in_next_run_order() -> None:
    JobScheduler.schedule(key="later", job=Echo, repeat={"every": "2h"})
    JobScheduler.schedule(key="sooner", job=Echo, repeat={"every": "1h"}, queue="other")
    assert [s.key for s in JobScheduler.list()] == ["sooner", "later"]
    assert JobScheduler.list()[0].queue == "other"
    assert JobScheduler.exists("later") and not JobScheduler.exists("nope")
    assert JobScheduler.find("nope") is None
    assert JobScheduler.remove("later") is True
    assert JobScheduler.remove("later") is False
    assert JobScheduler.clear() == 1
    assert JobScheduler.list() == []


async def test_async_forms() -> None:
    info = await JobScheduler.schedule_async(key="a", job=Echo, data=[1], repeat={"every": 60_000})
    assert info.repeat == {"every": 60_000} and info.data == [1]
    assert await JobScheduler.exists_async("a")
    assert (await JobScheduler.find_async("a")).key == "a"  # type: ignore[union-attr]
    assert [s.key for s in await JobScheduler.list_async()] == ["a"]
    assert await JobScheduler.remove_async("a")
    JobScheduler.schedule(key="b", job=Echo, repeat={"every": 60_000})
    assert await JobScheduler.clear_async() == 1


@pytest.mark.parametrize(
    "repeat, message",
    [
        ({"pattern": "61 * * * *"}, "minute value '61'"),
        ({"pattern": "* * * *"}, "got 4"),
        ({"pattern": "0 0 * FOO *"}, "'FOO'"),
        ({"pattern": "0 0 30 2 *"}, "never fires"),
        ({"pattern": "@reboot"}, "@reboot"),
        ({"pattern": "0 * * * *", "tz": "Europe/Pariss"}, "unknown time zone 'Europe/Pariss'"),
        ({"every": 0}, "positive duration"),
        ({"every": -5}, "positive duration"),
        ({"every": "soon"}, "not a duration"),
        ({"every": 1000, "pattern": "* * * * *"}, "exactly one of"),
        ({}, "exactly one of"),
        ({"every": 1000, "tz": "UTC"}, "cron patterns only"),
        ({"every": 1000, "limit": 0}, "limit"),
        ({"every": 1000, "cron": "x"}, "unknown repeat option"),
        ({"every": 1000, "end": datetime(2001, 1, 1)}, "never run"),
    ],
)
def test_bad_schedules_raise_value_error_naming_the_problem(repeat: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        JobScheduler.schedule(key="bad", job=Echo, repeat=repeat)
    assert JobScheduler.list() == []


def test_bad_schedule_arguments() -> None:
    with pytest.raises(ValueError, match="no job named 'Nope'"):
        JobScheduler.schedule(key="k", job="Nope", repeat={"every": 1000})
    with pytest.raises(ValueError, match="unschedulable option"):
        JobScheduler.schedule(key="k", job=Echo, repeat={"every": 1000}, options={"delay": 5})
    with pytest.raises(ValueError, match="invalid schedule key"):
        JobScheduler.schedule(key="has space", job=Echo, repeat={"every": 1000})
    with pytest.raises(ValueError, match="invalid queue name"):
        JobScheduler.schedule(key="k", job=Echo, repeat={"every": 1000}, queue="no spaces")
    with pytest.raises(TypeError, match="cannot be serialized"):
        JobScheduler.schedule(key="k", job=Echo, repeat={"every": 1000}, data={"x": object()})
    assert JobScheduler.list() == []


def test_cron_next_shows_upcoming_runs() -> None:
    start = int(datetime(2027, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)
    runs = _core.cron_next("*/15 * * * * *", "UTC", start, 3)
    assert [r - start for r in runs] == [15_000, 30_000, 45_000]


def test_three_workers_fire_each_tick_once(spawn_worker: Any, redis: Redis, prefix: str) -> None:
    workers = [spawn_worker("--queue", "stamps", "--concurrency", "2") for _ in range(3)]
    time.sleep(1.5)  # let all three start their schedule drivers
    assert all(w.proc.poll() is None for w in workers)
    JobScheduler.schedule(key="every-second", job=Stamp, repeat={"pattern": "* * * * * *"})
    time.sleep(5.0)
    JobScheduler.remove("every-second")
    time.sleep(0.5)
    runs = stamps(redis, prefix)
    ids = [r[0] for r in runs]
    assert len(ids) == len(set(ids)), f"a tick ran twice: {ids}"
    assert 4 <= len(runs) <= 6, runs
    ticks = sorted(int(i.split("@")[1]) for i in ids)
    assert all(t % 1000 == 0 for t in ticks) and all(b - a == 1000 for a, b in itertools.pairwise(ticks)), ticks
    # Each run started right on its tick (the driver sleeps until the due time).
    late = [started - int(job_id.split("@")[1]) for job_id, _pid, started in runs]
    assert max(late) < 1000, late


def test_missed_ticks_run_once_after_downtime_then_the_schedule_resumes(start_worker: Any, redis: Redis, prefix: str) -> None:
    info = JobScheduler.schedule(key="catch-up", job=Stamp, repeat={"every": 300})
    time.sleep(1.7)  # about five ticks pass with no worker
    start_worker(queues=["stamps"])
    first = eventually(lambda: stamps(redis, prefix))
    assert first[0][0] == f"catch-up@{int(info.next_run.timestamp() * 1000)}"  # the overdue tick, once
    time.sleep(1.0)
    runs = stamps(redis, prefix)
    ticks = [int(r[0].split("@")[1]) for r in runs]
    # Ticks in between were skipped, not replayed: the next run is on the grid after the restart.
    assert ticks[1] - ticks[0] >= 1200 and (ticks[1] - ticks[0]) % 300 == 0, ticks
    assert all(b - a == 300 for a, b in itertools.pairwise(ticks[1:])), ticks
    assert JobScheduler.find("catch-up").runs == len(runs)  # type: ignore[union-attr]


def test_limit_and_immediately(start_worker: Any, redis: Redis, prefix: str) -> None:
    start_worker(queues=["stamps"])
    JobScheduler.schedule(key="twice", job=Stamp, repeat={"every": 200, "limit": 2, "immediately": True})
    eventually(lambda: len(stamps(redis, prefix)) == 2)
    eventually(lambda: not JobScheduler.exists("twice"))  # done: removed after its last run
    time.sleep(0.6)
    assert len(stamps(redis, prefix)) == 2


def test_tick_jobs_carry_the_schedule_options(start_worker: Any) -> None:
    JobScheduler.schedule(key="opts", job=Echo, data={"x": 1}, repeat={"every": 100, "limit": 1},
                          options={"attempts": 3, "priority": 7, "meta": {"by": "scheduler"}})
    info = JobScheduler.find("opts")
    assert info is not None and info.options == {"meta": {"by": "scheduler"}}
    tick = int(info.next_run.timestamp() * 1000)
    handle = fastjobs.JobHandle(f"opts@{tick}", "default")
    start_worker(queues=["elsewhere"])  # drives the schedules, runs nothing of "default"
    eventually(lambda: handle.status() == "waiting")
    assert not JobScheduler.exists("opts")  # limit 1: done after its one run
    start_worker(queues=["default"])
    assert handle.wait_result(timeout=10) == {"x": 1}


@pytest.mark.redis_only
def test_periodic_declarations_register_when_a_worker_starts(start_worker: Any, redis: Redis, prefix: str) -> None:
    assert "app-heartbeat" in fastjobs.schedule.periodic_schedules()
    assert not JobScheduler.exists("app-heartbeat")
    # A schedule once declared in code for this queue and declared no more is removed.
    JobScheduler.schedule(key="gone", job=CodeTick, repeat={"every": 60_000})
    redis("HSET", f"{prefix}:{{schedules}}:def:gone", "origin", "code")
    start_worker(queues=["code-ticks"])
    eventually(lambda: JobScheduler.exists("app-heartbeat"))
    info = JobScheduler.find("app-heartbeat")
    assert info is not None and info.origin == "code" and info.data == {"from": "code"} and info.repeat == {"every": 1000}
    # The worker upserts its declarations first, then removes the stale ones.
    eventually(lambda: not JobScheduler.exists("gone"))
    eventually(lambda: stamps(redis, prefix), timeout=5)


def test_periodic_declaration_errors_surface_at_import() -> None:
    with pytest.raises(ValueError, match="minute value '99'"):
        fastjobs.periodic("99 * * * *")
    with pytest.raises(ValueError, match="exactly one of"):
        fastjobs.periodic()


@pytest.mark.redis_only
def test_cli_lists_and_removes_schedules(redis_server: RedisServer, prefix: str) -> None:
    JobScheduler.schedule(key="nightly", job=Echo, repeat={"pattern": "@daily", "tz": "Asia/Tokyo"})
    JobScheduler.schedule(key="often", job=Echo, repeat={"every": "5m"})

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "fastjobs", "schedule", *args, "--url", redis_server.url, "--prefix", prefix],
                              capture_output=True, text=True, cwd=str(ROOT), timeout=60)

    listed = cli("list")
    assert listed.returncode == 0
    assert "nightly  Echo -> default  cron '@daily' Asia/Tokyo" in listed.stdout and "often" in listed.stdout
    assert cli("remove", "nightly").returncode == 0
    missing = cli("remove", "nightly")
    assert missing.returncode == 1 and "no schedule 'nightly'" in missing.stderr
    cleared = cli("clear")
    assert "removed 1 schedule(s)" in cleared.stdout
    assert cli("list").stdout.strip() == "no schedules"


def test_schedule_with_start_in_the_future_waits_for_it() -> None:
    start = datetime.now(timezone.utc) + timedelta(days=400)
    info = JobScheduler.schedule(key="next-year", job=Echo, repeat={"every": "1d", "start": start})
    assert abs((info.next_run - start).total_seconds()) < 0.002
