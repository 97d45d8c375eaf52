"""Fault scenarios run on more than one store (Redis in test_worker_faults.py,
test_redis_restart.py and test_network.py; the SQL stores beside their other faults): each
returns its figures after the audit."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..conftest import eventually
from ..resp import Redis
from .conftest import LOST_LEASES, audit, counts, drained
from .jobs import Rec, runs
from .producers import Producer


def dispatch(queue: str, n: int, sleep: float) -> list[Any]:
    """``n`` jobs: a bulk dispatch (runs of records) between single ones."""
    quarter = n // 4
    sent = [Rec.dispatch({"tag": f"s{i}", "sleep": sleep}).on_queue(queue).attempts(1).send() for i in range(quarter)]
    bulk = Rec.dispatch_many([{"tag": f"b{i}", "sleep": sleep} for i in range(n - 2 * quarter)], queue=queue, attempts=1)
    sent += [bulk.handle(i) for i in range(len(bulk))]
    sent += [Rec.dispatch({"tag": f"t{i}", "sleep": sleep}).on_queue(queue).attempts(1).send() for i in range(quarter)]
    return sent


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


def restart_under_load(restarts: int, restart: Callable[[], float], store: str, workers: Any, ledger: Redis, prefix: str, *,
                       url: str, store_prefix: str | None = None, max_late_failures: int | None = None) -> dict[str, Any]:
    """The store restarted ``restarts`` times (``restart()`` returns when it answers again) while
    two producers send single jobs and a worker drains a backlog: the producers get typed errors
    meanwhile and carry on by themselves (at most ``max_late_failures`` each after the store is
    back, when given), the worker reconnects by itself (its log says ``<store> trouble``), and
    every dispatch that returned completes, once."""
    q = "restart"
    backlog = Rec.dispatch_many([{"tag": f"b{i}", "sleep": 0.002} for i in range(500 * restarts)], queue=q, attempts=1)
    w = workers("--queue", q, "--concurrency", "2", "--lease", "10", "--grace", "30", url=url, store_prefix=store_prefix)
    producers = [Producer(f"p{n}", q) for n in range(2)]
    for p in producers:
        p.start()

    errors = 0
    fault_end = time.monotonic()
    for r in range(restarts):
        # Mid-drain, and the producers are sending.
        eventually(lambda r=r: counts(q).get("completed", 0) >= 250 * (r + 1), timeout=60)
        eventually(lambda t=fault_end: all(len([c for c in p.calls if c[0] > t and not c[1]]) >= 10 for p in producers), timeout=30)
        before = sum(len(p.calls) for p in producers)
        fault_end = restart()
        assert sum(len(p.calls) for p in producers) > before  # they kept calling meanwhile
        # Each producer recovers by itself, with the same client: once the store answers again
        # its calls succeed.
        eventually(lambda t=fault_end: all(len([c for c in p.calls if c[0] > t and not c[1]]) >= 5 for p in producers), timeout=30)
        if max_late_failures is not None:
            for p in producers:
                late = [kind for started, kind in p.calls if started > fault_end and kind]
                assert len(late) <= max_late_failures, (p.tag, late)
        assert all(p.is_alive() for p in producers), [p.unexpected for p in producers]
    for p in producers:
        p.halt.set()
        p.join(30)
    for p in producers:
        assert not p.unexpected, p.unexpected
        failed = [kind for _t, kind in p.calls if kind]
        assert failed, f"producer {p.tag} never saw {store} away"
        assert set(failed) <= {"ConnectionError", "StoreTimeoutError"}, set(failed)
        errors += len(failed)

    end = drained(q, 0, timeout=120)
    summary = w.stop()
    assert f"{store} trouble, retrying" in w.log(), w.log()[-1500:]  # it saw the store go away, and carried on by itself

    sent = [backlog.handle(i) for i in range(len(backlog))] + [h for p in producers for h in p.sent]
    uncertain = {tag for p in producers for tag in p.uncertain}
    landed = {r.tag for r in runs(ledger, prefix)} & uncertain  # raised, yet taken before the store went away
    a = audit(q, sent, ledger, prefix, workers.all, extra=len(landed))
    # One worker, never killed: its summary is the whole story.
    assert (summary.completed, summary.stale) == (a.jobs, a.duplicates), (summary, a.jobs, a.duplicates)
    return dict(jobs=a.jobs, restarts=restarts, lost=0, duplicates=a.duplicates, producer_errors=errors, landed_though_raised=len(landed),
                recovery_s=end - fault_end)


def blackhole_past_lease(total: int, hole: float, workers: Any, proxy: Any, ledger: Redis, prefix: str, *, cut_url: str,
                         direct_url: str | None = None, store_prefix: str | None = None) -> dict[str, Any]:
    """A blackhole of ``hole`` seconds (lease 1 s) between a worker and the store (``proxy``,
    whose url is ``cut_url``) while a second worker, connected directly, reaps the cut-off
    worker's leases and runs their jobs: the cut-off worker's late acknowledgements are refused
    and counted stale, and it logs its lost leases."""
    q = "hole"
    args = ("--queue", q, "--concurrency", "2", "--lease", "1", "--grace", "60")
    cut_off = workers(*args, url=cut_url, store_prefix=store_prefix)
    # A job the cut-off worker still runs well after the blackhole: its lease is one the
    # worker renews after it, and learns is gone.
    long = Rec.dispatch({"tag": "long", "stall": hole + 3}).on_queue(q).attempts(1).send()
    eventually(lambda: [r for r in runs(ledger, prefix) if r.job_id == long.id], timeout=30)
    direct = workers(*args, url=direct_url, store_prefix=store_prefix)  # its scheduler reaps the cut-off worker's leases
    sent = [long, *dispatch(q, total, 0.005)]
    eventually(lambda: counts(q).get("completed", 0) >= total // 4, timeout=120, interval=0.02)

    proxy.blackhole()
    time.sleep(hole)
    proxy.resume()
    fault_end = time.monotonic()
    end = drained(q, total + 1, timeout=300)  # the other worker may have drained it all meanwhile
    eventually(lambda: LOST_LEASES in cut_off.log(), timeout=60, interval=0.05)
    rejoined = time.monotonic()  # the cut-off worker is back and knows its leases went

    assert long.wait_result(timeout=1) == direct.pid  # reaped during the blackhole, run by the other worker
    s_cut = cut_off.stop()  # after its long run, whose acknowledgement is refused
    s_direct = direct.stop()
    a = audit(q, sent, ledger, prefix, workers.all)
    assert s_cut.stale >= 1
    # An acknowledgement whose answer the blackhole ate, sent again after the reaper took the
    # rest of its lease, is refused as stale though it had landed (the store cannot tell that
    # send from a late one; docs/DESIGN.md, "Faults, measured"): its job completed once, and
    # its worker counted the run stale. Every run is counted completed or stale.
    landed = s_cut.stale + s_direct.stale - a.duplicates
    assert 0 <= landed <= 2, (s_cut, s_direct, a.duplicates)
    assert s_cut.completed + s_direct.completed + landed == total + 1, (s_cut, s_direct, a.duplicates)
    return dict(jobs=total + 1, blackhole_s=hole, lost=0, duplicates=a.duplicates, stale=s_cut.stale + s_direct.stale,
                recovery_s=end - fault_end, rejoined_s=rejoined - fault_end)
