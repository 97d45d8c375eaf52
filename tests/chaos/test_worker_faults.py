"""Workers that die or freeze, with real processes: SIGKILL mid-drain, again and again; a job
that kills every worker that runs it; a worker frozen (SIGSTOP) past its lease that wakes up
(a zombie). Every scenario ends with ``audit`` (conftest): nothing acknowledged lost, no
duplicate run that a worker did not log, exact counts and summaries."""

from __future__ import annotations

import os
import re
import signal
import time
from typing import Any

import pytest

import fastjobs
from fastjobs import Queue

from ..conftest import eventually
from ..resp import Redis
from .conftest import audit, sizes
from .jobs import Rec, runs
from .scenarios import kill_mid_drain


def completed(queue: str) -> int:
    return int(Queue(queue).counts()["completed"])


# ---- a. SIGKILL mid-drain, several times in a row ----


@sizes(short=(1500, 2), long=(8000, 6))
def test_workers_killed_mid_drain_lose_nothing_and_rerun_only_logged_orphans(
        size: tuple[int, int], workers: Any, ledger: Redis, redis: Redis, prefix: str, figures: Any) -> None:
    total, kills = size
    figures(**kill_mid_drain(
        total, kills, workers, ledger, prefix,
        leases=lambda q: {t.decode() for t in redis("ZRANGE", f"{prefix}:{{{q}}}:active", 0, -1)},
        orphans_running=lambda q: bool(redis("KEYS", f"{prefix}:{{{q}}}:started:*")),
    ))


# ---- b. a job that kills every worker that runs it ----


@sizes(short=200, long=2000)
def test_poison_job_fails_after_attempts_plus_one_runs_and_its_neighbours_lose_nothing(
        size: int, workers: Any, ledger: Redis, prefix: str, figures: Any) -> None:
    q = "poison"
    before = [Rec.dispatch({"tag": f"n{i}", "sleep": 0.002}).on_queue(q).attempts(1).send() for i in range(size // 2)]
    poison = Rec.dispatch({"tag": "poison", "poison": True}).on_queue(q).attempts(1).send()
    after = [Rec.dispatch({"tag": f"n{i}", "sleep": 0.002}).on_queue(q).attempts(1).send() for i in range(size // 2, size)]
    sent = before + after

    # The supervisor: a new worker each time one dies, until one outlives the queue.
    deaths = 0
    restarted = time.monotonic()
    while True:
        w = workers("--queue", q, "--concurrency", "2", "--lease", "1", "--grace", "30")

        def settled() -> bool:
            c = Queue(q).counts()
            return c["completed"] + c["failed"] == size + 1 and c["waiting"] + c["active"] == 0

        eventually(lambda w=w: not w.alive() or settled(), timeout=120, interval=0.02)
        if w.alive():
            break
        assert w.proc.returncode == 1, w.log()[-3000:]  # os._exit(1) in the poison's handler
        w.died()
        deaths += 1
        restarted = time.monotonic()
        assert deaths <= 2, "the poison job ran more than attempts + 1 times"
    end = time.monotonic()
    w.stop()

    poison_runs = [r for r in runs(ledger, prefix) if r.job_id == poison.id]
    assert deaths == 2 and len(poison_runs) == 2, poison_runs
    assert [r.redelivered for r in poison_runs] == [False, True]
    assert poison.status() == "failed"
    with pytest.raises(fastjobs.JobFailed) as info:
        poison.wait_result(timeout=5)
    assert info.value.exc_type == "LeaseExpired"
    [failed] = Queue(q).failed(limit=10)
    assert failed.id == poison.id
    error = failed.error
    m = re.fullmatch(r"worker (\S+) stopped renewing its lease while it ran this job \(it died or hung\); "
                     r"its attempts are used up \(1 of 1 counted\)", error["message"])
    assert m and m.group(1) == error["worker"], error

    a = audit(q, sent, ledger, prefix, workers.all, extra=1, failed=1)
    others = [r for r in a.runs if r.job_id != poison.id]
    assert {r.attempt for r in others} == {0}, [r for r in others if r.attempt]  # neighbours never lose an attempt
    figures(jobs=size + 1, deaths=deaths, lost=0, duplicates=a.duplicates - 1, poison_runs=len(poison_runs), recovery_s=end - restarted)


# ---- e. a zombie: frozen past its lease, then woken ----


@sizes(short=1, long=3)
def test_zombie_late_ack_is_refused_and_counted_stale_in_its_summary(size: int, workers: Any, ledger: Redis, prefix: str, figures: Any) -> None:
    q = "zombie"
    zombie = workers("--queue", q, "--concurrency", "1", "--lease", "1", "--grace", "30")
    sent = []
    takeovers = []
    for n in range(size):
        h = Rec.dispatch({"tag": f"z{n}", "stall": 3}).on_queue(q).attempts(1).send()
        sent.append(h)
        eventually(lambda h=h: [r for r in runs(ledger, prefix) if r.job_id == h.id], timeout=30)  # the zombie runs it
        other = workers("--queue", q, "--concurrency", "1", "--lease", "1", "--grace", "30")
        eventually(lambda other=other: "worker started" in other.log(), timeout=30)
        os.kill(zombie.pid, signal.SIGSTOP)  # a GC pause, a suspended VM: its heartbeats stop
        frozen = time.monotonic()
        try:
            assert h.wait_result(timeout=30) == other.pid  # reaped after the lease, run by the other worker
            takeovers.append(time.monotonic() - frozen)
        finally:
            os.kill(zombie.pid, signal.SIGCONT)
        # The zombie finishes its run (the stall is over by now) and acknowledges it: refused.
        eventually(lambda h=h: len([r for r in runs(ledger, prefix) if r.job_id == h.id]) == 2, timeout=10)
        assert other.stop().completed == 1
    summary = zombie.stop()
    assert (summary.completed, summary.stale) == (0, size), zombie.log()[-3000:]
    assert f"0 completed, 0 retried, 0 failed, 0 handed back, {size} stale" in zombie.log()
    for h in sent:
        assert h.info().result == h.wait_result(timeout=1) != zombie.pid  # the other worker's result, once
    a = audit(q, sent, ledger, prefix, workers.all)
    assert a.duplicates == size
    figures(jobs=size, lost=0, duplicates=a.duplicates, stale=summary.stale, takeover_s=max(takeovers))


# ---- an orphan runs alone (the defect the poison test found) ----

DIES_HOLDING_TWO = r"""
import os
from fastjobs import _core, config
engine = _core.WorkerEngine(config.client(), ["solo"], lease=0.3, prefetch=2)
engine.start(scheduler=False)
assert len(engine.next_jobs(1, 10.0)) == 1  # one lease of both jobs: one running, one prefetched
os._exit(1)
"""


def test_an_orphan_runs_alone_and_nothing_starts_before_its_outcome_lands(redis_server: Any, prefix: str) -> None:
    """Two orphans of one dead worker, a worker with two handler threads: the second orphan is
    not handed out while the first runs. (It was: when the first killed the worker too, the
    second, started beside it, lost its only attempt and failed with LeaseExpired.)"""
    import subprocess
    import sys

    from fastjobs import _core, config

    from ..conftest import ROOT

    handles = [Rec.dispatch({"tag": f"o{i}"}).on_queue("solo").attempts(1).send() for i in range(2)]
    env = dict(os.environ, FASTJOBS_URL=redis_server.url, FASTJOBS_PREFIX=prefix, PYTHONPATH=str(ROOT))
    assert subprocess.run([sys.executable, "-c", DIES_HOLDING_TWO], env=env, cwd=str(ROOT), timeout=60).returncode == 1
    engine = _core.WorkerEngine(config.client(), ["solo"], lease=5.0, concurrency=2)
    engine.start()  # its scheduler reaps the dead worker's lease: two orphans
    try:
        [first] = engine.next_jobs(2, 15.0)
        assert first[9] is True and first[2] == handles[0].id  # redelivered, alone
        assert engine.next_jobs(2, 0.5) == []  # another handler thread: nothing while it runs
        engine.complete(first[0], None)
        [second] = engine.next_jobs(2, 5.0)  # once its outcome has landed
        assert second[9] is True and second[2] == handles[1].id
        assert handles[0].status() == "completed"
        engine.complete(second[0], None)
        engine.drain()
        assert [h.wait_result(timeout=5) for h in handles] == [None, None]
    finally:
        engine.stop_fetching()
        engine.close()
    assert [h.status() for h in handles] == ["completed", "completed"]
