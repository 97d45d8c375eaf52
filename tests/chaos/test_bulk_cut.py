"""The network between a producer and Redis fails in the middle of a bulk dispatch
(tests/chaos/proxy.py): cut, blackholed, or losing Redis's answers while its writes still land.
The dispatch raises BulkDispatchError with every job taken from the generator in exactly one
group (committed, unknown, unsent), the committed ones all in Redis; once the network is back,
``resend()`` leaves every job in Redis exactly once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

import fastjobs
from fastjobs import BulkDispatchError

from ..conftest import RedisServer, waiting_records
from ..resp import Redis
from .conftest import connect, sizes
from .jobs import Rec


def held(redis: Redis, prefix: str, queue: str) -> list[str]:
    """The ids of the jobs waiting in the queue, read straight from Redis (not through the proxy)."""
    return [r[7 : 7 + r[6]].decode() for r in waiting_records(redis, prefix, queue)]


@pytest.mark.parametrize("fault", ["cut", "blackhole", "lose_answers"])
@sizes(short=(60_000, 25_000), long=(600_000, 250_000))
def test_a_bulk_dispatch_cut_part_way_is_exact_and_resend_finishes_it_once(size: tuple[int, int], fault: str, proxy: Any,
                                                                           redis_server: RedisServer, prefix: str, figures: Any) -> None:
    total, at = size
    q = f"bulk-{fault}"
    p = proxy()
    connect(p.url, prefix, connect_timeout=0.5, response_timeout=0.5)
    taken = 0

    def payloads() -> Iterator[dict[str, Any]]:
        nonlocal taken
        for i in range(total):
            if i == at:
                getattr(p, fault)()  # the chunks before are written or on the wire
            taken += 1
            yield {"tag": f"b{i}"}

    started = time.monotonic()
    with pytest.raises(BulkDispatchError) as e:
        Rec.dispatch_many(payloads(), queue=q, chunk_size=5_000)
    err = e.value
    raised = time.monotonic()
    groups = [set(err.result), set(err.unknown), set(err.unsent)]
    assert sum(len(g) for g in groups) == taken, err
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2]), err
    assert isinstance(err.__cause__, fastjobs.ConnectionError), repr(err.__cause__)
    redis = Redis(redis_server.port)
    in_redis = set(held(redis, prefix, q))
    # What is committed is in Redis; what landed beyond it was reported unknown, never unsent.
    assert groups[0] <= in_redis <= groups[0] | groups[1], (len(groups[0]), len(in_redis), len(groups[1]))

    p.resume()
    result = err.resend()
    ids = held(redis, prefix, q)
    assert len(result) == taken and sorted(ids) == sorted(result), (len(result), len(ids), taken)
    assert len(set(ids)) == len(ids)  # not one job twice
    figures(fault=fault, taken=taken, committed=err.committed, unknown=err.unknown.count, unsent=err.unsent.count,
            landed_unknown=len(in_redis - groups[0]), duplicates=len(ids) - len(set(ids)), raised_after_s=round(raised - started, 2))
