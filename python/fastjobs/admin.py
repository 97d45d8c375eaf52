"""The operator's commands of ``fastjobs`` (cli.py parses their arguments): queues, inspect,
workers, failed, retry, delete, purge, empty, pause, resume, cancel and job. Each prints text,
or one JSON document with ``--json``, and returns the exit status: 0 done, 1 not found or
refused, 2 bad usage (errors are one line on stderr)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from . import serde
from .errors import FastJobsError, JobStateError, UnknownJobError, UnknownQueueError
from .queue import FailedJob, Queue, QueueLimits
from .worker_registry import WorkerInfo, workers

__all__ = ["COMMANDS"]

#: The counters of ``Queue.counts()`` shown as columns, in order.
STATES = ("waiting", "delayed", "active", "failed", "completed", "retried", "stalled")


class NotFound(Exception):
    """A queue or job that does not exist: exit status 1."""


def _out(args: argparse.Namespace, data: Any, text: Callable[[], None]) -> int:
    if getattr(args, "json", False):
        print(serde.dumps(data).decode())
    else:
        text()
    return 0


def _known(name: str) -> Queue:
    """The queue, or NotFound when nothing ever dispatched to or consumed it (a misspelt name)."""
    queue = Queue(name)
    queue.counts()  # an invalid name raises ValueError here (bad usage)
    if name not in {q.name for q in Queue.all()}:
        raise NotFound(f"no queue {name!r} (nothing dispatched to it or consumed it)")
    return queue


def _limits(limits: QueueLimits) -> dict[str, Any]:
    return {"rate": limits.rate, "per": limits.per, "concurrency": limits.concurrency}


def _limits_text(limits: QueueLimits) -> str:
    parts = []
    if limits.rate is not None:
        parts.append(f"{limits.rate}/{limits.per:g}s")
    if limits.concurrency is not None:
        parts.append(f"concurrency {limits.concurrency}")
    return ", ".join(parts) or "-"


def _summary(queue: Queue) -> dict[str, Any]:
    counts = queue.counts()
    return {"name": queue.name, "counts": {s: int(counts.get(s, 0)) for s in STATES}, "paused": bool(counts.get("paused")),
            "limits": _limits(queue.limits()), "group_limits": _limits(queue.group_limits())}


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def queues(args: argparse.Namespace) -> int:
    found = [_summary(q) for q in Queue.all()]

    def text() -> None:
        if not found:
            print("no queues")
            return
        rows = [["QUEUE", *(s.upper() for s in STATES), "PAUSED", "LIMITS"]]
        for q in found:
            limits = _limits_text(QueueLimits(**q["limits"]))
            rows.append([q["name"], *(str(q["counts"][s]) for s in STATES), "yes" if q["paused"] else "no", limits])
        _table(rows)

    return _out(args, found, text)


def _age(w: WorkerInfo) -> str:
    return f"{time.time() - w.last_seen.timestamp():.0f}s ago"


def _workers_text(found: list[WorkerInfo]) -> None:
    if not found:
        print("no workers")
        return
    rows = [["WORKER", "HOST", "PID", "QUEUES", "CONCURRENCY", "STARTED", "LAST SEEN", "COMPLETED", "FAILED", "RETRIED",
             "JOBS/S", "STATE"]]
    for w in found:
        rows.append([w.id, w.host, str(w.pid) + (f" (pool {w.pool})" if w.pool else ""), ",".join(w.queues), str(w.concurrency),
                     f"{w.started_at:%Y-%m-%d %H:%M:%S}", _age(w), str(w.completed), str(w.failed), str(w.retried),
                     f"{w.completed_rate:.1f}", "live" if w.alive else "gone"])
    _table(rows)


def inspect(args: argparse.Namespace) -> int:
    queue = _known(args.queue)
    first = queue.counts()
    if args.sample > 0:
        started = time.monotonic()
        time.sleep(args.sample)
        second = queue.counts()
        span = time.monotonic() - started
        rates: dict[str, float] | None = {s: (int(second.get(s, 0)) - int(first.get(s, 0))) / span for s in ("completed", "failed")}
    else:
        rates = None
    summary = _summary(queue)
    consumers = workers(queue=queue.name)
    live = [w for w in consumers if w.alive]
    # The workers' own rates over their last minute, over all the queues each consumes.
    worker_rates = {"completed": sum(w.completed_rate for w in live), "failed": sum(w.failed_rate for w in live)}
    data = dict(summary, rates=rates, worker_rates=worker_rates, workers=[w.as_dict() for w in consumers])

    def text() -> None:
        print(f"queue {queue.name}" + ("  (paused)" if summary["paused"] else ""))
        print("  ".join(f"{s} {summary['counts'][s]}" for s in STATES))
        print(f"limits {_limits_text(queue.limits())}; per group {_limits_text(queue.group_limits())}")
        if rates is not None:
            print(f"rates {rates['completed']:.1f} completed/s, {rates['failed']:.1f} failed/s (over {args.sample:g}s)")
        print(f"its {len(live)} live worker(s): {worker_rates['completed']:.1f} completed/s, {worker_rates['failed']:.1f} failed/s "
              "over their last minute (all their queues)")
        _workers_text(consumers)

    return _out(args, data, text)


def workers_(args: argparse.Namespace) -> int:
    found = workers(queue=args.queue)
    return _out(args, [w.as_dict() for w in found], lambda: _workers_text(found))


def _failed_dict(f: FailedJob) -> dict[str, Any]:
    return {"id": f.id, "name": f.name, "failed_at": f.failed_at.isoformat(), "attempts": f.attempts,
            "error_type": f.error.get("type"), "error_message": f.error.get("message")}


def failed(args: argparse.Namespace) -> int:
    queue = _known(args.queue)
    if args.show is not None:
        info = queue.get_job(args.show)
        if info is None:
            raise NotFound(f"no job {args.show!r} on queue {queue.name!r} (never dispatched, or expired)")
        if info.state != "failed" or not info.error:
            raise NotFound(f"job {args.show} on queue {queue.name!r} is {info.state}, not failed")
        error = info.error
        data = {"id": info.id, "name": info.name, "attempt": info.attempt, "max_attempts": info.max_attempts,
                "error_type": error.get("type"), "error_message": error.get("message"), "traceback": error.get("traceback")}

        def show() -> None:
            print(f"{info.id}  {info.name}  failed after {info.attempt} attempt(s)")
            print(f"{error.get('type')}: {error.get('message')}")
            if error.get("traceback"):
                print(str(error["traceback"]).rstrip())

        return _out(args, data, show)
    found = queue.failed(args.limit)

    def text() -> None:
        if not found:
            print(f"no failed jobs on queue {queue.name!r}")
        for f in found:
            print(f"{f.id}  {f.name}  {f.failed_at:%Y-%m-%d %H:%M:%S}  {f.error.get('type')}: {f.error.get('message')}")

    return _out(args, [_failed_dict(f) for f in found], text)


def retry(args: argparse.Namespace) -> int:
    if (args.id is None) == (not args.all):
        raise ValueError("name a job ID to retry, or --all for every failed job (not both)")
    if args.all:
        n = _known(args.queue).retry_failed()
        print(f"retried {n} failed job(s) on queue {args.queue!r}")
    else:
        Queue(args.queue).retry(args.id)
        print(f"retried job {args.id} on queue {args.queue!r}")
    return 0


def delete(args: argparse.Namespace) -> int:
    state = Queue(args.queue).remove(args.id)
    print(f"deleted job {args.id} ({state}) from queue {args.queue!r}")
    return 0


def purge(args: argparse.Namespace) -> int:
    n = _known(args.queue).purge_failed()
    print(f"deleted {n} failed job(s) of queue {args.queue!r}")
    return 0


def empty(args: argparse.Namespace) -> int:
    queue = _known(args.queue)
    if not args.yes:
        waiting = queue.counts()
        print(f"cancel every waiting and delayed job of queue {queue.name!r} ({waiting.get('waiting', 0)} waiting, "
              f"{waiting.get('delayed', 0)} delayed)? [y/N] ", end="", flush=True)
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            print("not emptied", file=sys.stderr)
            return 1
    print(f"cancelled {queue.empty()} job(s) of queue {queue.name!r}")
    return 0


def pause(args: argparse.Namespace) -> int:
    changed = Queue(args.queue).pause()
    print(f"queue {args.queue!r} " + ("paused" if changed else "was paused already"))
    return 0


def resume(args: argparse.Namespace) -> int:
    changed = Queue(args.queue).resume()
    print(f"queue {args.queue!r} " + ("resumed" if changed else "was not paused"))
    return 0


def cancel(args: argparse.Namespace) -> int:
    state = Queue(args.queue).cancel(args.id)
    done = "cancelled" if state in ("waiting", "delayed") else "asked to stop (its worker cancels it)"
    print(f"job {args.id} on queue {args.queue!r} was {state}: {done}")
    return 0


def job(args: argparse.Namespace) -> int:
    from .dispatch import JobHandle

    handle: JobHandle[Any] = JobHandle(args.id, args.queue)
    info = handle.info()
    if info.state == "unknown":
        raise NotFound(f"no job {args.id!r} on queue {args.queue!r} (never dispatched, or expired)")
    logs = handle.logs(limit=args.logs)
    if args.json:
        progress = info.progress
        print(serde.dumps({
            "id": info.id, "queue": info.queue, "state": info.state, "name": info.name, "attempt": info.attempt,
            "max_attempts": info.max_attempts, "priority": info.priority,
            "enqueued_at": info.enqueued_at.isoformat() if info.enqueued_at else None, "payload": info.payload,
            "result": info.result, "error": info.error,
            "progress": None if progress is None else {"value": progress.value, "data": progress.data,
                                                     "at": progress.at.isoformat() if progress.at else None},
            "logs": [{"at": line.at.isoformat(), "level": line.level, "message": line.message, "data": line.data} for line in logs],
        }).decode())
        return 0
    print(f"{info.id}  {info.state}  queue {info.queue}" + (f"  {info.name}" if info.name else "")
          + (f"  attempt {info.attempt}/{info.max_attempts}" if info.attempt is not None else ""))
    if info.progress is not None:
        print(f"progress {info.progress.value:.0%} {serde.dumps(info.progress.data).decode()}  at {info.progress.at:%Y-%m-%d %H:%M:%S}")
    if info.state == "completed":
        print(f"result {serde.dumps(info.result).decode()}")
    if info.error:
        print(f"error {info.error.get('type')}: {info.error.get('message')}")
    for line in logs:
        data = f" {serde.dumps(line.data).decode()}" if line.data else ""
        print(f"{line.at:%Y-%m-%d %H:%M:%S.%f}"[:-3] + f"  {line.level:<7}  {line.message}{data}")
    return 0


def run(command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Runs one command, turning the errors an operator meets into one line and a status."""
    try:
        return command(args)
    except (NotFound, UnknownJobError, UnknownQueueError, JobStateError) as e:
        print(f"fastjobs {args.command}: {e}", file=sys.stderr)
        return 1
    except (ValueError, TypeError) as e:  # an invalid queue name or job id, options that do not go together
        print(f"fastjobs {args.command}: {e}", file=sys.stderr)
        return 2
    except FastJobsError as e:  # Redis unreachable, credentials refused
        print(f"fastjobs {args.command}: {e}", file=sys.stderr)
        return 1


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "queues": queues, "inspect": inspect, "workers": workers_, "failed": failed, "retry": retry, "delete": delete,
    "purge": purge, "empty": empty, "pause": pause, "resume": resume, "cancel": cancel, "job": job,
}
