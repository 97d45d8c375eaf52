"""fastjobs through Redis Sentinel (a primary, a replica and 3 Sentinels started for the test,
tests/redis_sentinel.py): jobs run on the primary the Sentinels name, and clear errors for
URLs that name the wrong servers. A failover under load: tests/chaos/test_sentinel_failover.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import fastjobs
from fastjobs import Queue, config

from .conftest import RedisServer
from .redis_sentinel import RedisSentinel


class Double(fastjobs.Job[int, int]):
    def process(self, payload: int) -> int:
        return 2 * payload


@pytest.fixture(scope="module")
def sentinel() -> Iterator[RedisSentinel]:
    with RedisSentinel() as s:
        yield s


def test_jobs_run_on_the_primary_the_sentinels_name(sentinel: RedisSentinel, prefix: str, start_worker: Any) -> None:
    config.reset()
    fastjobs.configure(sentinel.url, prefix=prefix)
    handles = [Double.dispatch(i).on_queue("sums").send() for i in range(10)]
    Double.dispatch_many(list(range(100)), queue="sums")
    start_worker(queues=["sums"], concurrency=4)
    assert [h.wait_result(timeout=10) for h in handles] == [2 * i for i in range(10)]
    primary = sentinel.primary_port()
    assert int(sentinel.command(primary, "EXISTS", f"{prefix}:{{sums}}:stats")) == 1  # written on the primary
    config.reset()


def test_urls_that_name_the_wrong_servers_are_refused_clearly(sentinel: RedisSentinel, redis_server: RedisServer) -> None:
    config.reset()
    fastjobs.configure(sentinel.url.rsplit("/", 1)[0] + "/nosuchprimary")
    with pytest.raises(ValueError, match='watches no primary named "nosuchprimary"'):
        Queue("q").counts()
    config.reset()
    fastjobs.configure(f"redis+sentinel://127.0.0.1:{redis_server.port}/mymaster")
    with pytest.raises(ValueError, match="is not a Sentinel"):
        Queue("q").counts()
    config.reset()
    with pytest.raises(ValueError, match="name the primary after the Sentinels"):
        fastjobs.configure(f"redis+sentinel://127.0.0.1:{sentinel.sentinel_ports[0]}")
    config.reset()
