"""The events of a queue: what happened to its jobs, in order, for dashboards, progress bars
and audit trails (``Queue.events()``).

While a queue's events are on (``Queue.set_events(True)``), every script that changes the
state of its jobs adds one entry to the stream ``…:events`` (on PostgreSQL and SQLite a
table, in process a ring), listing the jobs it changed (a bulk write: their ids as runs).
This module reads that stream and hands out one ``Event`` per job, each with an id to resume
from (docs/DESIGN.md, "Events").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from . import serde

__all__ = ["Event", "EVENT_TYPES", "DEFAULT_KEEP"]

#: The kinds of events, in the order a job usually meets them.
EVENT_TYPES = ("waiting", "delayed", "active", "progress", "retrying", "stalled", "completed", "failed", "cancelled", "removed")

#: Entries (script calls) a queue's stream keeps by default; each lists many jobs at a drain's pace.
DEFAULT_KEEP = 10_000

#: The largest keep accepted (rust/store/redis/events.rs MAX_KEEP).
MAX_KEEP = 10_000_000

#: Entries fetched per read.
_BATCH = 200


@dataclass(frozen=True)
class Event:
    """One thing that happened to one job.

    ``id`` resumes a reader just after this event (``Queue.events(since=event.id)``); ``type``
    is one of ``EVENT_TYPES``; ``at`` is when the store recorded it. ``name`` is the job's name
    (None on ``active``, ``progress`` and completions without a result) and ``attempt`` the run it is about, counted from 0 as ``Job.attempt`` (for ``active``,
    ``retrying``, ``failed`` and ``stalled``; None otherwise). ``data`` holds what the type
    says: ``active`` {"worker"}, ``progress`` {"value", "data"}, ``completed`` {"result"},
    ``failed`` {"error"}, ``retrying`` {"error", "delay"} (seconds), ``delayed`` {"due"} (a
    datetime); the others none.
    """

    id: str
    type: str
    queue: str
    job_id: str
    name: str | None
    at: datetime
    attempt: int | None = None
    data: dict[str, Any] = field(default_factory=dict)


def check_keep(keep: Any) -> int:
    if isinstance(keep, bool) or not isinstance(keep, int):
        raise TypeError(f"keep must be an int (entries of the events stream), got {type(keep).__name__}")
    if not 1 <= keep <= MAX_KEEP:
        raise ValueError(f"keep must be 1 to {MAX_KEEP:,} entries, got {keep}")
    return keep


def _stream_id(text: str) -> tuple[int, int] | None:
    ms, sep, seq = text.partition("-")
    if not (sep and ms.isdigit() and seq.isdigit()):
        return None
    return int(ms), int(seq)


def start_point(since: Any) -> tuple[str | None, str | None, int]:
    """Where a reader starts: (stream id to read after or None for "only new", the entry to
    skip into, events of it to skip). ``since``: "$" (only new events), "0" (all the stream
    keeps), an ``Event.id`` (just after that event), or a stream id (after that entry)."""
    if not isinstance(since, str):
        raise TypeError(f"since must be a str: '$', '0', an Event.id or a stream id; got {type(since).__name__}")
    if since == "$":
        return None, None, 0
    if since in ("0", "0-0"):
        return "0-0", None, 0
    entry, slash, index = since.partition("/")
    sid = _stream_id(entry)
    if sid is None or (slash and not index.isdigit()):
        raise ValueError(f"since must be '$', '0', an Event.id ('<ms>-<seq>/<n>') or a stream id ('<ms>-<seq>'); got {since!r}")
    if not slash:
        return entry, None, 0
    ms, seq = sid
    before = f"{ms}-{seq - 1}" if seq > 0 else (f"{ms - 1}-18446744073709551615" if ms > 0 else "0-0")
    return before, entry, int(index) + 1


def _when(ms: Any) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000, timezone.utc)


def expand(queue: str, sid: str, fields: dict[str, bytes]) -> list[Event]:
    """The events of one stream entry, one per job, in the order the script listed them."""
    kind = fields.get("e", b"").decode()
    at = _when(fields["t"] if "t" in fields else sid.partition("-")[0])  # PostgreSQL's ids are no times
    if "r" in fields:  # a bulk write: runs of generated ids
        out: list[Event] = []
        for producer, first, count, name in serde.loads(fields["r"]):
            for seq in range(first, first + count):
                out.append(Event(f"{sid}/{len(out)}", kind, queue, f"{producer}-{seq}", name, at))
        return out
    ids = fields["i"].decode().split("\n") if "i" in fields else []
    names: list[str] = serde.loads(fields["n"]) if "n" in fields else []
    if len(names) != len(ids):
        names = (names[:1] or [None]) * len(ids)  # type: ignore[list-item]
    attempts = serde.loads(fields["a"]) if "a" in fields else ([0] * len(ids) if "A" in fields else None)
    d = serde.loads(fields["d"]) if "d" in fields else None
    x = serde.loads(fields["x"]) if "x" in fields else None
    worker = fields["w"].decode() if "w" in fields else None
    events = []
    for k, job_id in enumerate(ids):
        data: dict[str, Any] = {}
        if kind == "active":
            data["worker"] = worker
        elif kind == "completed":
            data["result"] = x[k] if x else None
        elif kind == "failed":
            data["error"] = x[k] if x else None
        elif kind == "retrying":
            data["error"] = x[k] if x else None
            data["delay"] = d[k] / 1000 if d else 0.0
        elif kind == "delayed" and d:
            data["due"] = _when(d[k])
        elif kind == "progress" and x:
            p = x[k]
            data.update(value=p["value"], data=p.get("data") or {})
        events.append(Event(f"{sid}/{k}", kind, queue, job_id, names[k] or None, at, attempts[k] if attempts else None, data))
    return events


class EventStream:
    """Reads a queue's events in order, from a connection of its own (a blocking read must
    not hold up the client's other commands)."""

    def __init__(self, client: Any, queue: str, since: Any, timeout: float | None) -> None:
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0):
            raise ValueError(f"timeout must be None (wait for ever) or seconds >= 0, got {timeout!r}")
        self.queue = queue
        self.after, self.skip_entry, self.skip = start_point(since)
        self.timeout = timeout
        self.reader = client.event_reader(queue)
        if self.after is None:  # "only new": from now, so nothing is missed before the first read
            self.after = self.reader.last_id()

    def next_batch(self, wait: float) -> list[Event]:
        """The next events, waiting up to ``wait`` seconds for the first ([] if none came)."""
        out: list[Event] = []
        for sid, fields in self.reader.read(self.after, _BATCH, wait):
            self.after = sid
            events = expand(self.queue, sid, fields)
            if sid == self.skip_entry:
                events = events[self.skip :]
            out.extend(events)
        self.skip_entry = None
        return out

    def __iter__(self) -> Iterator[Event]:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
            batch = self.next_batch(wait)
            if batch:
                yield from batch
                if deadline is not None:
                    deadline = time.monotonic() + self.timeout  # type: ignore[operator]
            elif deadline is not None and time.monotonic() >= deadline:
                return

    async def aiter(self) -> AsyncIterator[Event]:
        loop = asyncio.get_running_loop()
        deadline = None if self.timeout is None else loop.time() + self.timeout
        with ThreadPoolExecutor(1, thread_name_prefix="fastjobs-events") as pool:
            while True:
                wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - loop.time()))
                batch = await loop.run_in_executor(pool, self.next_batch, wait)
                if batch:
                    for e in batch:
                        yield e
                    if deadline is not None:
                        deadline = loop.time() + self.timeout  # type: ignore[operator]
                elif deadline is not None and loop.time() >= deadline:
                    return
