"""Bulk fan-out: dispatch_many (lists and generators), BulkDispatcher, the enqueue CLI."""

from __future__ import annotations

import asyncio
import collections
import datetime
import enum
import json
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fastjobs
from fastjobs import BulkDispatcher, BulkDispatchError, Queue

from .apps.jobs import Echo, Noop
from .conftest import ROOT, RedisServer, eventually, waiting_records


class Square(fastjobs.Job[int, int]):
    queue = "squares"

    def process(self, payload: int) -> int:
        return payload * payload


class Opaque:
    pass


def test_dispatch_many_from_a_list(start_worker: Any) -> None:
    seen: list[tuple[int, Any]] = []
    res = Square.dispatch_many(list(range(25_000)), progress=lambda done, total: seen.append((done, total)), chunk_size=10_000)
    assert len(res) == res.count == 25_000 and res.queue == "squares"
    ids = list(res)
    assert len(set(ids)) == 25_000 and ids[0] == res[0] and ids[-1] == res[-1] == res[24_999]
    assert res[1:3] == ids[1:3]
    assert Queue("squares").size() == 25_000
    assert seen[-1] == (25_000, 25_000)
    start_worker(queues=["squares"])
    assert res.handle(12_345).wait_result(timeout=20) == 12_345 ** 2
    eventually(lambda: Queue("squares").counts()["completed"] == 25_000, timeout=30)


@pytest.mark.redis_only
def test_dispatch_many_from_a_generator(redis: Any, prefix: str) -> None:
    def payloads() -> Iterator[dict]:
        for i in range(12_345):
            yield {"i": i}

    res = Echo.dispatch_many(payloads(), chunk_size=1000)
    assert res.count == 12_345 and Queue().size() == 12_345
    assert len(set(res)) == 12_345
    # Chunks in flight together still land in the order they were made.
    assert [json.loads(p)["i"] for p in _stored_payloads(redis, prefix, "default")] == list(range(12_345))


def test_shared_options(face: Any) -> None:
    res = Echo.dispatch_many([1, 2, 3], queue="elsewhere", delay="1h", attempts=4, priority=3, meta={"batch": 7})
    info = face.info(res.handle(2))
    assert (info.state, info.queue, info.max_attempts, info.priority) == ("delayed", "elsewhere", 4, 3)
    assert info.options["meta"] == {"batch": 7} and info.payload == 3
    assert Queue("elsewhere").counts()["delayed"] == 3


def test_priority_path_without_delay() -> None:
    res = Echo.dispatch_many(list(range(10)), priority=5)
    assert res.count == 10 and Queue().size() == 10


def test_empty_list_makes_no_round_trip() -> None:
    fastjobs.configure("redis://127.0.0.1:1/0", connect_timeout=0.2)  # nothing listens there
    res = Echo.dispatch_many([])
    assert res.count == 0 and list(res) == []
    assert Echo.dispatch_many(iter([])).count == 0


def test_bad_payload_in_a_list_names_its_index_and_writes_nothing() -> None:
    payloads: list[Any] = [{"ok": i} for i in range(25_000)]
    payloads[21_000] = {"bad": Opaque()}
    with pytest.raises(TypeError, match=r"payload at index 21000: payload\['bad'\] is of type .*Opaque"):
        Echo.dispatch_many(payloads)
    assert Queue().size() == 0


def _stored_payloads(redis: Any, prefix: str, queue: str) -> list[bytes]:
    """The payload bytes of every waiting job, read from the queue's list in Redis."""
    out = []
    for rec in waiting_records(redis, prefix, queue):
        at = 7 + rec[6]  # version, attempt, max attempts, priority, id length; the id
        at += 1 + rec[at] + 6  # name length, name, enqueued at
        out.append(rec[at + 2 + int.from_bytes(rec[at : at + 2], "big") :])
    return out


class Colour(enum.Enum):
    RED = "red"


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, -1, 2**63 - 1, -(2**63), rng.randrange(-(10**12), 10**12)])
    if kind == 2:
        return rng.choice([0.0, -0.0, 0.1, 1.0, 1e16, 1e-7, 5e-324, 1.7976931348623157e308,
                           rng.uniform(-1e9, 1e9), rng.random() * 10 ** rng.randrange(-30, 30)])
    if kind in (3, 4, 5):
        alphabet = "ab\"\\/\n\t\r\b\f\x00\x1f\x7f é中😀\u2028"
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
    if kind == 6:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 7:
        return tuple(_random_value(rng, depth + 1) for _ in range(rng.randrange(3)))
    return {_random_value(rng, 3) if False else f"k{i}\"é": _random_value(rng, depth + 1) for i in range(rng.randrange(4))}


@pytest.mark.redis_only
def test_bulk_payloads_are_stored_byte_for_byte_as_one_dispatch_serializes_them(redis: Any, prefix: str) -> None:
    # The engine serializes plain JSON types itself and hands anything else to serde.dumps
    # (orjson): either way the bytes must be what a single dispatch would store.
    rng = random.Random(7)
    payloads: list[Any] = [_random_value(rng) for _ in range(3000)]
    payloads += [
        2**64 - 1, {1: "int key"}, {"d": datetime.datetime(2026, 1, 2, 3, 4, 5)},
        uuid.UUID(int=5), Colour.RED, collections.OrderedDict(a=1), [Colour.RED, {"x": (1, 2.5)}],
        type("S", (str,), {})("str subclass"), True, [[[[[]]]]], {"": ""},
    ]
    Echo.dispatch_many(payloads)
    stored = _stored_payloads(redis, prefix, "default")
    assert len(stored) == len(payloads)
    for p, raw in zip(payloads, stored):
        assert raw == fastjobs.serde.dumps(p), p


def test_a_payload_the_fallback_refuses_names_its_index() -> None:
    # Past the engine's depth limit and a lone surrogate: both go to orjson, which refuses.
    deep: Any = []
    for _ in range(300):
        deep = [deep]
    for bad in (deep, {"s": "\ud800"}, 2**70):
        with pytest.raises(TypeError, match="payload at index 40: "):
            Echo.dispatch_many([0] * 40 + [bad])
    assert Queue().size() == 0


def test_payload_over_the_limit_names_its_index() -> None:
    fastjobs.configure(max_payload=100)
    with pytest.raises(ValueError, match="payload at index 3 is 202 bytes, over the limit of 100 bytes"):
        Echo.dispatch_many(["a", "b", "c", "x" * 200])
    assert Queue().size() == 0


def test_bad_payload_in_a_generator_keeps_what_was_committed() -> None:
    def payloads() -> Iterator[Any]:
        for i in range(2500):
            yield Opaque() if i == 2100 else i

    with pytest.raises(BulkDispatchError) as e:
        Echo.dispatch_many(payloads(), chunk_size=1000)
    assert e.value.committed == 2000 and len(e.value.result) == 2000
    assert isinstance(e.value.__cause__, TypeError) and "index 2100" in str(e.value.__cause__)
    assert Queue().size() == 2000
    assert "2000 job(s) committed" in str(e.value) and e.value.unknown.count == e.value.unsent.count == 0


def test_redis_lost_mid_generator_keeps_what_was_committed(prefix: str) -> None:
    server = RedisServer()
    try:
        fastjobs.configure(server.url, connection="fragile", connect_timeout=0.5, response_timeout=2)

        def payloads() -> Iterator[int]:
            for i in range(5000):
                if i == 3000:
                    # The first two chunks are in Redis before it goes (the writer runs
                    # behind the generator; on a loaded machine far behind).
                    eventually(lambda: Queue(connection="fragile").size() >= 2000)
                    server.stop()
                yield i

        with pytest.raises(BulkDispatchError) as e:
            Echo.dispatch_many(payloads(), chunk_size=1000, connection="fragile")
        err = e.value
        # Every job taken from the generator (all 5,000: it went on after Redis died) is in one
        # group: the chunks in flight when Redis died may have landed, and Redis cannot be asked.
        assert err.committed + err.unknown.count + err.unsent.count == 5000, err
        # What Redis held is never reported unsent: committed, or unknown when its answer was lost.
        assert err.committed + err.unknown.count >= 2000
        assert set(err.result).isdisjoint(err.unknown) and set(err.unknown).isdisjoint(err.unsent)
        assert isinstance(err.__cause__, fastjobs.ConnectionError)
    finally:
        server.stop()


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="job_id cannot be shared"):
        Echo.dispatch_many([1], job_id="x")
    with pytest.raises(ValueError, match="unknown option 'colour'"):
        Echo.dispatch_many([1], colour="red")
    with pytest.raises(ValueError, match="invalid queue name"):
        Echo.dispatch_many([1], queue="no spaces")
    with pytest.raises(ValueError, match="chunk_size"):
        Echo.dispatch_many([1], chunk_size=0)


def test_dispatch_many_async() -> None:
    async def go() -> fastjobs.BulkResult:
        return await Echo.dispatch_many_async(({"i": i} for i in range(3000)), chunk_size=1000)

    res = asyncio.run(go())
    assert res.count == 3000 and Queue().size() == 3000


def test_bulk_dispatcher_mixed_classes_queues_and_options(face: Any, start_worker: Any) -> None:
    builders = [
        Square.dispatch(3),
        Echo.dispatch("a").on_queue("mixed").priority(2),
        Echo.dispatch("late").delay("1h"),
        Square.dispatch(4).job_id("sq-4"),
    ]
    if face.name == "sync":
        res = BulkDispatcher(builders).dispatch()
    else:
        res = asyncio.run(_await(BulkDispatcher(builders)))
    assert res.count == 4 and res[3] == "sq-4"
    handles = res.handles()
    assert [h.queue for h in handles] == ["squares", "mixed", "default", "squares"]
    assert face.status(handles[2]) == "delayed"
    start_worker(queues=["squares", "mixed"])
    assert face.wait(handles[0]) == 9 and face.wait(handles[3]) == 16 and face.wait(handles[1]) == "a"


@pytest.mark.redis_only
def test_bulk_dispatcher_many_plain_jobs_go_in_order(face: Any, redis: Any, prefix: str) -> None:
    # Over 32 plain jobs of one queue take the raw bulk write, from a sync caller's thread
    # and from the I/O runtime alike; they land in the list in the order given.
    builders = [Echo.dispatch({"n": i}) for i in range(500)]
    if face.name == "sync":
        res = BulkDispatcher(builders).dispatch()
    else:
        res = asyncio.run(_await(BulkDispatcher(builders)))
    assert res.count == 500 and Queue().size() == 500
    assert [json.loads(p)["n"] for p in _stored_payloads(redis, prefix, "default")] == list(range(500))


async def _await(d: BulkDispatcher) -> fastjobs.BulkResult:
    return await d


def test_bulk_dispatcher_validates_everything_first() -> None:
    builders = [Echo.dispatch(1), Echo.dispatch(Opaque())]
    with pytest.raises(TypeError, match="builder at index 1"):
        BulkDispatcher(builders).dispatch()
    assert Queue().size() == 0
    b = Echo.dispatch(1)
    with pytest.raises(ValueError, match="appears twice"):
        BulkDispatcher([b, b])
    b.send()
    with pytest.raises(ValueError, match="at least one"):
        BulkDispatcher([]).dispatch()
    with pytest.raises(TypeError, match="takes dispatch builders"):
        BulkDispatcher([1])  # type: ignore[list-item]


def run_cli(redis_server: RedisServer, prefix: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {"FASTJOBS_URL": redis_server.url, "FASTJOBS_PREFIX": prefix, "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "fastjobs", *args], capture_output=True, text=True, env=env,
                          cwd=str(ROOT), input=stdin, timeout=60)


@pytest.mark.redis_only
def test_enqueue_cli(tmp_path: Path, redis_server: RedisServer, prefix: str) -> None:
    f = tmp_path / "jobs.jsonl"
    f.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(5000)) + "\n")
    out = run_cli(redis_server, prefix, "enqueue", "tests.apps.jobs:Echo", "--from", str(f), "--queue", "cli", "--quiet")
    assert out.returncode == 0, out.stderr
    assert "5,000 Echo job(s) on queue 'cli'" in out.stderr
    assert Queue("cli").size() == 5000


@pytest.mark.redis_only
def test_enqueue_cli_reports_a_malformed_line(tmp_path: Path, redis_server: RedisServer, prefix: str) -> None:
    f = tmp_path / "jobs.jsonl"
    lines = [json.dumps({"i": i}) for i in range(2500)]
    lines[2200] = "{not json"
    f.write_text("\n".join(lines) + "\n")
    out = run_cli(redis_server, prefix, "enqueue", "tests.apps.jobs:Echo", "--from", str(f), "--chunk-size", "1000", "--quiet")
    assert out.returncode == 1
    assert "line 2201: not valid JSON" in out.stderr
    assert "2,000 job(s) were committed" in out.stderr
    assert Queue().size() == 2000


@pytest.mark.redis_only
def test_enqueue_cli_errors(tmp_path: Path, redis_server: RedisServer, prefix: str) -> None:
    assert run_cli(redis_server, prefix, "enqueue", "tests.apps.jobs", "--from", "x").returncode == 2
    out = run_cli(redis_server, prefix, "enqueue", "tests.apps.jobs:Nope", "--from", "x")
    assert out.returncode == 2 and "no job named 'Nope'" in out.stderr
    out = run_cli(redis_server, prefix, "enqueue", "tests.apps.jobs:Noop", "--from", str(tmp_path / "missing.jsonl"))
    assert out.returncode == 2 and "no such file" in out.stderr
    out = run_cli(redis_server, prefix, "enqueue", "tests.apps.jobs:Noop", "--from", "-", "--quiet", stdin='{"a": 1}\n[2]\n')
    assert out.returncode == 0 and Queue().size() == 2
    assert Noop.name == "Noop"


def test_a_bad_job_id_is_refused_when_set_so_a_bulk_dispatch_cannot_fail_half_way() -> None:
    import pytest as _pytest

    from fastjobs import BulkDispatcher, Queue

    from .apps.jobs import Echo

    good = [Echo.dispatch(i).job_id(f"ok-{i}") for i in range(1500)]
    with _pytest.raises(ValueError, match="must not contain spaces"):
        good.append(Echo.dispatch(0).job_id("bad id"))
    BulkDispatcher(good).dispatch()
    assert Queue().size() == 1500
