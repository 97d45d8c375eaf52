"""Single dispatches made at the same time, from threads and from asyncio tasks, go to Redis
together (one round trip, one script call per queue); each caller still gets its own id, its
own error and its acknowledgement only once its job is in Redis."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import fastjobs
from fastjobs import Queue, _core, config

from .conftest import waiting_records
from .test_bulk_lost_answers import spin


class Ping(fastjobs.Job[dict, None]):
    queue = "coalesce-a"

    def process(self, payload: dict) -> None:
        return None


class Pong(fastjobs.Job[dict, None]):
    queue = "coalesce-b"

    def process(self, payload: dict) -> None:
        return None


def script_calls(redis: Any) -> int:
    """EVALSHA calls Redis has run so far (INFO commandstats)."""
    for line in redis("INFO", "commandstats").decode().splitlines():
        if line.startswith("cmdstat_evalsha:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


def build(i: int) -> fastjobs.PendingDispatch[None]:
    """A mix of what the coalesced path writes: plain jobs, delays, priorities, caller ids and
    deduplication keys, on two queues."""
    job = (Ping if i % 2 else Pong).dispatch({"i": i})
    kind = i % 5
    if kind == 1:
        job = job.delay(3600)
    elif kind == 2:
        job = job.priority(5)
    elif kind == 3:
        job = job.job_id(f"id-{i}")
    elif kind == 4:
        job = job.deduplicate(f"key-{i}")
    return job


def check_written(handles: list[fastjobs.JobHandle[None]], n: int, warm: int = 0) -> None:
    """`warm`: jobs dispatched to each queue before."""
    assert len(handles) == n
    assert all(h.created and not h.deduplicated for h in handles)
    assert len({(h.queue, h.id) for h in handles}) == n  # each caller its own job
    for name in ("coalesce-a", "coalesce-b"):
        c = Queue(name).counts()
        assert c["waiting"] + c["delayed"] == warm + sum(h.queue == name for h in handles)
    # Acknowledged means in Redis: every job is known right away.
    for h in handles[:: max(1, n // 50)]:
        assert h.status() in ("waiting", "delayed")


def test_threads_dispatching_at_once_share_script_calls(redis: Any) -> None:
    Ping.dispatch({"warm": 1}).send()  # the queues exist: no first-write registration below
    Pong.dispatch({"warm": 1}).send()
    before = script_calls(redis)
    n = 32 * 60
    with ThreadPoolExecutor(32) as pool:
        handles = list(pool.map(lambda i: build(i).send(), range(n)))
    calls = script_calls(redis) - before
    check_written(handles, n, warm=1)
    # Up to two calls per queue and batch (push.lua, enqueue.lua): far fewer than dispatches.
    assert calls < n * 0.8, (calls, n)


async def test_asyncio_tasks_dispatching_at_once_share_script_calls(redis: Any) -> None:
    await Ping.dispatch({"warm": 1})
    await Pong.dispatch({"warm": 1})
    before = script_calls(redis)
    n = 2_000
    handles = await asyncio.gather(*(build(i).send_async() for i in range(n)))
    calls = script_calls(redis) - before
    check_written(list(handles), n, warm=1)
    assert calls < n * 0.2, (calls, n)


async def test_the_first_dispatches_to_a_queue_register_it() -> None:
    await asyncio.gather(*(Ping.dispatch({"i": i}) for i in range(10)))
    assert [q.name for q in Queue.all()] == ["coalesce-a"]
    assert Queue("coalesce-a").counts()["waiting"] == 10


async def test_a_bad_dispatch_fails_alone_in_its_batch() -> None:
    big = {"x": "y" * (600 * 1024)}
    results = await asyncio.gather(
        *(Ping.dispatch(big if i % 10 == 3 else {"i": i}).send_async() for i in range(200)), return_exceptions=True
    )
    bad = [r for r in results if isinstance(r, BaseException)]
    assert len(bad) == 20 and all(isinstance(e, ValueError) and "over the limit" in str(e) for e in bad)
    assert Queue("coalesce-a").counts()["waiting"] == 180


async def test_duplicate_ids_in_one_batch_make_one_job() -> None:
    handles = await asyncio.gather(*(Ping.dispatch({"i": i}).job_id("same").send_async() for i in range(50)))
    assert {h.id for h in handles} == {"same"}
    assert sum(h.created for h in handles) == 1
    assert Queue("coalesce-a").counts()["waiting"] == 1


async def test_a_redis_error_fails_the_dispatches_of_its_queue_only(redis: Any, prefix: str) -> None:
    await Ping.dispatch({"warm": 1})
    await Pong.dispatch({"warm": 1})
    redis("DEL", f"{prefix}:{{coalesce-a}}:wait")
    redis("SET", f"{prefix}:{{coalesce-a}}:wait", "not a list")  # RPUSH answers WRONGTYPE
    results = await asyncio.gather(*((Ping if i % 2 else Pong).dispatch({"i": i}).send_async() for i in range(100)),
                                   return_exceptions=True)
    failed = [r for i, r in enumerate(results) if i % 2]
    written = [r for i, r in enumerate(results) if not i % 2]
    assert all(isinstance(e, fastjobs.StoreError) and "WRONGTYPE" in str(e) for e in failed), failed[:3]
    assert all(isinstance(h, fastjobs.JobHandle) for h in written)
    assert Queue("coalesce-b").counts()["waiting"] == 51
    # Threads too: the sync face's answer is typed the same way.
    with pytest.raises(fastjobs.StoreError, match="WRONGTYPE"):
        Ping.dispatch({"i": 0}).send()


async def test_scripts_lost_by_redis_are_loaded_again_for_a_batch(redis: Any) -> None:
    await Ping.dispatch({"warm": 1})
    redis("SCRIPT", "FLUSH")
    handles = await asyncio.gather(*(Ping.dispatch({"i": i}).send_async() for i in range(100)))
    assert len({h.id for h in handles}) == 100
    assert Queue("coalesce-a").counts()["waiting"] == 101


async def test_a_cancelled_await_does_not_stop_the_write() -> None:
    task = asyncio.ensure_future(Ping.dispatch({"i": 1}).send_async())
    await asyncio.sleep(0)  # the task runs up to its await: the job is with the engine
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(200):
        if Queue("coalesce-a").counts()["waiting"] == 1:
            break
        await asyncio.sleep(0.01)
    assert Queue("coalesce-a").counts()["waiting"] == 1
    # The loop's inbox settles later answers as before.
    assert (await Ping.dispatch({"i": 2})).created


def test_each_event_loop_gets_its_answers() -> None:
    async def burst(n: int) -> list[fastjobs.JobHandle[None]]:
        return list(await asyncio.gather(*(Ping.dispatch({"i": i}).send_async() for i in range(n))))

    # One loop after another in this thread, and loops in other threads at the same time.
    assert len(asyncio.run(burst(50))) == 50
    assert len(asyncio.run(burst(50))) == 50
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(len(asyncio.run(burst(200))))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [200] * 4
    # A loop that stopped with nothing in flight and runs again still gets its answers.
    lp = asyncio.new_event_loop()
    try:
        assert len(lp.run_until_complete(burst(20))) == 20
        assert len(asyncio.run(burst(20))) == 20
        assert len(lp.run_until_complete(burst(20))) == 20
    finally:
        lp.close()
    assert Queue("coalesce-a").counts()["waiting"] == 100 + 800 + 60


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX only")
def test_a_forked_child_dispatches_through_its_own_engine() -> None:
    Ping.dispatch({"parent": 1}).send()
    asyncio.run(Ping.dispatch({"parent": 2}).send_async())
    pid = os.fork()
    if pid == 0:  # the child: the parent's dispatch thread and connections are not here
        code = 1
        try:
            h1 = Ping.dispatch({"child": 1}).send()
            h2 = asyncio.run(Ping.dispatch({"child": 2}).send_async())
            code = 0 if h1.created and h2.created else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert Queue("coalesce-a").counts()["waiting"] == 4
    assert config.client() is config.client()  # the parent's engine is unchanged


class Warm(fastjobs.Job[dict, None]):
    queue = "coalesce-warm"

    def process(self, payload: dict) -> None:
        return None


async def own_connection() -> None:
    """Dispatches until the running loop writes on a connection of its own (opened in the
    background on its first dispatch; until then the dispatch thread writes for it)."""
    for _ in range(500):
        await Warm.dispatch({})
        if _core._loop_links() == ["open"]:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the loop's connection did not open: {_core._loop_links()}")


async def test_the_loops_own_connection_batches_what_arrives_together(redis: Any, prefix: str) -> None:
    await Ping.dispatch({"warm": 1})
    await Pong.dispatch({"warm": 1})
    await own_connection()
    before = script_calls(redis)
    n = 2_000
    handles = await asyncio.gather(*(build(i).send_async() for i in range(n)))
    assert _core._loop_links() == ["open"]
    check_written(list(handles), n, warm=1)
    assert script_calls(redis) - before < n * 0.2
    # One at a time, each waits for its own answer: written in order.
    for i in range(20):
        await Ping.dispatch({"seq": i})
    ours = [r for r in waiting_records(redis, prefix, "coalesce-a") if b'"seq"' in r]
    assert [int(r.rsplit(b":", 1)[1].rstrip(b"}")) for r in ours] == list(range(20))


async def test_large_batches_are_written_in_pieces_as_the_socket_takes_them() -> None:
    await own_connection()
    big = {"x": "y" * (400 * 1024)}
    handles = await asyncio.gather(*(Ping.dispatch(big).send_async() for _ in range(40)))
    assert len({h.id for h in handles}) == 40
    assert Queue("coalesce-a").counts()["waiting"] == 40
    assert _core._loop_links() == ["open"]


async def test_a_killed_connection_is_replaced(redis: Any) -> None:
    await own_connection()
    redis("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    await asyncio.sleep(0.05)  # the loop reads the end of its connection
    assert _core._loop_links() == ["retry"]
    # Meanwhile the dispatch thread writes. Its own idle connection was killed too, which a
    # plain connection only learns when it uses it: that one dispatch may fail.
    written = 0
    for i in range(5):
        try:
            written += (await Ping.dispatch({"i": i})).created
        except fastjobs.ConnectionError:
            assert i == 0
    assert written >= 4
    await own_connection()
    assert (await Ping.dispatch({"i": 5})).created
    assert Queue("coalesce-a").counts()["waiting"] == written + 1


async def test_a_dispatch_in_flight_when_the_connection_breaks_gets_a_connection_error(redis: Any, redis_server: Any, prefix: str) -> None:
    config.reset()
    fastjobs.configure(redis_server.url, prefix=prefix, max_payload=4 * 1024 * 1024)
    await own_connection()
    # Redis closes a connection whose command is over its query buffer limit: the batch in
    # flight gets no answer.
    limit = redis("CONFIG", "GET", "client-query-buffer-limit")[1]
    redis("CONFIG", "SET", "client-query-buffer-limit", "1mb")
    try:
        with pytest.raises(fastjobs.ConnectionError):
            await Ping.dispatch({"x": "y" * (2 * 1024 * 1024)})
    finally:
        redis("CONFIG", "SET", "client-query-buffer-limit", limit)
    assert Queue("coalesce-a").counts()["waiting"] == 0  # nothing of it was written
    assert (await Ping.dispatch({"i": 1})).created  # the dispatch thread meanwhile
    await own_connection()
    assert (await Ping.dispatch({"i": 2})).created
    assert Queue("coalesce-a").counts()["waiting"] == 2


async def test_an_answer_later_than_the_response_timeout_fails_the_dispatch(redis_server: Any, prefix: str) -> None:
    config.reset()
    fastjobs.configure(redis_server.url, prefix=prefix, response_timeout=0.3)
    await own_connection()
    busy = spin(redis_server, 1.5)
    with pytest.raises(fastjobs.StoreTimeoutError, match="did not answer"):
        await Ping.dispatch({"i": 1})
    busy.join()
    for _ in range(3):  # the connection that timed out was dropped: a new one is opened
        await own_connection()
    assert (await Ping.dispatch({"i": 2})).created


async def test_scripts_lost_by_redis_are_loaded_again_for_the_loops_connection(redis: Any) -> None:
    await own_connection()
    redis("SCRIPT", "FLUSH")
    handles = await asyncio.gather(*(Ping.dispatch({"i": i}).send_async() for i in range(100)))
    assert len({h.id for h in handles}) == 100
    assert Queue("coalesce-a").counts()["waiting"] == 100
    assert (await Ping.dispatch({"i": 100})).created


def test_a_connection_redis_closed_while_idle_is_replaced_without_an_error(redis: Any) -> None:
    Ping.dispatch({"i": 0}).send()  # the thread's plain connection is open
    time.sleep(1.1)  # idle long enough to be suspected (conn.rs STALE_AFTER)
    redis("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")  # as Redis's `timeout` would
    assert Ping.dispatch({"i": 1}).send().created  # sent again on a new connection
    assert Queue("coalesce-a").counts()["waiting"] == 2
