"""Hostile or damaged data written into a queue's keys by something other than fastjobs:
nothing of it may stop a script, make a dispatch raise (or raise after writing), vanish
without a trace, or take a neighbouring job down. Every element of a ready list, the jobs hash
or a lease that is not a job record ends in ``failed`` with a ``DecodeError`` naming the queue
and its size; bookkeeping that is not what fastjobs wrote is read as empty or repaired."""

from __future__ import annotations

import time
from typing import Any

import pytest

import fastjobs
from fastjobs import JobScheduler, Queue

from .apps.jobs import Echo
from .conftest import eventually


def key(prefix: str, queue: str, name: str) -> str:
    return f"{prefix}:{{{queue}}}:{name}"


def record(job_id: bytes, name: bytes = b"Echo", payload: bytes = b'"x"', priority: int = 0, kind: int = 1) -> bytes:
    """A job record as record.rs packs it, so that a test can damage one part of it."""
    return (bytes([kind, 0, 0, 0, 1, priority, len(job_id)]) + job_id + bytes([len(name)]) + name + bytes(6) + b"\x00\x00" + payload)


#: Elements a ready list must survive: (what it is, bytes).
GARBAGE = [
    ("empty", b""),
    ("one byte", b"\x01"),
    ("unknown kind", b"\x09garbage"),
    ("run with lengths past its end", b"\xfe\xff\xff\x01"),
    ("run byte alone", b"\xfe"),
    ("truncated record", record(b"cut-1")[:12]),
    ("id length past the end", b"\x01\x00\x00\x00\x01\x00\xfa" + b"abc"),
    ("priority out of range", record(b"prio-1", priority=200)),
    ("name not UTF-8", record(b"utf-1", name=b"\xff\xfe")),
    ("empty id", record(b"")),
    ("payload not JSON", record(b"nojson-1", payload=b"{not json")),
]


def test_garbage_in_the_ready_lists_is_failed_and_never_stops_a_dispatch_or_a_worker(redis: Any, prefix: str, start_worker: Any) -> None:
    q = "hostile"
    before = [Echo.dispatch(f"before-{i}").on_queue(q).send() for i in range(3)]
    for _what, junk in GARBAGE:
        redis("RPUSH", key(prefix, q, "wait"), junk)
    # Two records with one id in the same lease, and garbage in a priority level's list.
    redis("RPUSH", key(prefix, q, "wait"), record(b"twin"), record(b"twin", payload=b'"second"'))
    redis("RPUSH", key(prefix, q, "wait:5"), b"\x02junk")
    redis("ZADD", key(prefix, q, "prios"), 5, 5, 7, "not-a-level")
    # Every dispatch after it succeeds and is written once (none raises after writing).
    after = [Echo.dispatch(f"after-{i}").on_queue(q).send() for i in range(3)]
    bulk = Echo.dispatch_many([f"bulk-{i}" for i in range(100)], queue=q)
    start_worker(queues=[q])
    assert [h.wait_result(timeout=10) for h in before + after] == [f"before-{i}" for i in range(3)] + [f"after-{i}" for i in range(3)]
    assert [bulk.handle(i).wait_result(timeout=10) for i in (0, 99)] == ["bulk-0", "bulk-99"]
    # Every element is accounted for: the 109 job records ran (the one whose payload is not
    # JSON failed as its own job; of the twins, both ran if they came in two reserves, else the
    # second was failed as undecodable, not overwritten unseen), and the 11 elements that are
    # not job records were failed as undecodable, none dropped.
    undecodable = len(GARBAGE) - 1 + 1  # the list above but the JSON one, and wait:5's
    eventually(lambda: Queue(q).counts()["failed"] + Queue(q).counts()["completed"] == 109 + undecodable)
    failed = Queue(q).failed(limit=100)
    decode = [f for f in failed if f.error["type"] == "DecodeError"]
    assert len(decode) in (undecodable, undecodable + 1), failed
    for f in decode:
        assert "queue" in f.error["message"] and q in f.error["message"] and "bytes" in f.error["message"], f
    nojson = [f for f in failed if f.id == "nojson-1"]
    assert len(nojson) == 1 and nojson[0].error["type"] != "DecodeError", failed
    c = Queue(q).counts()
    assert c["waiting"] == 0 and c["active"] == 0, c


def test_garbage_in_delayed_jobs_and_leases_is_failed_by_the_scheduler(redis: Any, prefix: str, start_worker: Any) -> None:
    q = "hostile-sched"
    redis("HSET", key(prefix, q, "jobs"), "ghost-1", b"\x07nonsense")
    redis("ZADD", key(prefix, q, "delayed"), 0, "ghost-1", 0, "no-record-at-all")
    redis("HSET", key(prefix, q, "lease:deadworker.1"), "x", b"\x01\x00")
    redis("HSET", key(prefix, q, "lease:deadworker.1"), "y", record(b"y"))
    redis("ZADD", key(prefix, q, "active"), 0, "deadworker.1", 0, "a-token-without-a-dot")
    h = Echo.dispatch("fine").on_queue(q).delay(0.2).send()
    start_worker(queues=[q])
    assert h.wait_result(timeout=10) == "fine"
    assert Echo.dispatch("later").on_queue(q).send().wait_result(timeout=10) == "later"
    eventually(lambda: Queue(q).counts()["failed"] == 2)
    assert sorted(f.error["type"] for f in Queue(q).failed()) == ["DecodeError", "DecodeError"]
    # The readable job of the dead lease came back (an orphan) and ran.
    eventually(lambda: Queue(q).get_job("y") is None or Queue(q).get_job("y").state == "completed")  # type: ignore[union-attr]
    c = Queue(q).counts()
    assert (c["delayed"], c["active"], c["waiting"]) == (0, 0, 0), c


def test_damaged_bookkeeping_is_read_as_empty_or_repaired(redis: Any, prefix: str, start_worker: Any) -> None:
    q = "hostile-books"
    first = Echo.dispatch("one").on_queue(q).send()
    producer = first.id.split("-")[0]
    redis("SET", key(prefix, q, f"hwm:{producer}"), "not-a-number")
    redis("SET", key(prefix, q, "runs"), "also-not-a-number")
    redis("HSET", key(prefix, q, "stats"), "completed", "many", "stalled", "??")
    redis("ZADD", key(prefix, q, "idle"), int(time.time() * 1000), "not-a-slot", int(time.time() * 1000), "w|t|notanumber")
    assert Queue(q).counts()["completed"] == 0
    second = Echo.dispatch("two").on_queue(q).send()  # raise_mark and wake() meet the damage
    bulk = Echo.dispatch_many(["three"] * 50, queue=q)
    assert Queue(q).size() == 52
    start_worker(queues=[q])
    assert first.wait_result(timeout=10) == "one" and second.wait_result(timeout=10) == "two"
    assert bulk.handle(49).wait_result(timeout=10) == "three"
    eventually(lambda: Queue(q).counts()["completed"] == 52)  # the counter started again
    assert second.status() == "completed"


def test_damaged_error_and_result_values_are_reported_not_raised_as_json_errors(redis: Any, prefix: str, start_worker: Any) -> None:
    q = "hostile-values"
    redis("HSET", key(prefix, q, "jobs"), "fails-1", record(b"fails-1"))
    redis("HSET", key(prefix, q, "errors"), "fails-1", b"{not json")
    redis("ZADD", key(prefix, q, "failed"), 0, "fails-1")
    [f] = Queue(q).failed()
    assert f.error["type"] == "DecodeError" and "not JSON" in f.error["message"], f.error
    done = Echo.dispatch("x").on_queue(q).send()
    start_worker(queues=[q])
    assert done.wait_result(timeout=10) == "x"
    redis("SET", key(prefix, q, f"result:{done.id}"), b"{broken")
    with pytest.raises(fastjobs.StoreError, match="not JSON"):
        done.wait_result(timeout=10)


def test_a_schedule_whose_definition_is_damaged_is_put_aside_and_the_others_run(redis: Any, prefix: str, start_worker: Any) -> None:
    q = "hostile-cron"
    JobScheduler.schedule(key="broken", job=Echo, data="b", repeat={"every": 200}, queue=q)
    JobScheduler.schedule(key="fine", job=Echo, data="f", repeat={"every": 200}, queue=q)
    redis("HSET", f"{prefix}:{{schedules}}:def:broken", "attempts", "many")
    start_worker(queues=[q])
    eventually(lambda: Queue(q).counts()["completed"] >= 3)
    broken = JobScheduler.find("broken")
    assert broken is not None and broken.next_run is not None
    # Put aside for an hour rather than retried in a loop.
    assert broken.next_run.timestamp() > time.time() + 3000


def test_two_records_with_one_id_in_one_reserve_are_not_overwritten_unseen(redis: Any, prefix: str, start_worker: Any) -> None:
    q = "hostile-twins"
    redis("RPUSH", key(prefix, q, "wait"), record(b"twin", payload=b'"first"'), record(b"twin", payload=b'"second"'))
    start_worker(queues=[q], prefetch=10)  # one reserve takes both
    eventually(lambda: Queue(q).counts()["completed"] == 1 and Queue(q).counts()["failed"] == 1)
    [f] = Queue(q).failed()
    assert f.error["type"] == "DecodeError" and "has the id of another job reserved with it: twin" in f.error["message"], f.error
    assert f.payload == "second"


def test_options_fastjobs_did_not_write_fail_their_job_and_no_worker_thread(redis: Any, prefix: str, start_worker: Any) -> None:
    q = "hostile-options"

    def with_options(job_id: bytes, options: bytes, name: bytes = b"Echo", attempts: int = 1) -> bytes:
        head = bytes([1, 0, 0, 0, attempts, 0, len(job_id)]) + job_id + bytes([len(name)]) + name + bytes(6)
        return head + len(options).to_bytes(2, "big") + options + b'"x"'

    redis("RPUSH", key(prefix, q, "wait"),
          with_options(b"opt-not-json", b"{nope"),
          with_options(b"opt-a-list", b"[1, 2]"),
          with_options(b"opt-bad-timeout", b'{"timeout": "soon"}'),
          with_options(b"opt-bad-backoff", b'{"backoff": "zzz"}', name=b"hostile.Fails", attempts=2))
    start_worker(queues=[q], concurrency=1)  # one thread: had it died, nothing below would run
    assert Echo.dispatch("after").on_queue(q).send().wait_result(timeout=10) == "after"
    eventually(lambda: Queue(q).counts()["failed"] >= 3)
    errors = {f.id: f.error for f in Queue(q).failed()}
    assert errors["opt-not-json"]["type"] == errors["opt-a-list"]["type"] == "DecodeError", errors
    assert "not a JSON object" in errors["opt-a-list"]["message"]
    assert errors["opt-bad-timeout"]["type"] == "TypeError", errors
    # The bad backoff is set aside (the class's applies): the job is retried, not lost.
    eventually(lambda: Queue(q).counts()["retried"] >= 1)


class Fails(fastjobs.Job[Any, None]):
    name = "hostile.Fails"
    backoff = 0

    def process(self, payload: Any) -> None:
        raise RuntimeError("fails on purpose")
