"""Dispatching: builders, options, validation before anything is sent, handles, job ids."""

from __future__ import annotations

import gc
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import fastjobs
from fastjobs import Backoff, Queue

from .apps.jobs import Echo


class Greet(fastjobs.Job[dict, str]):
    queue = "greetings"
    attempts = 3
    priority = 2

    def process(self, payload: dict) -> str:
        return f"hello {payload['name']}"


class AsyncGreet(fastjobs.Job[dict, str]):
    queue = "greetings"

    async def process(self, payload: dict) -> str:
        return f"hi {payload['name']}"


class Unserializable:
    pass


def test_dispatch_writes_a_waiting_job(face: Any) -> None:
    h = face.send(Greet.dispatch({"name": "ada"}))
    assert h.queue == "greetings" and h.created
    assert face.status(h) == "waiting"
    # A waiting job is a packed element of its ready list, not indexed by id: its state is
    # known, its record is shown once it is delayed, active or failed (docs/DESIGN.md).
    assert face.info(h).state == "waiting"
    assert face.size(Queue("greetings")) == 1


def test_info_shows_the_record_of_a_delayed_job(face: Any) -> None:
    h = face.send(Greet.dispatch({"name": "ada"}).delay(60))
    info = face.info(h)
    assert info.state == "delayed"
    assert (info.name, info.attempt, info.max_attempts, info.priority) == ("Greet", 0, 3, 2)
    assert info.payload == {"name": "ada"}
    assert abs((datetime.now(timezone.utc) - info.enqueued_at).total_seconds()) < 5


def test_ids_are_distinct_and_status_of_unknown_ids(face: Any) -> None:
    ids = {face.send(Echo.dispatch(i)).id for i in range(50)}
    assert len(ids) == 50
    q = Queue("default")
    assert face.get_job(q, "nope") is None
    fake = next(iter(ids))[:10] + "-99999999"  # same producer, sequence never used
    assert face.get_job(q, fake) is None


@pytest.mark.redis_only
def test_the_high_water_mark_is_raised_never_lowered(redis: Any, prefix: str) -> None:
    # Every dispatch raises its producer's mark (common.lua raise_mark), which tells a waiting
    # job from one never dispatched. Sends from several threads may land out of order: a late
    # one must not lower it. The helper runs here as every script runs it, common.lua first.
    first = Echo.dispatch(1).send().id
    producer, seq = first.split("-")
    mark = f"{prefix}:{{default}}:hwm:{producer}"
    assert int(redis("GET", mark)) == int(seq) and redis("TTL", mark) > 29 * 24 * 3600
    common = (Path(__file__).parent.parent / "rust" / "store" / "redis" / "lua" / "includes" / "common.lua").read_text()
    raise_mark = common + "\nraise_mark(KEYS[1], ARGV[1], ARGV[2])\nreturn redis.call('GET', KEYS[1])"
    assert int(redis("EVAL", raise_mark, 1, mark, int(seq) + 5, 100)) == int(seq) + 5
    assert int(redis("EVAL", raise_mark, 1, mark, int(seq), 200)) == int(seq) + 5  # late: kept
    assert 100 < redis("TTL", mark) <= 200  # renewed all the same
    assert redis("EVAL", raise_mark, 1, f"{mark}x", -1, 100) is None  # no generated id: no mark
    assert Echo.dispatch(2).send().status() == "waiting"


def test_options_by_name_and_by_method(face: Any) -> None:
    h = face.send(
        Greet.dispatch({"name": "x"})
        .delay(60)
        .with_("attempts", 5)
        .with_("backoff", {"type": "exponential", "delay": 2})
        .with_("timeout", "30s")
        .with_("priority", 7)
        .with_("meta", {"user": 1, "org": 2})
        .on_queue("other")
    )
    info = face.info(h)
    assert h.queue == "other"
    assert (info.max_attempts, info.priority) == (5, 7)
    assert info.options == {
        "backoff": {"type": "exponential", "delay": 2.0, "max_delay": None, "jitter": False},
        "timeout": 30.0,
        "meta": {"user": 1, "org": 2},
    }


@pytest.mark.parametrize(
    "value, seconds",
    [(5, 5.0), (1.5, 1.5), (timedelta(minutes=2), 120.0), ("30s", 30.0), ("10m", 600.0), ("2h", 7200.0), ("3d", 259200.0), ("250ms", 0.25)],
)
def test_delay_forms(value: Any, seconds: float, face: Any) -> None:
    assert fastjobs.parse_duration(value) == seconds
    h = face.send(Echo.dispatch(1).delay(value))
    assert face.status(h) == ("delayed" if seconds > 0.2 else face.status(h))


def test_at_in_the_future_is_delayed_and_naive_means_utc(face: Any) -> None:
    later = datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(hours=1)
    h = face.send(Echo.dispatch(1).at(later))
    assert face.status(h) == "delayed"
    past = datetime.now(timezone.utc) - timedelta(days=1)
    assert face.status(face.send(Echo.dispatch(1).at(past))) == "waiting"


def test_job_id_deduplicates(face: Any) -> None:
    first = face.send(Echo.dispatch("a").job_id("order-42"))
    again = face.send(Echo.dispatch("b").job_id("order-42"))
    assert first.id == again.id == "order-42"
    assert first.created and not again.created
    assert face.size(Queue("default")) == 1
    assert face.status(first) == "waiting"


def test_idempotency_key_returns_the_first_job(face: Any) -> None:
    first = face.send(Echo.dispatch("a").idempotency_key("webhook-981"))
    again = face.send(Echo.dispatch("b").with_("idempotency_key", "webhook-981"))
    assert again.id == first.id == "webhook-981" and not again.created
    assert face.size(Queue("default")) == 1


def test_generated_looking_job_id_is_refused() -> None:
    with pytest.raises(ValueError, match="shape of a generated id"):
        Echo.dispatch(1).job_id("abcdefghij-12").send()


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: Echo.dispatch(1).with_("colour", "red"), "unknown option 'colour'"),
        (lambda: Echo.dispatch(1).delay(-1), "delay must be between 0 and 100 years"),
        (lambda: Echo.dispatch(1).delay("soon"), "is not a duration"),
        (lambda: Echo.dispatch(1).delay(math.inf), "delay must be between 0 and 100 years"),
        (lambda: Echo.dispatch(1).attempts(0), "attempts must be"),
        (lambda: Echo.dispatch(1).with_("backoff", {"type": "linear"}), "unknown backoff type 'linear'"),
        (lambda: Echo.dispatch(1).backoff(lambda n: n), "callable backoff can only be set on the job class"),
        (lambda: Echo.dispatch(1).priority(10), "priority must be"),
        (lambda: Echo.dispatch(1).timeout(0), "timeout must be more than 0"),
        (lambda: Echo.dispatch(1).at("tomorrow"), "at\\(\\) takes a datetime"),
        (lambda: Echo.dispatch(1).job_id("has space"), "must not contain spaces"),
        (lambda: Echo.dispatch(1).job_id("x" * 256), "must be 1 to 255 bytes"),
        (lambda: Echo.dispatch(1).job_id("abcdefghij-12"), "shape of a generated id"),
    ],
)
def test_bad_options_raise_value_error_before_sending(build: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_invalid_queue_name_raises_before_anything_is_sent() -> None:
    with pytest.raises(ValueError, match="invalid queue name"):
        Echo.dispatch(1).on_queue("bad queue{}")
    with pytest.raises(ValueError, match="invalid queue name"):
        type("BadQueue", (fastjobs.Job,), {"queue": "a b", "process": lambda self, p: p})
    assert Queue("default").size() == 0


def test_unserializable_payload_names_type_and_place(face: Any) -> None:
    b = Echo.dispatch({"user": {"tags": ["a", Unserializable()]}})
    with pytest.raises(TypeError, match=r"payload\['user'\]\['tags'\]\[1\] is of type .*Unserializable"):
        face.send(b)
    assert face.size(Queue("default")) == 0


def test_payload_over_the_limit(face: Any, redis_server: Any) -> None:
    fastjobs.configure(max_payload=1000)
    with pytest.raises(ValueError, match="over the limit of 1000 bytes"):
        face.send(Echo.dispatch("x" * 2000))
    assert face.size(Queue("default")) == 0


def test_unsent_builder_warns_and_sent_one_does_not() -> None:
    with pytest.warns(fastjobs.UnsentDispatchWarning, match="'Echo' was never sent"):
        Echo.dispatch(1)
        gc.collect()
    Echo.dispatch(1).send()
    gc.collect()  # no warning (filterwarnings=error would fail the test)


def test_builder_is_sent_once(face: Any) -> None:
    b = Echo.dispatch(1)
    face.send(b)
    with pytest.raises(RuntimeError, match="already sent"):
        face.send(b)


def test_class_without_process_cannot_be_dispatched() -> None:
    class Base(fastjobs.Job[Any, Any]):
        queue = "x"

    with pytest.raises(TypeError, match="defines no process"):
        Base.dispatch(1)


def test_duplicate_job_names_are_refused() -> None:
    with pytest.raises(TypeError, match="job name 'Greet' is taken"):
        type("Greet", (fastjobs.Job,), {"process": lambda self, p: p, "__module__": "elsewhere"})


def test_class_defaults_are_validated() -> None:
    with pytest.raises(ValueError, match="attempts"):
        type("BadAttempts", (fastjobs.Job,), {"attempts": 0, "process": lambda self, p: p})
    with pytest.raises(ValueError, match="backoff"):
        type("BadBackoff", (fastjobs.Job,), {"backoff": "fast", "process": lambda self, p: p})


def test_dispatch_now_runs_inline_and_raises_errors() -> None:
    assert Greet.dispatch_now({"name": "bo"}) == "hello bo"
    assert AsyncGreet.dispatch_now({"name": "bo"}) == "hi bo"
    with pytest.raises(KeyError):
        Greet.dispatch_now({})
    with pytest.raises(TypeError, match="cannot be serialized"):
        Greet.dispatch_now({"name": Unserializable()})
    assert Queue("greetings").size() == 0


async def test_dispatch_now_of_async_job_inside_a_loop() -> None:
    assert await AsyncGreet.dispatch_now({"name": "cy"}) == "hi cy"


def test_decorator_jobs() -> None:
    @fastjobs.job(queue="fn", attempts=2, name="double_it")
    def double(payload: int) -> int:
        return payload * 2

    assert double(4) == 8
    assert double.name == "double_it"
    assert double.dispatch_now(5) == 10
    h = double.dispatch(3).delay(60).send()
    assert h.queue == "fn" and h.info().max_attempts == 2
    with pytest.raises(TypeError, match="unknown job option"):
        fastjobs.job(retries=3)


def test_backoff_schedule() -> None:
    assert [Backoff.fixed(2).seconds(n) for n in (1, 2, 3)] == [2, 2, 2]
    exp = Backoff.exponential(1, jitter=False, max_delay=5)
    assert [exp.seconds(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 5, 5]
    jit = Backoff.exponential(4, jitter=True, max_delay=None)
    assert all(2 <= jit.seconds(1) <= 4 for _ in range(50))
    assert Greet.retry_delay(3, Backoff.fixed(7)) == 7
