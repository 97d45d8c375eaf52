"""A primary watched by Redis Sentinel killed under load and its replica promoted: producers
dispatch single jobs in a loop while a worker drains a backlog. Producers get typed errors until
the Sentinels name the new primary and carry on by themselves; the worker finds it by itself;
every dispatch that returned completes, once (replication is asynchronous: see
tests/chaos/test_cluster_failover.py on why nothing answered is lost on loopback)."""

from __future__ import annotations

import time
from typing import Any

from ..redis_sentinel import RedisSentinel
from ..resp import Redis
from .conftest import connect
from .scenarios import restart_under_load


def test_a_sentinel_primary_killed_under_producers_and_a_worker_fails_over_and_loses_no_dispatch_that_returned(
        workers: Any, ledger: Redis, prefix: str, figures: Any, tmp_path: Any) -> None:
    with RedisSentinel(dir=str(tmp_path / "sentinel")) as sentinel:
        connect(sentinel.url, prefix, connect_timeout=1.0)
        failover: list[float] = []

        def kill_primary() -> float:
            primary = sentinel.primary_port()
            sentinel.kill(primary)
            failover.append(sentinel.wait_for_failover(primary))
            return time.monotonic()

        row = restart_under_load(1, kill_primary, "Redis Sentinel", workers, ledger, prefix, url=sentinel.url)
        figures(**row, failover_s=failover[0])
