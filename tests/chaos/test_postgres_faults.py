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
from .conftest import connect, sizes
from .jobs import Rec
from .scenarios import blackhole_past_lease, kill_mid_drain, restart_under_load
from .servers import PersistentPostgres

# A PostgreSQL database holds one application's queues (the prefix must be the default).
PREFIX = "fj"


def sql(url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows read straight from the database."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return list(conn.execute(query, args))


def held(url: str, queue: str) -> list[str]:
    """The ids of the jobs the database holds for ``queue``."""
    return [r[0] for r in sql(url, "SELECT id FROM fastjobs.jobs WHERE queue = %s", queue)]


@sizes(short=1, long=5)
def test_postgresql_crashed_under_producers_and_a_worker_loses_no_dispatch_that_returned(
        size: int, durable_postgres: PersistentPostgres, workers: Any, ledger: Redis, prefix: str, figures: Any) -> None:
    server = durable_postgres
    connect(server.url, PREFIX, connect_timeout=1.0)
    # A pooled connection that broke fails the call that meets it, and the next call opens it
    # again: no bound on failures per producer is asserted here.
    figures(**restart_under_load(size, lambda: server.restart(down=1.0), "PostgreSQL", workers, ledger, prefix, url=server.url,
                                 store_prefix=PREFIX))


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
    connect(durable_postgres.url, PREFIX)
    p = proxy(durable_postgres.port)
    figures(**blackhole_past_lease(total, hole, workers, p, ledger, prefix, cut_url=f"postgresql://postgres@127.0.0.1:{p.port}/postgres",
                                   direct_url=durable_postgres.url, store_prefix=PREFIX))


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
