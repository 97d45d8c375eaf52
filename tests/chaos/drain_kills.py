"""Scenario a, on any store: workers SIGKILLed mid-drain, again and again (the Redis run is in
test_worker_faults.py, the SQL stores' beside their other faults)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..conftest import eventually
from ..resp import Redis
from .conftest import audit, counts, drained
from .jobs import runs
from .test_network import dispatch


def kill_mid_drain(total: int, kills: int, workers: Any, ledger: Redis, prefix: str, *, leases: Callable[[str], set[str]],
                   orphans_running: Callable[[str], bool], url: str | None = None, store_prefix: str | None = None) -> dict[str, Any]:
    """Drains ``total`` jobs (single dispatches around a bulk one: a kill may fall inside a
    bulk run) with one worker at a time, killed ``kills`` times at points spread over the
    drain; returns the figures. ``leases(queue)`` are the queue's live lease tokens,
    ``orphans_running(queue)`` whether an orphan's run is recorded as started.

    A kill that lands while a worker runs an orphan counts that run (the orphan may be what
    kills workers: the poison test), and with attempts=1 the job would fail, as designed. So
    each kill waits until the jobs reaped from the previous one have run (an orphan runs alone,
    its start recorded until its outcome lands); any other moment of the drain is fair game:
    jobs running, prefetched, in runs, acknowledgements in flight."""
    q = "drain"
    sent = dispatch(q, total, 0.01)
    assert len(sent) == total

    def quiet(dead: set[str]) -> bool:
        if leases(q) & dead or orphans_running(q):
            return False
        return sum(r.redelivered for r in runs(ledger, prefix)) == counts(q).get("stalled", -1)

    args = ("--queue", q, "--concurrency", "2", "--lease", "1", "--grace", "30")
    w = workers(*args, url=url, store_prefix=store_prefix)
    dead: set[str] = set()
    restarted = time.monotonic()
    for k in range(kills):
        target = total * (k + 1) // (kills + 2)  # kill points spread over the drain
        eventually(lambda target=target, dead=dead: counts(q).get("completed", 0) >= target and quiet(dead), timeout=120, interval=0.01)
        assert w.alive(), w.log()[-3000:]
        w.kill()
        assert counts(q)["completed"] < total, "the drain ended before the kill: make the jobs slower"
        dead = leases(q)  # the killed worker's
        w = workers(*args, url=url, store_prefix=store_prefix)
        restarted = time.monotonic()
    eventually(lambda: quiet(dead), timeout=120, interval=0.01)
    rerun = time.monotonic()  # every job the last killed worker held has run again
    end = drained(q, total, timeout=300)
    w.stop()

    a = audit(q, sent, ledger, prefix, workers.all)
    c = counts(q)
    assert c["failed"] == 0
    assert {r.attempt for r in a.runs} == {0}  # with attempts=1: no run was ever counted
    return dict(jobs=total, kills=kills, lost=0, duplicates=a.duplicates, stalled=c["stalled"], orphans_rerun_s=rerun - restarted,
                recovery_s=end - restarted)
