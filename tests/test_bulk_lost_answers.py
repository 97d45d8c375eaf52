"""Bulk dispatch when Redis answers too late: writes that land after the caller gave up on
them. Every job must be reported committed, unknown or unsent, the committed count must match
what Redis holds, and ``resend()`` must finish the dispatch without duplicating any job.

Redis is kept busy by a Lua script that spins for a while (a script blocks every other
client), so the writes wait in its socket buffer, the producer's answer timeout fires, and the
writes are executed afterwards: exactly an answer lost on the way back."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import fastjobs
from fastjobs import BulkDispatcher, BulkDispatchError, Queue

from .apps.jobs import Echo
from .conftest import RedisServer, waiting_records
from .resp import Redis

SPIN = """
local t = redis.call('TIME')
local start = t[1] * 1000000 + t[2]
repeat
  local n = redis.call('TIME')
until n[1] * 1000000 + n[2] - start > tonumber(ARGV[1])
return 1
"""


@pytest.fixture
def busy_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    fastjobs.configure(server.url, connection="busy", connect_timeout=0.3, response_timeout=0.3)
    # Connected before Redis is kept busy (else the first write waits for the busy Redis to
    # finish the connection's handshake, within connect_timeout, and then goes through).
    Echo.dispatch_many([0] * 100, connection="busy", queue="warm")  # the bulk path's connection
    Queue("warm", connection="busy").counts()  # the shared one
    yield server
    server.stop()


def spin(server: RedisServer, seconds: float) -> threading.Thread:
    """Keeps Redis busy for ``seconds`` from a thread of its own; returns that thread once
    Redis stopped answering (a PING gets no answer within 50 ms)."""
    t = threading.Thread(target=Redis(server.port).command, args=("EVAL", SPIN, 0, int(seconds * 1_000_000)))
    t.start()
    while True:
        with socket.create_connection(("127.0.0.1", server.port), timeout=0.05) as s:
            s.sendall(b"PING\r\n")
            try:
                s.recv(16)
            except TimeoutError:
                return t


def job_ids(server: RedisServer, queue: str) -> list[str]:
    recs = waiting_records(Redis(server.port), fastjobs.config.settings("busy").prefix, queue)
    return [r[7 : 7 + r[6]].decode() for r in recs]


def check_groups(err: BulkDispatchError, total: int) -> None:
    groups = [set(err.result), set(err.unknown), set(err.unsent)]
    assert sum(len(g) for g in groups) == total, err
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])


@pytest.mark.parametrize("face", ["sync", "async"])
def test_dispatch_many_whose_answers_are_lost_is_finished_by_resend_without_duplicates(busy_redis: RedisServer, face: str) -> None:
    total = 10_000
    payloads = [{"i": i} for i in range(total)]
    spinner = spin(busy_redis, 1.5)
    # Chunks small enough to sit whole in the socket buffers while Redis is busy: they are
    # executed once it is free again, after the producer gave up waiting for their answers.
    with pytest.raises(BulkDispatchError) as e:
        if face == "sync":
            Echo.dispatch_many(payloads, chunk_size=2_000, connection="busy", queue="lost")
        else:
            asyncio.run(Echo.dispatch_many_async(payloads, chunk_size=2_000, connection="busy", queue="lost"))
    err = e.value
    check_groups(err, total)
    assert isinstance(err.__cause__, fastjobs.ConnectionError)  # StoreTimeoutError
    assert err.unknown.count > 0, err  # the first write at least went out and was not answered
    spinner.join()
    # The writes the producer gave up on are executed now: Redis holds the committed jobs and
    # some of the unknown ones, never an unsent one.
    held = set(job_ids(busy_redis, "lost"))
    assert set(err.result) <= held <= set(err.result) | set(err.unknown)
    result = err.resend() if face == "sync" else asyncio.run(err.resend_async())
    assert len(result) == total
    ids = job_ids(busy_redis, "lost")
    assert len(ids) == total and len(set(ids)) == total  # every job once: no duplicate
    assert set(ids) == set(result)
    assert Queue("lost", connection="busy").size() == total


def test_generator_dispatch_with_lost_answers_resends_what_it_took(busy_redis: RedisServer) -> None:
    taken = 0

    def payloads() -> Iterator[int]:
        nonlocal taken
        for i in range(25_000):
            taken += 1
            yield i

    spinner = spin(busy_redis, 1.5)
    with pytest.raises(BulkDispatchError) as e:
        Echo.dispatch_many(payloads(), chunk_size=2_000, connection="busy", queue="lostgen")
    err = e.value
    check_groups(err, taken)
    spinner.join()
    result = err.resend()
    ids = job_ids(busy_redis, "lostgen")
    assert len(result) == taken and sorted(ids) == sorted(result) and len(set(ids)) == taken


def test_bulk_dispatcher_with_lost_answers_resends_without_duplicates(busy_redis: RedisServer) -> None:
    builders = [Echo.dispatch(i).on_connection("busy").on_queue("lostmix") for i in range(2_500)]
    builders += [Echo.dispatch(f"own-{i}").on_connection("busy").on_queue("lostmix").job_id(f"own-{i}") for i in range(500)]
    spinner = spin(busy_redis, 1.0)
    with pytest.raises(BulkDispatchError) as e:
        BulkDispatcher(builders).dispatch()
    err = e.value
    check_groups(err, 3_000)
    spinner.join()
    result = err.resend()
    assert len(result) == 3_000 and len(set(result)) == 3_000
    ids = job_ids(busy_redis, "lostmix")
    assert len(ids) == 3_000 and set(ids) == set(result)


@pytest.mark.parametrize("how", ["dispatch_many", "BulkDispatcher"])
def test_writes_whose_answers_were_lost_are_reported_unknown_and_resent_once(busy_redis: RedisServer, how: str) -> None:
    # Redis stays busy past the write's answer timeout and past the check that follows it, so
    # the jobs are reported unknown. Whether Redis then runs the write it had buffered depends
    # on when it sees the connection closed; either way resend leaves every job once.
    spinner = spin(busy_redis, 2.5)
    with pytest.raises(BulkDispatchError) as e:
        if how == "dispatch_many":
            Echo.dispatch_many(list(range(2_000)), chunk_size=2_000, connection="busy", queue="late")
        else:
            BulkDispatcher([Echo.dispatch(i).on_connection("busy").on_queue("late") for i in range(1_000)]).dispatch()
    err = e.value
    n = 2_000 if how == "dispatch_many" else 1_000
    assert (err.committed, err.unknown.count, err.unsent.count) == (0, n, 0), err
    spinner.join()
    assert job_ids(busy_redis, "late") in ([], list(err.unknown))
    result = err.resend()
    assert list(result) == list(err.unknown)
    assert job_ids(busy_redis, "late") == list(result)


@pytest.mark.parametrize("kind", ["few (push)", "many (raw bulk write)", "delayed (enqueue)", "priorities"])
def test_a_batch_written_twice_writes_nothing_the_second_time(busy_redis: RedisServer, kind: str) -> None:
    # What a resend of a batch that did land meets: its guard makes it write nothing, on every
    # write path (the raw bulk write takes its records off the list again in the same step).
    n = 100 if kind in ("many (raw bulk write)", "priorities") else 10

    def builders(k: int, tag: str) -> list[Any]:
        out = [Echo.dispatch(f"{tag}{i}").on_connection("busy").on_queue("twice") for i in range(k)]
        for i, b in enumerate(out):
            if kind == "delayed (enqueue)":
                b.delay(3600)
            if kind == "priorities":
                b.priority(i % 3)
        return out

    client = fastjobs.config.client("busy")
    before = BulkDispatcher(builders(5, "before-")).dispatch()
    mine = builders(n, "")
    for b in mine:
        b._claim()
    batch = client.prepare_batch("twice", [b._job_tuple() for b in mine])
    assert batch.written() is False
    first = batch.send()
    assert all(created and not deduplicated for _id, created, deduplicated in first)
    assert batch.written() is True
    after = BulkDispatcher(builders(5, "after-")).dispatch()
    assert batch.send() == first  # answered as written, and nothing is added
    counts = Queue("twice", connection="busy").counts()
    assert counts["waiting"] + counts["delayed"] == n + 10, counts
    if kind != "delayed (enqueue)":
        ids = job_ids(busy_redis, "twice") if kind != "priorities" else None
        if ids is not None:
            assert ids == list(before) + batch.ids() + list(after)
