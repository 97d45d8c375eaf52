"""Delivery under crashes, with real processes: SIGKILL, SIGSTOP (a zombie), SIGTERM, Ctrl-C
twice, a handler that holds the GIL, Redis going away and coming back, Redis unreachable.

The worker processes import this module (the ``spawn`` fixture) for the job classes below,
and ``tests.apps.jobs`` through it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import pytest

import fastjobs
from fastjobs import Queue

from .apps.jobs import Echo, HoldGil, Pid, Sleep
from .chaos.servers import PersistentRedis
from .conftest import ROOT, RedisServer, eventually, free_port
from .resp import Redis

#: Modules the worker processes of this file load.
JOBS = ["tests.test_delivery"]

SUMMARY = re.compile(r"fastjobs worker: (\d+) completed, (\d+) retried, (\d+) failed, (\d+) handed back, (\d+) stale, \d+ cancelled in [\d.]+s")


class StallFirst(fastjobs.Job[dict, int]):
    """The first run sleeps ``payload["seconds"]`` (long enough for the test to kill or stop
    its worker meanwhile); any later run (a retry, or a redelivery after its worker died)
    returns at once. Returns the worker's pid."""

    name = "delivery.StallFirst"

    def process(self, payload: dict) -> int:
        if self.attempt == 0 and not self.redelivered:
            time.sleep(payload["seconds"])
        return os.getpid()


class Stamp(fastjobs.Job[dict, int]):
    """Sleeps ``payload.get("seconds", 0)``, then returns the wall clock in ns: the order in
    which one single-threaded worker ran its jobs."""

    name = "delivery.Stamp"

    def process(self, payload: dict) -> int:
        time.sleep(payload.get("seconds", 0))
        return time.time_ns()


class HoldGilOnce(fastjobs.Job[dict, dict]):
    """Holds the GIL for about ``payload["seconds"]`` in ONE C call (``HoldGil`` makes many
    calls of ~0.3 s each, between which other Python threads may run). Returns the worker's
    pid and how long the call took."""

    name = "delivery.HoldGilOnce"

    def process(self, payload: dict) -> dict:
        started = time.perf_counter()
        sum(range(2_000_000))
        per_item = (time.perf_counter() - started) / 2_000_000
        started = time.monotonic()
        sum(range(int(payload["seconds"] / per_item)))  # one C call: holds the GIL throughout
        return {"pid": os.getpid(), "held": time.monotonic() - started}


# ---- helpers ----


def key(prefix: str, queue: str, name: str) -> str:
    return f"{prefix}:{{{queue}}}:{name}"


def record_id(rec: bytes) -> str:
    """The id inside a packed record (record.rs: byte 6 is the id length, the id follows)."""
    return rec[7 : 7 + rec[6]].decode()


def record_attempt(rec: bytes) -> int:
    return rec[1] * 256 + rec[2]


def summary(out: str) -> tuple[int, int, int, int, int]:
    m = SUMMARY.search(out)
    assert m, f"no summary line in the worker's output:\n{out}"
    return tuple(int(x) for x in m.groups())  # type: ignore[return-value]


def counts(queue: str) -> dict[str, int]:
    return Queue(queue).counts()


@pytest.fixture
def spawn(spawn_worker: Any) -> Any:
    """``spawn_worker`` for this file's jobs (it reaps what a failed test left running)."""

    def start(*args: str, **kwargs: Any) -> Any:
        kwargs.setdefault("modules", JOBS)
        return spawn_worker(*args, **kwargs)

    return start


# ---- 1. SIGKILL with 1,000 jobs leased ----


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "concurrency, bulk", [(1000, False), (1, False), (1, True)], ids=["1000-running", "1-running-999-prefetched", "1-running-999-prefetched-bulk"]
)
def test_sigkilled_worker_loses_none_of_its_1000_leased_jobs(spawn: Any, concurrency: int, bulk: bool) -> None:
    n = 1000
    if bulk:  # written as runs of records, split by the reserve (common.lua)
        res = StallFirst.dispatch_many([{"seconds": 60}] * n, queue="crash", attempts=2)
        handles = [res.handle(i) for i in range(n)]
    else:
        handles = [StallFirst.dispatch({"seconds": 60}).on_queue("crash").attempts(2).send() for _ in range(n)]
    # One lease of 1,000 jobs (the prefetch is fixed at 1,000): either every job runs in a
    # handler thread of its own, or one runs and 999 wait in the engine's prefetch buffer.
    first = spawn("--queue", "crash", "--concurrency", str(concurrency), "--prefetch", str(n), "--lease", "1", "--grace", "1")
    eventually(lambda: counts("crash")["active"] == n, timeout=30)
    time.sleep(0.2)
    assert first.proc.poll() is None
    first.proc.kill()
    first.output()
    assert first.proc.returncode == -signal.SIGKILL
    c = counts("crash")
    assert (c["active"], c["waiting"], c["completed"], c["stalled"]) == (n, 0, 0, 0), c

    second = spawn("--queue", "crash", "--lease", "1")
    results = [h.wait_result(timeout=30) for h in handles]
    assert results == [second.proc.pid] * n  # every job ran, to its end, in the second worker
    c = counts("crash")
    assert c == dict(paused=False, cancelled=0, waiting=0, delayed=0, active=0, failed=0, completed=n, retried=0, stalled=n), c
    assert {h.status() for h in handles} == {"completed"}
    second.proc.terminate()
    assert summary(second.output())[:3] == (n, 0, 0)


# ---- 2. a zombie's stale acknowledgement is refused ----

ZOMBIE = r"""
import json, sys
from fastjobs import _core, config
engine = _core.WorkerEngine(config.client(), ["zombie"], lease=0.3)
engine.start(scheduler=False)
[job] = engine.next_jobs(1, 10.0)
print(json.dumps({"id": job[2], "attempt": job[4]}), flush=True)
sys.stdin.readline()  # the test stops this process (SIGSTOP), then resumes it and says go
print(json.dumps({"accepted": engine.complete(job[0], b'"zombie"')}), flush=True)
engine.drain()
print(json.dumps(engine.stats()), flush=True)
engine.stop_fetching()
engine.close()
"""


@pytest.mark.redis_only
@pytest.mark.timeout(60)
def test_stale_token_acknowledgement_is_refused(redis_server: RedisServer, prefix: str, start_worker: Any) -> None:
    h = Echo.dispatch({"run": "real"}).on_queue("zombie").attempts(2).send()
    env = dict(os.environ, FASTJOBS_URL=redis_server.url, FASTJOBS_PREFIX=prefix, PYTHONPATH=str(ROOT))
    zombie = subprocess.Popen([sys.executable, "-c", ZOMBIE], env=env, cwd=str(ROOT), text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert zombie.stdout is not None and zombie.stdin is not None
        taken = json.loads(zombie.stdout.readline())
        assert taken == {"id": h.id, "attempt": 0}
        assert h.status() == "active"
        # Freeze it (a GC pause, a suspended VM): its heartbeats stop, its lease expires, the
        # scheduler of another worker reaps the job and that worker runs it.
        os.kill(zombie.pid, signal.SIGSTOP)
        other = start_worker(queues=["zombie"], lease=1.0)
        assert h.wait_result(timeout=10) == {"run": "real"}
        c = counts("zombie")
        assert (c["completed"], c["stalled"], c["active"], c["waiting"]) == (1, 1, 0, 0), c
        # The zombie wakes up and acknowledges with its stale token.
        os.kill(zombie.pid, signal.SIGCONT)
        zombie.stdin.write("go\n")
        zombie.stdin.flush()
        assert json.loads(zombie.stdout.readline()) == {"accepted": True}  # taken locally...
        stats = json.loads(zombie.stdout.readline())
        assert zombie.wait(10) == 0
    finally:
        if zombie.poll() is None:
            os.kill(zombie.pid, signal.SIGCONT)
            zombie.kill()
            zombie.wait()
        for f in (zombie.stdin, zombie.stdout):
            if f is not None:
                f.close()
    assert stats["stale"] == 1 and stats["completed"] == 0, stats  # ...and refused by Redis
    # Completed exactly once, with the real run's result, not the zombie's.
    assert counts("zombie")["completed"] == 1
    assert h.info().result == {"run": "real"}
    assert h.wait_result(timeout=1) == {"run": "real"}
    assert other.stop().completed == 1


ZOMBIE_WITH_PREFETCH = r"""
import json, sys, time
from fastjobs import _core, config
engine = _core.WorkerEngine(config.client(), ["zombie"], lease=0.3, prefetch=2)
engine.start(scheduler=False)
[job] = engine.next_jobs(1, 10.0)  # one lease of two jobs: this one runs, the other is prefetched
print(json.dumps(job[2]), flush=True)
sys.stdin.readline()
time.sleep(0.5)  # heartbeats have run by now, and told the engine its lease is gone
print(json.dumps([j[2] for j in engine.next_jobs(10, 0.5)]), flush=True)
engine.close()
"""


@pytest.mark.redis_only
@pytest.mark.timeout(60)
def test_zombie_does_not_run_prefetched_jobs_of_its_reaped_lease(redis_server: RedisServer, prefix: str, start_worker: Any) -> None:
    handles = [Echo.dispatch({"n": i}).on_queue("zombie").attempts(2).send() for i in range(2)]
    env = dict(os.environ, FASTJOBS_URL=redis_server.url, FASTJOBS_PREFIX=prefix, PYTHONPATH=str(ROOT))
    zombie = subprocess.Popen([sys.executable, "-c", ZOMBIE_WITH_PREFETCH], env=env, cwd=str(ROOT), text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert zombie.stdout is not None and zombie.stdin is not None
        assert json.loads(zombie.stdout.readline()) == handles[0].id
        assert counts("zombie")["active"] == 2
        os.kill(zombie.pid, signal.SIGSTOP)
        other = start_worker(queues=["zombie"], lease=1.0)
        assert [h.wait_result(timeout=10) for h in handles] == [{"n": 0}, {"n": 1}]
        assert counts("zombie")["stalled"] == 2
        os.kill(zombie.pid, signal.SIGCONT)
        zombie.stdin.write("go\n")
        zombie.stdin.flush()
        late = json.loads(zombie.stdout.readline())
        assert zombie.wait(10) == 0
    finally:
        if zombie.poll() is None:
            os.kill(zombie.pid, signal.SIGCONT)
            zombie.kill()
            zombie.wait()
        for f in (zombie.stdin, zombie.stdout):
            if f is not None:
                f.close()
    other.stop()
    # The second job went back to the queue and ran elsewhere; the zombie must not run it too.
    assert late == [], f"the zombie was handed {late} (already completed by another worker)"


# ---- 3. SIGTERM: prefetched jobs go back to the head of the queue at once, in order ----


@pytest.mark.timeout(60)
def test_sigterm_hands_prefetched_jobs_back_at_once_in_order(spawn: Any, start_worker: Any, redis: Redis, prefix: str) -> None:
    threads, prefetched, rest = 4, 3, 5
    slow = [Stamp.dispatch({"seconds": 3.0}).on_queue("graceful").send() for _ in range(threads)]
    w = spawn("--queue", "graceful", "--concurrency", str(threads), "--lease", "5", "--grace", "10")
    eventually(lambda: counts("graceful")["active"] == threads, timeout=15)
    time.sleep(0.3)  # each handler thread has taken one slow job
    # Jobs that trickle in while every thread is busy are prefetched, each as it comes (so in
    # a lease of its own), until the engine holds its target (concurrency 4: 3 buffered).
    queued = []
    for i in range(prefetched):
        queued.append(Stamp.dispatch({}).on_queue("graceful").send())
        eventually(lambda i=i: counts("graceful")["active"] == threads + i + 1, timeout=5)
    queued += [Stamp.dispatch({}).on_queue("graceful").send() for _ in range(rest)]
    time.sleep(0.2)
    c = counts("graceful")
    assert (c["active"], c["waiting"]) == (threads + prefetched, rest), c
    ids = [h.id for h in queued]

    w.proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    # At once, while the slow jobs still run: the prefetched jobs are waiting again...
    eventually(lambda: counts("graceful")["waiting"] == prefetched + rest, timeout=1.5, interval=0.01)
    assert time.monotonic() - sent < 1.5
    assert w.proc.poll() is None
    c = counts("graceful")
    assert (c["active"], c["completed"]) == (threads, 0), c
    # ...at the head of the queue, in their original order, with no attempt counted.
    wait = redis("LRANGE", key(prefix, "graceful", "wait"), 0, -1)
    assert [record_id(r) for r in wait] == ids, f"wait list is in order {[ids.index(record_id(r)) for r in wait]}"
    assert {record_attempt(r) for r in wait} == {0}

    out = w.output()
    assert w.proc.returncode == 0, out
    assert summary(out) == (threads, 0, 0, prefetched, 0)
    assert [h.status() for h in slow] == ["completed"] * threads
    c = counts("graceful")
    assert c == dict(paused=False, cancelled=0, waiting=prefetched + rest, delayed=0, active=0, failed=0, completed=threads, retried=0, stalled=0), c

    # A later worker runs them in dispatch order.
    later = start_worker(queues=["graceful"], concurrency=1)
    stamps = [h.wait_result(timeout=10) for h in queued]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps), f"run order {sorted(range(len(stamps)), key=stamps.__getitem__)}"
    assert later.stop().completed == prefetched + rest


# ---- 4. Ctrl-C twice ----


@pytest.mark.timeout(60)
def test_second_ctrl_c_exits_at_once_and_the_job_comes_back(spawn: Any) -> None:
    h = StallFirst.dispatch({"seconds": 60}).on_queue("ctrlc").attempts(2).send()
    w = spawn("--queue", "ctrlc", "--lease", "1", "--grace", "30")
    eventually(lambda: counts("ctrlc")["active"] == 1, timeout=15)
    time.sleep(0.3)  # the handler has started its long first attempt

    w.proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert w.proc.poll() is None  # the first Ctrl-C waits for the running job (grace 30 s)
    w.proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    out = w.output()
    assert time.monotonic() - sent < 2.0
    assert w.proc.returncode == 130, out
    assert "second signal" in out and not SUMMARY.search(out), out
    assert counts("ctrlc")["active"] == 1  # still leased to the dead process...

    # ...until the lease expires: another worker's scheduler reaps it and that worker runs it.
    other = spawn("--queue", "ctrlc", "--lease", "1")
    assert h.wait_result(timeout=15) == other.proc.pid
    c = counts("ctrlc")
    assert (c["completed"], c["stalled"], c["failed"], c["active"], c["waiting"]) == (1, 1, 0, 0, 0), c
    other.proc.terminate()
    assert summary(other.output())[:3] == (1, 0, 0)


# ---- 5. heartbeats do not need the GIL ----


@pytest.mark.timeout(60)
@pytest.mark.parametrize("job", ["HoldGil", "HoldGilOnce"])
def test_job_holding_the_gil_longer_than_its_lease_is_not_reaped(spawn: Any, job: str) -> None:
    # Heartbeats run on the engine's own threads: a handler that keeps the GIL for longer
    # than the lease (1 s) must not lose its lease, be reaped and run a second time.
    if job == "HoldGil":
        h = HoldGil.dispatch({"seconds": 3}).on_queue("gil").attempts(2).send()
    else:
        h = HoldGilOnce.dispatch({"seconds": 3.0}).on_queue("gil").attempts(2).send()
    w = spawn("--queue", "gil", "--lease", "1")
    result = h.wait_result(timeout=20)
    if job == "HoldGil":
        assert result == w.proc.pid
    else:
        assert result["pid"] == w.proc.pid and result["held"] > 1.5, result  # no bytecode ran for > 1 lease
    c = counts("gil")
    assert c == dict(paused=False, cancelled=0, waiting=0, delayed=0, active=0, failed=0, completed=1, retried=0, stalled=0), c
    w.proc.terminate()
    assert summary(w.output()) == (1, 0, 0, 0, 0)


# ---- 6. Redis goes away and comes back ----


@pytest.mark.timeout(60)
def test_idle_worker_survives_a_redis_restart(spawn: Any, prefix: str) -> None:
    server = RedisServer()
    try:
        fastjobs.configure(server.url, prefix=prefix)
        w = spawn("--queue", "flaky", "--lease", "1", url=server.url)
        assert Pid.dispatch(None).on_queue("flaky").send().wait_result(timeout=15) == w.proc.pid
        port = server.port
        server.stop()
        time.sleep(1.5)  # the worker's blocking pop, scheduler and heartbeats all fail meanwhile
        assert w.proc.poll() is None
        server = RedisServer(port)  # empty: no persistence
        fastjobs.configure(server.url, prefix=prefix)  # a fresh client in this process
        handles = [Pid.dispatch(None).on_queue("flaky").send() for _ in range(20)]
        assert [h.wait_result(timeout=15) for h in handles] == [w.proc.pid] * 20
        w.proc.terminate()
        out = w.output()
        assert w.proc.returncode == 0, out
        assert "Redis trouble, retrying" in out
        assert summary(out)[:3] == (21, 0, 0)
    finally:
        server.stop()


@pytest.mark.timeout(60)
def test_acknowledgement_made_while_redis_is_down_is_retried_until_it_lands(spawn: Any, prefix: str) -> None:
    server = PersistentRedis()
    try:
        fastjobs.configure(server.url, prefix=prefix)
        w = spawn("--queue", "flaky", "--lease", "10", url=server.url)
        h = Sleep.dispatch({"seconds": 1.0}).on_queue("flaky").send()
        eventually(lambda: counts("flaky")["active"] == 1, timeout=15)
        port, data = server.port, server.dir
        server.stop()  # the job finishes while Redis is down: its acknowledgement cannot land
        time.sleep(2.5)
        assert w.proc.poll() is None
        server = PersistentRedis(port, data)
        fastjobs.configure(server.url, prefix=prefix)
        assert h.wait_result(timeout=15) == w.proc.pid
        c = counts("flaky")
        assert c == dict(paused=False, cancelled=0, waiting=0, delayed=0, active=0, failed=0, completed=1, retried=0, stalled=0), c
        # and it goes on working
        assert Pid.dispatch(None).on_queue("flaky").send().wait_result(timeout=15) == w.proc.pid
        w.proc.terminate()
        out = w.output()
        assert w.proc.returncode == 0, out
        assert summary(out)[:3] == (2, 0, 0)
    finally:
        server.stop()
        server.remove()


# ---- 7. Redis unreachable ----


def test_unreachable_redis_raises_connection_error_with_the_password_masked() -> None:
    port = free_port()  # nothing listens there
    url = f"redis://user:secret@127.0.0.1:{port}/0"
    fastjobs.configure(url, connect_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(fastjobs.ConnectionError) as info:
        Echo.dispatch({"x": 1}).send()
    assert time.monotonic() - started < 2.0
    message = str(info.value)
    assert f"redis://user:***@127.0.0.1:{port}/0" in message, message
    assert "secret" not in message and "secret" not in repr(info.value)
    assert isinstance(info.value, ConnectionError)  # the built-in one too


def test_silent_redis_raises_connection_error_within_the_connect_timeout() -> None:
    with socket.socket() as silent:  # accepts TCP connections (the kernel does) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        fastjobs.configure(f"redis://user:secret@127.0.0.1:{port}/0", connect_timeout=0.5)
        started = time.monotonic()
        with pytest.raises(fastjobs.ConnectionError) as info:
            Echo.dispatch({"x": 1}).send()
        assert time.monotonic() - started < 2.0
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "***" in message and "secret" not in message, message
