"""Deduplication keys, end to end with real workers: ``deduplicate(key, ttl=...)`` (dropped while
the key's mark lives), ``deduplicate(key)`` (held until the job holding it completes or fails for
good, also by LeaseExpired), ``debounce(key, delay)`` (the waiting job takes the last payload and
its delay starts again), inside one ``dispatch_many`` and a ``BulkDispatcher``, under 1,000
concurrent dispatches, and bad input refused before anything is written.

Worker processes import this module (``spawn``) for the job classes below."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import fastjobs
from fastjobs import BulkDispatcher, JobChain, Queue

from .conftest import eventually

JOBS = ["tests.test_dedup"]

#: Runs of Seen in this process: (job id, payload, meta, time.time() at start).
SEEN: list[tuple[str, Any, dict[str, Any], float]] = []
_LOCK = threading.Lock()


class Seen(fastjobs.Job[dict, None]):
    """Records its run; waits while the file ``payload["gate"]`` exists; raises while
    ``payload["fail"]`` is more than its attempt. Returns None (a completion with nothing
    stored: the ack's plain path, unless the job holds a key)."""

    name = "dedup.Seen"
    queue = "dedup"

    def process(self, payload: dict) -> None:
        with _LOCK:
            SEEN.append((self.job_id, payload, dict(self.meta), time.time()))
        gate = payload.get("gate")
        while gate and os.path.exists(gate):
            time.sleep(0.01)
        if payload.get("fail", 0) > self.attempt:
            raise ValueError(f"attempt {self.attempt} fails")


class Answer(fastjobs.Job[dict, dict]):
    """Waits while the file ``payload["gate"]`` exists, then returns its payload (a completion
    with a result)."""

    name = "dedup.Answer"
    queue = "dedup"

    def process(self, payload: dict) -> dict:
        while payload.get("gate") and os.path.exists(payload["gate"]):
            time.sleep(0.01)
        return payload


class Hold(fastjobs.Job[dict, None]):
    """Waits while the file ``payload["gate"]`` exists (a worker process is killed meanwhile)."""

    name = "dedup.Hold"
    queue = "dedup-hold"

    def process(self, payload: dict) -> None:
        while os.path.exists(payload["gate"]):
            time.sleep(0.02)


@pytest.fixture(autouse=True)
def seen() -> list[tuple[str, Any, dict[str, Any], float]]:
    SEEN.clear()
    return SEEN


def runs() -> list[tuple[str, Any]]:
    with _LOCK:
        return [(job_id, payload) for job_id, payload, _, _ in SEEN]


def keys(redis: Any, prefix: str) -> list[bytes]:
    return sorted(redis("KEYS", f"{prefix}:*"))


# ---- deduplicate(key, ttl=...): dropped while the mark lives ----


def test_ttl_drops_duplicates_while_the_mark_lives_even_after_the_job_completed(face: Any, start_worker: Any) -> None:
    first = face.send(Seen.dispatch({"n": 1}).deduplicate("report", ttl=60))
    assert first.created and not first.deduplicated
    dup = face.send(Seen.dispatch({"n": 2}).deduplicate("report", ttl=60))
    assert (dup.id, dup.created, dup.deduplicated) == (first.id, False, True)
    start_worker(queues=["dedup"])
    assert face.wait(first) is None
    # Completed, but dispatched less than a minute ago: still a duplicate.
    again = face.send(Seen.dispatch({"n": 3}).deduplicate("report", ttl=60))
    assert (again.id, again.deduplicated) == (first.id, True)
    # Another key, another job.
    other = face.send(Seen.dispatch({"n": 4}).deduplicate("other", ttl=60))
    assert other.created and other.id != first.id
    assert face.wait(other) is None
    assert runs() == [(first.id, {"n": 1}), (other.id, {"n": 4})]


def test_ttl_expiry_accepts_the_key_again(face: Any, start_worker: Any) -> None:
    first = face.send(Seen.dispatch({"n": 0}).deduplicate("tick", ttl=0.3))
    assert face.send(Seen.dispatch({"n": 1}).deduplicate("tick", ttl=0.3)).deduplicated
    # The job is still waiting (no worker yet): the ttl alone ends the mark.
    later = eventually(lambda: (h := face.send(Seen.dispatch({"n": 2}).deduplicate("tick", ttl=0.3))).created and h)
    assert later.id != first.id and not later.deduplicated
    start_worker(queues=["dedup"])
    face.wait(first)
    face.wait(later)
    assert sorted(p["n"] for _, p in runs()) == [0, 2]


@pytest.mark.redis_only
def test_ttl_marks_live_in_the_queue_of_the_dispatch(redis: Any, prefix: str) -> None:
    a = Seen.dispatch({}).deduplicate("k", ttl=30).send()
    b = Seen.dispatch({}).on_queue("elsewhere").deduplicate("k", ttl=30).send()
    assert a.created and b.created and a.id != b.id
    assert redis("GET", f"{prefix}:{{dedup}}:dedup:k") == a.id.encode()
    assert 0 < redis("PTTL", f"{prefix}:{{dedup}}:dedup:k") <= 30_000


# ---- deduplicate(key): held until the job holding it settles ----


@pytest.mark.parametrize("job", [Seen, Answer], ids=["none-result", "with-result"])
def test_until_completed_holds_the_key_until_the_job_completes(face: Any, start_worker: Any, tmp_path: Path,
                                                               job: Any) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    first = face.send(job.dispatch({"gate": str(gate), "n": 1}).deduplicate("sync-user-7"))
    assert first.created
    start_worker(queues=["dedup"])
    eventually(lambda: face.status(first) == "active")
    dup = face.send(job.dispatch({"n": 2}).deduplicate("sync-user-7"))
    assert (dup.id, dup.created, dup.deduplicated) == (first.id, False, True)
    # However long it runs: no ttl ends the hold.
    time.sleep(0.3)
    assert face.send(job.dispatch({"n": 3}).deduplicate("sync-user-7")).deduplicated
    gate.unlink()
    face.wait(first)
    # The completion released the key: the next dispatch is a new job.
    after = face.send(job.dispatch({"n": 4}).deduplicate("sync-user-7"))
    assert after.created and not after.deduplicated and after.id != first.id
    assert face.wait(after) == (None if job is Seen else {"n": 4})


def test_until_completed_is_kept_through_a_retry_and_released_by_the_final_failure(face: Any, start_worker: Any) -> None:
    first = face.send(Seen.dispatch({"fail": 99}).deduplicate("flaky").attempts(2).backoff(0.5))
    start_worker(queues=["dedup"])
    # The first attempt failed, the job waits to run again: the key is still held.
    eventually(lambda: face.status(first) == "delayed")
    assert face.send(Seen.dispatch({"n": 2}).deduplicate("flaky")).id == first.id
    with pytest.raises(fastjobs.JobFailed):
        face.wait(first)
    after = face.send(Seen.dispatch({"n": 3}).deduplicate("flaky"))
    assert after.created and after.id != first.id
    face.wait(after)
    assert [p for _, p in runs()] == [{"fail": 99}, {"fail": 99}, {"n": 3}]


def test_until_completed_releases_only_its_own_mark(redis: Any, prefix: str, start_worker: Any) -> None:
    h = Seen.dispatch({}).deduplicate("mine").send()
    # Someone else's mark took the key meanwhile (written by hand): the job's settlement
    # must not delete it.
    redis("SET", f"{prefix}:{{dedup}}:dedup:mine", "another-job")
    start_worker(queues=["dedup"])
    h.wait_result(timeout=10)
    assert redis("GET", f"{prefix}:{{dedup}}:dedup:mine") == b"another-job"


@pytest.mark.redis_only
def test_a_mark_that_is_not_a_string_neither_stops_a_dispatch_nor_an_ack(redis: Any, prefix: str, start_worker: Any) -> None:
    mark = f"{prefix}:{{dedup}}:dedup:odd"
    h = Seen.dispatch({}).deduplicate("odd").send()
    redis("DEL", mark)
    redis("RPUSH", mark, "not a job id")  # written by another program
    start_worker(queues=["dedup"])
    assert h.wait_result(timeout=10) is None
    assert redis("TYPE", mark) == "list"
    # On a queue no worker consumes, so that the jobs keep their keys.
    mark = f"{prefix}:{{unserved}}:dedup:odd"
    for mode in (lambda b: b.deduplicate("odd"), lambda b: b.deduplicate("odd", ttl=60), lambda b: b.debounce("odd", 60)):
        redis("DEL", mark)
        redis("RPUSH", mark, "x")
        again = mode(Seen.dispatch({}).on_queue("unserved")).send()
        assert again.created and redis("GET", mark) == again.id.encode()


JOB_KILLS = 2


@pytest.mark.timeout(90)
def test_until_completed_is_released_when_the_job_fails_with_lease_expired(spawn_worker: Any, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    h = Hold.dispatch({"gate": str(gate)}).deduplicate("poison").attempts(1).send()

    def spawn() -> Any:
        return spawn_worker("--queue", "dedup-hold", "--lease", "1", "--grace", "1", modules=JOBS)

    # Killed while running it twice: the first run is not counted, the second (an orphan,
    # its start recorded) uses up the attempt; the reaper fails it with LeaseExpired.
    for k in range(JOB_KILLS):
        w = spawn()
        eventually(lambda k=k: Queue("dedup-hold").counts()["active"] == 1 and Queue("dedup-hold").counts()["stalled"] == k,
                   timeout=30)
        time.sleep(0.3)
        assert Queue("dedup-hold").counts()["failed"] == 0
        assert Hold.dispatch({"gate": str(gate)}).deduplicate("poison").send().deduplicated
        w.proc.send_signal(signal.SIGKILL)
        w.output()
    last = spawn()
    with pytest.raises(fastjobs.JobFailed) as e:
        h.wait_result(timeout=30)
    assert e.value.exc_type == "LeaseExpired"
    gate.unlink()
    after = Hold.dispatch({"gate": str(gate)}).deduplicate("poison").send()
    assert after.created and after.id != h.id
    after.wait_result(timeout=30)
    last.proc.terminate()
    last.output()


# ---- debounce(key, delay) ----


def test_debounce_runs_the_last_payload_once_after_the_delay_restarted(face: Any, start_worker: Any) -> None:
    start_worker(queues=["dedup"])
    first = face.send(Seen.dispatch({"n": 1}).meta({"v": 1}).debounce("search-box", 2.0))
    assert first.created and not first.deduplicated
    assert face.status(first) == "delayed"
    time.sleep(0.5)
    before_last = time.time()
    for n in (2, 3):
        h = face.send(Seen.dispatch({"n": n}).meta({"v": n}).debounce("search-box", 2.0))
        assert (h.id, h.created, h.deduplicated) == (first.id, False, True)
    assert face.info(first).payload == {"n": 3}
    face.wait(first)
    assert runs() == [(first.id, {"n": 3})]
    [(_, _, meta, started)] = SEEN
    assert meta == {"v": 3}  # options replaced too
    # The delay started again with the last dispatch: not run at the first one's due time.
    assert started >= before_last + 2.0
    time.sleep(0.2)
    assert len(runs()) == 1


def test_debounce_after_the_job_started_makes_a_new_job(face: Any, start_worker: Any, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    start_worker(queues=["dedup"])
    first = face.send(Seen.dispatch({"n": 1, "gate": str(gate)}).debounce("doc-9", 0.05))
    eventually(lambda: face.status(first) == "active")
    second = face.send(Seen.dispatch({"n": 2}).debounce("doc-9", 0.05))
    assert second.created and not second.deduplicated and second.id != first.id
    gate.unlink()
    face.wait(first)
    face.wait(second)
    assert sorted(p["n"] for _, p in runs()) == [1, 2]


def test_debounce_is_per_key() -> None:
    a = Seen.dispatch({"n": 1}).debounce("a", 60).send()
    b = Seen.dispatch({"n": 2}).debounce("b", 60).send()
    assert a.created and b.created and a.id != b.id
    assert Queue("dedup").counts()["delayed"] == 2


# ---- bulk dispatch ----


@pytest.mark.parametrize("option", [{"deduplicate": "batch"}, {"deduplicate": {"key": "batch", "ttl": 60}}],
                         ids=["until", "ttl"])
def test_dispatch_many_with_one_key_makes_one_job(start_worker: Any, option: dict[str, Any]) -> None:
    result = Seen.dispatch_many([{"n": n} for n in range(10)], **option)
    assert len(result) == 10
    handles = result.handles()
    assert {h.id for h in handles} == {handles[0].id}
    assert [h.created for h in handles] == [True] + [False] * 9
    assert [h.deduplicated for h in handles] == [False] + [True] * 9
    assert Queue("dedup").size() == 1
    start_worker(queues=["dedup"])
    handles[0].wait_result(timeout=10)
    assert runs() == [(handles[0].id, {"n": 0})]


def test_dispatch_many_debounce_in_one_batch_keeps_the_last_payload(start_worker: Any) -> None:
    result = Seen.dispatch_many(({"n": n} for n in range(10)), debounce={"key": "typing", "delay": 0.3})
    assert len(set(result)) == 1 and len(result) == 10
    start_worker(queues=["dedup"])
    result.handle(0).wait_result(timeout=10)
    assert runs() == [(result[0], {"n": 9})]


async def test_dispatch_many_async_with_a_key_function(start_worker: Any) -> None:
    payloads = [{"user": u, "n": n} for n in range(4) for u in ("ada", "bob", "cy")]
    result = await Seen.dispatch_many_async(payloads, deduplicate=lambda p: f"user:{p['user']}")
    ids = list(result)
    assert len(ids) == 12 and len(set(ids)) == 3
    assert sum(h.created for h in result.handles()) == 3
    start_worker(queues=["dedup"])
    for h in result.handles()[:3]:
        await h.wait_result_async(timeout=10)
    assert sorted((p["user"], p["n"]) for _, p in runs()) == [("ada", 0), ("bob", 0), ("cy", 0)]


def test_bulk_dispatcher_dedups_within_and_across_its_batches(face: Any, start_worker: Any) -> None:
    builders = [Seen.dispatch({"n": n}).deduplicate(f"k{n % 3}") for n in range(2500)]  # three batches
    builders.append(Seen.dispatch({"n": "last"}).debounce("d", 0.2))
    builders.append(Seen.dispatch({"n": "later"}).debounce("d", 0.2))
    builders.append(Seen.dispatch({"n": "plain"}))
    d = BulkDispatcher(builders)
    result = d.dispatch() if face.name == "sync" else asyncio.run(d.dispatch_async())
    handles = result.handles()
    assert len({h.id for h in handles[:2500]}) == 3
    assert [h.created for h in handles[:3]] == [True] * 3 and not any(h.created for h in handles[3:2500])
    assert handles[2500].id == handles[2501].id and handles[2501].deduplicated
    assert handles[2502].created and not handles[2502].deduplicated
    start_worker(queues=["dedup"])
    for h in handles[:3] + handles[2500:]:
        h.wait_result(timeout=10)
    assert sorted(str(p["n"]) for _, p in runs()) == ["0", "1", "2", "later", "plain"]


# ---- 1,000 concurrent duplicates ----

MODES = {
    "until": lambda b: b.deduplicate("hot"),
    "ttl": lambda b: b.deduplicate("hot", ttl=60),
    "debounce": lambda b: b.debounce("hot", 60),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_a_thousand_concurrent_duplicate_dispatches_from_threads_make_one_job(mode: str) -> None:
    with ThreadPoolExecutor(16) as pool:
        handles = list(pool.map(lambda n: MODES[mode](Seen.dispatch({"n": n})).send(), range(1000)))
    assert len({h.id for h in handles}) == 1
    assert sum(h.created for h in handles) == 1
    assert sum(h.deduplicated for h in handles) == 999
    c = Queue("dedup").counts()
    assert c["waiting"] + c["delayed"] == 1, c


@pytest.mark.parametrize("mode", list(MODES))
async def test_a_thousand_concurrent_duplicate_dispatches_from_asyncio_make_one_job(mode: str) -> None:
    handles = await asyncio.gather(*(MODES[mode](Seen.dispatch({"n": n})).send_async() for n in range(1000)))
    assert len({h.id for h in handles}) == 1
    assert sum(h.created for h in handles) == 1
    assert sum(h.deduplicated for h in handles) == 999
    c = await Queue("dedup").counts_async()
    assert c["waiting"] + c["delayed"] == 1, c


# ---- the with_() forms ----


def test_with_takes_the_dedup_options_by_name() -> None:
    a = Seen.dispatch({}).with_("deduplicate", "w").send()
    assert Seen.dispatch({}).with_("deduplicate", {"key": "w"}).send().id == a.id
    t = Seen.dispatch({}).with_("deduplicate", {"key": "wt", "ttl": "1m"}).send()
    assert Seen.dispatch({}).with_("deduplicate", {"key": "wt", "ttl": 60}).send().id == t.id
    d = Seen.dispatch({}).with_("debounce", {"key": "wd", "delay": "1m"}).send()
    assert Seen.dispatch({}).with_("debounce", {"key": "wd", "delay": 60}).send().id == d.id
    assert len({a.id, t.id, d.id}) == 3


# ---- bad input: typed errors, nothing written ----


def _at() -> datetime:
    return datetime(2099, 1, 1, tzinfo=timezone.utc)


BAD_BUILDERS = [
    (lambda: Seen.dispatch({}).deduplicate(""), ValueError, "must not be empty"),
    (lambda: Seen.dispatch({}).deduplicate(7), TypeError, "must be a str, got int"),  # type: ignore[arg-type]
    (lambda: Seen.dispatch({}).deduplicate(b"k"), TypeError, "must be a str, got bytes"),  # type: ignore[arg-type]
    (lambda: Seen.dispatch({}).deduplicate(None), TypeError, "must be a str"),  # type: ignore[arg-type]
    (lambda: Seen.dispatch({}).deduplicate("x" * 256), ValueError, "at most 255 bytes"),
    (lambda: Seen.dispatch({}).deduplicate("a\nb"), ValueError, "control characters"),
    (lambda: Seen.dispatch({}).deduplicate("k", ttl=0), ValueError, "deduplicate ttl must be more than 0"),
    (lambda: Seen.dispatch({}).deduplicate("k", ttl=-1), ValueError, "deduplicate ttl must be more than 0"),
    (lambda: Seen.dispatch({}).deduplicate("k", ttl="soon"), ValueError, "is not a duration"),
    (lambda: Seen.dispatch({}).debounce("", 1), ValueError, "must not be empty"),
    (lambda: Seen.dispatch({}).debounce(1, 1), TypeError, "must be a str"),  # type: ignore[arg-type]
    (lambda: Seen.dispatch({}).debounce("k", 0), ValueError, "debounce delay must be more than 0"),
    (lambda: Seen.dispatch({}).debounce("k", -0.5), ValueError, "debounce delay must be more than 0"),
    (lambda: Seen.dispatch({}).debounce("k", 1).delay(5), ValueError, "cannot be combined with delay()"),
    (lambda: Seen.dispatch({}).delay(5).debounce("k", 1), ValueError, "cannot be combined with delay() or at()"),
    (lambda: Seen.dispatch({}).at(_at()).debounce("k", 1), ValueError, "cannot be combined with delay() or at()"),
    (lambda: Seen.dispatch({}).debounce("k", 1).at(_at()), ValueError, "cannot be combined with at()"),
    (lambda: Seen.dispatch({}).debounce("k", 1).deduplicate("k"), ValueError, "two deduplication modes"),
    (lambda: Seen.dispatch({}).deduplicate("k", ttl=1).debounce("k", 1), ValueError, "two deduplication modes"),
    (lambda: Seen.dispatch({}).job_id("order-1").deduplicate("k"), ValueError, "job_id (or idempotency_key)"),
    (lambda: Seen.dispatch({}).deduplicate("k").idempotency_key("order-1"), ValueError, "job_id (or idempotency_key)"),
    (lambda: Seen.dispatch({}).job_id("order-1").debounce("k", 1), ValueError, "job_id (or idempotency_key)"),
    (lambda: Seen.dispatch({}).with_("deduplicate", {"kee": "k"}), ValueError, "deduplicate takes a key, or a dict"),
    (lambda: Seen.dispatch({}).with_("debounce", {"key": "k", "ttl": 1}), ValueError, "unknown: ['ttl']"),
]


@pytest.mark.parametrize("build,exc,text", BAD_BUILDERS)
def test_bad_dedup_options_raise_typed_errors_and_write_nothing(build: Any, exc: type[Exception], text: str, redis: Any,
                                                               prefix: str) -> None:
    with pytest.raises(exc) as e:
        build().send()
    assert text in str(e.value)
    assert keys(redis, prefix) == []


BAD_MANY = [
    ({"deduplicate": ""}, ValueError, "must not be empty"),
    ({"deduplicate": 3}, TypeError, "must be a str, got int"),
    ({"deduplicate": lambda p: p["n"]}, TypeError, "payload at index 0: deduplication key returned by the key function must be a str"),
    ({"deduplicate": lambda p: "k" if p["n"] < 2 else ""}, ValueError, "payload at index 2: "),
    ({"deduplicate": {"key": "k", "ttl": 0}}, ValueError, "deduplicate ttl must be more than 0"),
    ({"deduplicate": {"key": "k", "tll": 1}}, ValueError, "unknown: ['tll']"),
    ({"debounce": "k"}, ValueError, "debounce takes a dict with key and delay"),
    ({"debounce": {"key": "k"}}, ValueError, "debounce takes a dict with key and delay"),
    ({"debounce": {"key": "k", "delay": -1}}, ValueError, "debounce delay must be more than 0"),
    ({"debounce": {"key": "k", "delay": 1}, "delay": 5}, ValueError, "cannot be combined with delay()"),
    ({"debounce": {"key": "k", "delay": 1}, "deduplicate": "k"}, ValueError, "two deduplication modes"),
]


@pytest.mark.parametrize("options,exc,text", BAD_MANY)
def test_bad_dedup_options_of_dispatch_many_raise_and_write_nothing(options: dict[str, Any], exc: type[Exception], text: str,
                                                                    redis: Any, prefix: str) -> None:
    with pytest.raises(exc) as e:
        Seen.dispatch_many([{"n": n} for n in range(5)], **options)
    assert text in str(e.value)
    assert keys(redis, prefix) == []


def test_workflow_jobs_refuse_a_deduplication_key(redis: Any, prefix: str) -> None:
    with pytest.raises(ValueError, match="JobChain cannot have a deduplication key"):
        JobChain([Seen.dispatch({}), Seen.dispatch({}).deduplicate("k")]).dispatch()
    assert keys(redis, prefix) == []
