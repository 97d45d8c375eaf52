"""What JobChain and JobFlow share: checking and claiming their builders, and turning a
builder into a spec kept in Redis (to be enqueued later by a worker) and back into a job."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from . import serde
from .dispatch import _ABANDONED, _SENT, _UNSENT, PendingDispatch

JobTuple = tuple[str, bytes, bytes | None, int, int, int, str | None, int | None]


def abandon(builders: Sequence[Any]) -> None:
    """The caller has an error: builders it handed over and never sent must not warn."""
    for b in builders:
        if isinstance(b, PendingDispatch) and b._sent == _UNSENT:
            b._sent = _ABANDONED


def check_builders(builders: Sequence[Any], owner: str, unit: str) -> str:
    """Raises unless every builder is a fresh, distinct PendingDispatch without a job_id, all
    on one connection (the workflow's hash lives there); returns that connection. On an error
    the builders are abandoned."""
    try:
        for i, b in enumerate(builders):
            if not isinstance(b, PendingDispatch):
                raise TypeError(f"{owner} takes dispatch builders (Job.dispatch(...)), got {type(b).__name__} for {unit} {i}")
            if b._sent == _SENT:
                raise ValueError(f"the builder of {unit} {i} was already sent; a {owner} needs builders of its own")
            if b._job_id is not None:
                raise ValueError(f"the builder of {unit} {i} has a job_id; {owner} jobs get theirs from the {owner}")
        if len({id(b) for b in builders}) != len(builders):
            raise ValueError(f"the same builder appears twice in a {owner}; build one per {unit}")
        connections: set[str] = {b._connection for b in builders}
        if len(connections) > 1:
            raise ValueError(f"a {owner}'s jobs must share one connection, got {sorted(connections)}")
    except BaseException:
        abandon(builders)
        raise
    return connections.pop()


@contextmanager
def claimed(builders: Sequence[PendingDispatch[Any]]) -> Iterator[None]:
    """Marks the builders sent while a workflow is planned; if planning fails (a payload that
    cannot be serialized), they are given back to the caller, who may send them again."""
    for b in builders:
        b._claim()
    try:
        yield
    except BaseException:
        for b in builders:
            b._sent = _ABANDONED
        raise


def spec(b: PendingDispatch[Any], key: str, place: dict[str, Any]) -> dict[str, Any]:
    """What it takes to enqueue a builder later, as JSON: its job tuple and queue, with the
    job's place in its workflow under ``key`` ("chain" or "flow") in the job's options."""
    if b._dedup_spec() is not None:
        raise ValueError(f"a job of a {'JobChain' if key == 'chain' else 'JobFlow'} cannot have a deduplication key "
                         "(deduplicate() or debounce()): its place in the workflow is its identity")
    name, payload, options, attempts, priority, delay_us, _id, at_us = b._job_tuple()
    opts = serde.loads(options) if options else {}
    opts[key] = place
    return {"queue": b._queue, "name": name, "payload": payload.decode(), "options": opts, "attempts": attempts,
            "priority": priority, "delay_us": delay_us, "at_us": at_us}


def job(spec: dict[str, Any], job_id: str) -> JobTuple:
    """The job tuple of a spec, under the workflow's id for it (specs written by fastjobs
    0.1.0 kept times in ms)."""
    delay_us = spec["delay_us"] if "delay_us" in spec else spec["delay_ms"] * 1000
    at_us = spec["at_us"] if "at_us" in spec else (None if spec["at_ms"] is None else spec["at_ms"] * 1000)
    return (spec["name"], spec["payload"].encode(), serde.dumps(spec["options"], "options"), spec["attempts"], spec["priority"],
            delay_us, job_id, at_us)
