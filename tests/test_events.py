"""The events stream of a queue (on every store): every kind of event in a job's life, bulk
writes as runs, resuming from an event id, a second process reading them in order, the
stream left unwritten while events are off, and bad input."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from collections import defaultdict
from typing import Any

import pytest

import fastjobs
from fastjobs import Event, Queue

from .apps.jobs import Echo, Sleep
from .conftest import ROOT, eventually

pytestmark = pytest.mark.events_stream

#: Per test: the handler waits on it while the test watches its progress event.
GATES: dict[str, threading.Event] = {}


class Told(fastjobs.Job[dict, str]):
    queue = "ev"

    def process(self, payload: dict) -> str:
        self.progress(0.5, step="half")
        self.info("reported", n=payload["n"])
        return f"done {payload['n']}"


class FlakyOnce(fastjobs.Job[str, str]):
    queue = "ev"
    attempts = 2
    backoff = 0  # retried at once

    def process(self, key: str) -> str:
        if self.attempt == 0:
            raise RuntimeError(f"first try of {key}")
        return "second try"


class Broken(fastjobs.Job[int, None]):
    queue = "ev"
    attempts = 1

    def process(self, n: int) -> None:
        raise ValueError(f"broken {n}")


def by_job(events: list[Event]) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = defaultdict(list)
    for e in events:
        seen[e.job_id].append(e.type)
    return seen


def read_all(q: Queue, until: Any, n: int = 1, since: str = "0", timeout: float = 20.0) -> list[Event]:
    """Reads from ``since`` until ``n`` events were ones that ``until(event)`` holds for."""
    got: list[Event] = []
    for e in q.events(since, timeout=timeout):
        got.append(e)
        n -= bool(until(e))
        if n <= 0:
            break
    return got


def test_a_jobs_life_is_told_in_order_with_its_data(start_worker: Any) -> None:
    q = Queue("ev")
    q.set_events(True)
    assert q.events_keep() == fastjobs.events.DEFAULT_KEEP
    ok = Told.dispatch({"n": 1}).send()
    flaky = FlakyOnce.dispatch("a").send()
    broken = Broken.dispatch(7).send()
    later = Told.dispatch({"n": 2}).delay(60).send()
    cancelled = Told.dispatch({"n": 3}).delay(60).send()
    cancelled.cancel()
    start_worker(queues=["ev"])
    assert ok.wait_result(timeout=10) == "done 1"
    assert flaky.wait_result(timeout=10) == "second try"
    events = read_all(q, lambda e: e.type in ("completed", "failed"), 3)
    seen = by_job(events)
    assert seen[ok.id] == ["waiting", "active", "progress", "completed"]
    assert seen[flaky.id] == ["waiting", "active", "retrying", "active", "completed"]
    assert seen[broken.id] == ["waiting", "active", "failed"]
    assert seen[later.id] == ["delayed"]
    assert seen[cancelled.id] == ["delayed", "cancelled"]
    one = {e.type: e for e in events if e.job_id == ok.id}
    assert one["waiting"].name == one["completed"].name == Told.name
    assert one["active"].attempt == 0 and one["active"].data["worker"]
    assert one["progress"].data == {"value": 0.5, "data": {"step": "half"}}
    assert one["completed"].data == {"result": "done 1"}
    retry = next(e for e in events if e.job_id == flaky.id and e.type == "retrying")
    assert retry.attempt == 0 and retry.data["delay"] == 0.0
    assert retry.data["error"]["type"] == "RuntimeError" and "first try of a" in retry.data["error"]["message"]
    assert [e.attempt for e in events if e.job_id == flaky.id and e.type == "active"] == [0, 1]
    failed = next(e for e in events if e.job_id == broken.id and e.type == "failed")
    assert failed.attempt == 0 and failed.data["error"]["message"] == "broken 7"
    due = next(e for e in events if e.job_id == later.id).data["due"]
    assert 59 < (due - one["waiting"].at).total_seconds() < 61
    # Ids resume in order: each later than the one before.
    def key(event_id: str) -> tuple[int, ...]:
        entry, _, index = event_id.partition("/")
        return (*map(int, entry.split("-")), int(index))

    assert [e.id for e in events] == sorted((e.id for e in events), key=key)
    assert len({e.id for e in events}) == len(events)


def test_a_bulk_dispatch_is_told_as_runs_of_ids_and_every_job_is_in_them(start_worker: Any) -> None:
    q = Queue("default")
    q.set_events(True)
    result = Echo.dispatch_many(list(range(25_000)))
    ids = set(result)
    start_worker(queues=["default"], concurrency=4)
    events = read_all(q, lambda e: e.type == "completed", 25_000, timeout=30)
    waiting = [e.job_id for e in events if e.type == "waiting"]
    assert len(waiting) == 25_000 and set(waiting) == ids
    assert {e.name for e in events if e.type == "waiting"} == {Echo.name}
    assert {e.job_id for e in events if e.type == "completed"} == ids
    completed = {e.job_id: e.data["result"] for e in events if e.type == "completed"}
    assert completed[result[17]] == 17


def test_events_resume_just_after_the_event_given(start_worker: Any) -> None:
    q = Queue("ev")
    q.set_events(True)
    handles = [Told.dispatch({"n": i}).send() for i in range(20)]
    start_worker(queues=["ev"])
    for h in handles:
        h.wait_result(timeout=10)
    everything = read_all(q, lambda e: e.type == "completed", 20)
    for cut in (0, 5, 21, len(everything) - 2):
        rest = read_all(q, lambda e: True, len(everything) - cut - 1, since=everything[cut].id)
        assert [e.id for e in rest] == [e.id for e in everything[cut + 1 :]]
    assert list(q.events(everything[-1].id, timeout=0.2)) == []


def test_only_new_events_by_default_and_async_iteration(start_worker: Any) -> None:
    q = Queue("ev")
    q.set_events(True)
    old = Told.dispatch({"n": 0}).send()
    start_worker(queues=["ev"])
    old.wait_result(timeout=10)

    async def main() -> tuple[str, list[Event]]:
        got: list[Event] = []
        stream = q.events_async(timeout=15)  # from now on
        new = await Told.dispatch({"n": 1})
        async for e in stream:
            got.append(e)
            if e.type == "completed":
                break
        return new.id, got

    new_id, got = asyncio.run(main())
    assert [(e.job_id, e.type) for e in got] == [(new_id, "waiting"), (new_id, "active"), (new_id, "progress"), (new_id, "completed")]


@pytest.mark.shared_store
def test_a_second_process_sees_the_events_in_order(fj: tuple[str, str], spawn_worker: Any) -> None:
    url, prefix = fj
    q = Queue("slow")
    q.set_events(True)
    script = (
        "import json, sys, fastjobs\n"
        f"fastjobs.configure(url={url!r}, prefix={prefix!r})\n"
        "print('ready', flush=True)\n"
        "n = 0\n"
        "for e in fastjobs.Queue('slow').events('0', timeout=20):\n"
        "    print(json.dumps([e.id, e.type, e.job_id]), flush=True)\n"
        "    n += e.type == 'completed'\n"
        "    if n == 30: break\n"
    )
    reader = subprocess.Popen([sys.executable, "-c", script], cwd=str(ROOT), stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert reader.stdout is not None
    assert reader.stdout.readline().strip() == "ready"
    handles = [Sleep.dispatch({"seconds": 0.01}).on_queue("slow").send() for _ in range(30)]
    spawn_worker("--queue", "slow", "--concurrency", "4", url=url, key_prefix=prefix)
    out, _ = reader.communicate(timeout=60)
    theirs = [json.loads(line) for line in out.splitlines()]
    here = read_all(q, lambda e: e.type == "completed", 30)
    assert theirs == [[e.id, e.type, e.job_id] for e in here]
    seen = by_job(here)
    for h in handles:
        assert seen[h.id] == ["waiting", "active", "completed"]


@pytest.mark.shared_store
def test_a_job_whose_worker_died_is_told_stalled(fj: tuple[str, str], spawn_worker: Any) -> None:
    url, prefix = fj
    q = Queue("slow")
    q.set_events(True)
    h = Sleep.dispatch({"seconds": 30}).on_queue("slow").send()
    doomed = spawn_worker("--queue", "slow", "--lease", "1", url=url, key_prefix=prefix)
    eventually(lambda: q.counts()["active"] == 1, timeout=20)
    os.kill(doomed.proc.pid, signal.SIGKILL)
    doomed.proc.wait()
    spawn_worker("--queue", "slow", "--lease", "1", url=url, key_prefix=prefix)  # its scheduler reaps the lease
    events = read_all(q, lambda e: e.job_id == h.id and e.type == "active", 2)
    assert by_job(events)[h.id][:4] == ["waiting", "active", "stalled", "active"]
    q.cancel(h.id)


def test_nothing_is_written_while_events_are_off(start_worker: Any) -> None:
    q = Queue("ev")
    assert q.events_keep() is None
    Told.dispatch_many([{"n": i} for i in range(100)])
    Told.dispatch({"n": 1}).delay(60).send()
    h = Told.dispatch({"n": 2}).send()
    start_worker(queues=["ev"])
    h.wait_result(timeout=10)
    eventually(lambda: q.counts()["completed"] == 101)
    q.set_events(True, keep=50)
    assert q.events_keep() == 50
    assert list(q.events("0", timeout=0.1)) == []  # the stream holds nothing from while it was off
    q.set_events(False)
    assert q.events_keep() is None
    assert list(q.events("0", timeout=0.1)) == []


def test_bad_input_is_refused_by_name() -> None:
    q = Queue("ev")
    with pytest.raises(ValueError, match="keep must be 1 to"):
        q.set_events(True, keep=0)
    with pytest.raises(TypeError, match="keep must be an int"):
        q.set_events(True, keep="many")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="enabled must be True or False"):
        q.set_events("yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="since must be"):
        q.events("yesterday")
    with pytest.raises(TypeError, match="since must be a str"):
        q.events(5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout must be"):
        q.events(timeout=-1)
    assert q.events_keep() is None


@pytest.mark.shared_store
def test_the_cli_shows_a_job_with_its_progress_and_logs_and_prints_events(start_worker: Any, fj: tuple[str, str]) -> None:
    url, prefix = fj
    q = Queue("ev")
    q.set_events(True)
    h = Told.dispatch({"n": 5}).send()
    start_worker(queues=["ev"])
    assert h.wait_result(timeout=10) == "done 5"
    env = dict(os.environ, FASTJOBS_URL=url, FASTJOBS_PREFIX=prefix, PYTHONPATH=str(ROOT))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "fastjobs", *args], cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=60)

    shown = cli("job", "ev", h.id)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"{h.id}  completed  queue ev"  # a completed job keeps no record: no name
    assert lines[1].startswith('progress 50% {"step":"half"}')
    assert lines[2] == 'result "done 5"'
    assert lines[3].endswith('  info     reported {"n":5}')
    missing = cli("job", "ev", "no-such-job")
    assert missing.returncode == 1 and "no job 'no-such-job' on queue 'ev'" in missing.stderr
    printed = cli("events", "ev", "--since", "0", "--timeout", "0.5", "--json")
    assert printed.returncode == 0, printed.stderr
    told = [json.loads(line) for line in printed.stdout.splitlines()]
    assert [(e["job_id"], e["type"]) for e in told] == [(h.id, t) for t in ("waiting", "active", "progress", "completed")]
    assert told[-1]["data"] == {"result": "done 5"}
    bad = cli("events", "ev", "--since", "yesterday", "--timeout", "0.1")
    assert bad.returncode == 1 and "since must be" in bad.stderr
