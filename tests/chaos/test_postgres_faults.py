"""The PostgreSQL store under faults: the server crashes (an immediate shutdown, then recovery
from its WAL) while producers dispatch and a worker drains, and the network between a bulk
dispatch and the server fails part way (tests/chaos/proxy.py). Producers get typed errors
while the server is away and carry on by themselves, the worker reconnects by itself, every
dispatch that returned completes, once; a bulk dispatch cut part way raises with every job in
exactly one group, and ``resend()`` leaves each in the database exactly once; workers killed
mid-drain lose nothing; a worker cut off past its lease has its late acknowledgements refused
while another runs its jobs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

import fastjobs
from fastjobs import BulkDispatchError

from ..conftest import eventually
from ..resp import Redis
from .conftest import LOST_LEASES, audit, connect, counts, drained, sizes
from .drain_kills import kill_mid_drain
from .jobs import Rec, runs
from .producers import Producer
from .servers import PersistentPostgres
from .test_network import dispatch

# A PostgreSQL database holds one application's queues (the prefix must be the default).
PREFIX = "fj"


def held(url: str, queue: str) -> list[str]:
    """The ids of the jobs the database holds for ``queue``, read straight from it."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM fastjobs.jobs WHERE queue = %s", (queue,))]


@sizes(short=1, long=5)
def test_postgresql_crashed_under_producers_and_a_worker_loses_no_dispatch_that_returned(
        size: int, durable_postgres: PersistentPostgres, workers: Any, ledger: Redis, prefix: str, figures: Any) -> None:
    restarts = size
    server = durable_postgres
    connect(server.url, PREFIX, connect_timeout=1.0)
    q = "restart"
    backlog = Rec.dispatch_many([{"tag": f"b{i}", "sleep": 0.002} for i in range(500 * restarts)], queue=q, attempts=1)
    w = workers("--queue", q, "--concurrency", "2", "--lease", "10", "--grace", "30", url=server.url, store_prefix=PREFIX)
    producers = [Producer(f"p{n}", q) for n in range(2)]
    for p in producers:
        p.start()

    errors = 0
    fault_end = time.monotonic()
    for r in range(restarts):
        eventually(lambda r=r: counts(q).get("completed", 0) >= 250 * (r + 1), timeout=60)
        eventually(lambda t=fault_end: all(len([c for c in p.calls if c[0] > t and not c[1]]) >= 10 for p in producers), timeout=30)
        before = sum(len(p.calls) for p in producers)
        fault_end = server.restart(down=1.0)
        assert sum(len(p.calls) for p in producers) > before  # they kept calling meanwhile
        # Each producer recovers by itself with the same client: a pooled connection that broke
        # fails the call that meets it, and the next call opens it again.
        eventually(lambda t=fault_end: all(len([c for c in p.calls if c[0] > t and not c[1]]) >= 5 for p in producers), timeout=30)
        assert all(p.is_alive() for p in producers), [p.unexpected for p in producers]
    for p in producers:
        p.halt.set()
        p.join(30)
    for p in producers:
        assert not p.unexpected, p.unexpected
        failed = [kind for _t, kind in p.calls if kind]
        assert failed, f"producer {p.tag} never saw the server away"
        assert set(failed) <= {"ConnectionError", "StoreTimeoutError"}, set(failed)
        errors += len(failed)

    end = drained(q, 0, timeout=120)
    summary = w.stop()
    assert "PostgreSQL trouble, retrying" in w.log()  # it saw the server go away, and carried on by itself

    sent = [backlog.handle(i) for i in range(len(backlog))] + [h for p in producers for h in p.sent]
    uncertain = {tag for p in producers for tag in p.uncertain}
    landed = {r.tag for r in runs(ledger, prefix)} & uncertain  # raised, yet committed before the crash
    a = audit(q, sent, ledger, prefix, workers.all, extra=len(landed))
    assert (summary.completed, summary.stale) == (a.jobs, a.duplicates), (summary, a.jobs, a.duplicates)
    figures(jobs=a.jobs, restarts=restarts, lost=0, duplicates=a.duplicates, producer_errors=errors,
            landed_though_raised=len(landed), recovery_s=end - fault_end)


@pytest.mark.parametrize("fault", ["cut", "blackhole", "lose_answers"])
@sizes(short=(40_000, 15_000), long=(400_000, 150_000))
def test_a_bulk_dispatch_to_postgresql_cut_part_way_is_exact_and_resend_finishes_it_once(
        size: tuple[int, int], fault: str, durable_postgres: PersistentPostgres, proxy: Any, figures: Any) -> None:
    total, at = size
    q = f"bulk-{fault}"
    p = proxy(durable_postgres.port)
    connect(f"postgresql://postgres@127.0.0.1:{p.port}/postgres", PREFIX, connect_timeout=0.5, response_timeout=1.0)
    taken = 0

    def payloads() -> Iterator[dict[str, Any]]:
        nonlocal taken
        for i in range(total):
            if i == at:
                # Some chunks written, the rest on the wire or staged.
                eventually(lambda: len(held(durable_postgres.url, q)) >= 5_000, timeout=30)
                getattr(p, fault)()
            taken += 1
            yield {"tag": f"b{i}"}

    started = time.monotonic()
    with pytest.raises(BulkDispatchError) as e:
        Rec.dispatch_many(payloads(), queue=q, chunk_size=5_000)
    err = e.value
    raised = time.monotonic()
    groups = [set(err.result), set(err.unknown), set(err.unsent)]
    assert sum(len(g) for g in groups) == taken, err
    assert len(groups[0]) >= 5_000, err
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2]), err
    assert isinstance(err.__cause__, (fastjobs.ConnectionError, fastjobs.StoreTimeoutError)), repr(err.__cause__)
    in_db = set(held(durable_postgres.url, q))
    # A chunk is one transaction: what is committed is in the database, what landed beyond it
    # was reported unknown, never unsent, and no chunk is there in part.
    assert groups[0] <= in_db <= groups[0] | groups[1], (len(groups[0]), len(in_db), len(groups[1]))
    assert len(in_db) % 5_000 == 0, len(in_db)

    p.resume()
    result = err.resend()
    ids = held(durable_postgres.url, q)
    assert len(result) == taken and sorted(ids) == sorted(result), (len(result), len(ids), taken)
    assert len(set(ids)) == len(ids)  # not one job twice
    figures(fault=fault, taken=taken, committed=err.committed, unknown=err.unknown.count, unsent=err.unsent.count,
            landed_unknown=len(in_db - groups[0]), raised_after_s=round(raised - started, 2))


@sizes(short=(600, 3.0), long=(4000, 6.0))
def test_a_worker_cut_off_from_postgresql_past_its_lease_has_its_late_acks_refused(
        size: tuple[int, float], durable_postgres: PersistentPostgres, workers: Any, proxy: Any, ledger: Redis, prefix: str,
        figures: Any) -> None:
    total, hole = size
    q = "hole"
    connect(durable_postgres.url, PREFIX)
    p = proxy(durable_postgres.port)
    args = ("--queue", q, "--concurrency", "2", "--lease", "1", "--grace", "60")
    cut_off = workers(*args, url=f"postgresql://postgres@127.0.0.1:{p.port}/postgres", store_prefix=PREFIX)
    # A job the cut-off worker still runs well after the blackhole: its lease is one the worker
    # renews after it, and learns is gone.
    long = Rec.dispatch({"tag": "long", "stall": hole + 3}).on_queue(q).attempts(1).send()
    eventually(lambda: [r for r in runs(ledger, prefix) if r.job_id == long.id], timeout=30)
    direct = workers(*args, url=durable_postgres.url, store_prefix=PREFIX)  # its scheduler reaps the cut-off worker's leases
    sent = [long, *dispatch(q, total, 0.005)]
    eventually(lambda: counts(q).get("completed", 0) >= total // 4, timeout=120, interval=0.02)

    p.blackhole()
    time.sleep(hole)
    p.resume()
    fault_end = time.monotonic()
    end = drained(q, total + 1, timeout=300)
    eventually(lambda: LOST_LEASES in cut_off.log(), timeout=60, interval=0.05)
    rejoined = time.monotonic()  # the cut-off worker is back and knows its leases went

    assert long.wait_result(timeout=1) == direct.pid  # reaped during the blackhole, run by the other worker
    s_cut = cut_off.stop()  # after its long run, whose acknowledgement is refused
    s_direct = direct.stop()
    a = audit(q, sent, ledger, prefix, workers.all)
    assert s_cut.stale >= 1
    assert s_cut.completed + s_direct.completed == total + 1, (s_cut, s_direct)
    assert s_cut.stale + s_direct.stale == a.duplicates, (s_cut, s_direct, a.duplicates)
    figures(jobs=total + 1, blackhole_s=hole, lost=0, duplicates=a.duplicates, stale=s_cut.stale + s_direct.stale,
            recovery_s=end - fault_end, rejoined_s=rejoined - fault_end)


def sql(url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return list(conn.execute(query, args))


@sizes(short=(1200, 2), long=(6000, 6))
def test_workers_killed_mid_drain_on_postgresql_lose_nothing_and_rerun_only_logged_orphans(
        size: tuple[int, int], durable_postgres: PersistentPostgres, workers: Any, ledger: Redis, prefix: str, figures: Any) -> None:
    total, kills = size
    url = durable_postgres.url
    connect(url, PREFIX)
    figures(**kill_mid_drain(
        total, kills, workers, ledger, prefix, url=url, store_prefix=PREFIX,
        leases=lambda q: {t for (t,) in sql(url, "SELECT token FROM fastjobs.leases WHERE queue = %s", q)},
        orphans_running=lambda q: bool(sql(url, "SELECT 1 FROM fastjobs.jobs WHERE queue = %s AND started_ms IS NOT NULL", q)),
    ))
