"""A Redis Cluster primary killed under load and its replica promoted: producers dispatch single
jobs in a loop to a queue on that primary while a worker drains its backlog. Producers get
typed errors until the replica serves the slot and carry on by themselves; the worker finds the
new primary by itself; every dispatch that returned completes, once.

Redis replicates asynchronously: a primary that dies may take with it writes it answered but
had not sent on. On loopback the replica is written before the client's answer (Redis writes
replicas' buffers first in the same event-loop pass), so nothing answered is lost here; across
a network that window is Redis's own, and docs/DESIGN.md says what it means for jobs."""

from __future__ import annotations

import time
from typing import Any

from ..redis_cluster import RedisCluster
from ..resp import Redis
from .conftest import connect
from .scenarios import restart_under_load


def test_a_cluster_primary_killed_under_producers_and_a_worker_fails_over_and_loses_no_dispatch_that_returned(
        workers: Any, ledger: Redis, prefix: str, figures: Any, tmp_path: Any) -> None:
    with RedisCluster(primaries=3, replicas=1, dir=str(tmp_path / "cluster")) as cluster:
        connect(cluster.url, prefix, connect_timeout=1.0)
        failover: list[float] = []

        def kill_primary() -> float:
            primary = cluster.port_for_queue("restart")  # the queue restart_under_load uses
            cluster.kill(primary)
            failover.append(cluster.wait_for_failover(primary))
            return time.monotonic()

        row = restart_under_load(1, kill_primary, "Redis Cluster", workers, ledger, prefix, url=cluster.url)
        figures(**row, failover_s=failover[0])
