"""The ``fastjobs`` command: ``fastjobs worker MODULE... --queue Q --concurrency N``,
``fastjobs enqueue MODULE:JOB --from FILE.jsonl``, ``fastjobs schedule list|remove KEY|clear``,
``fastjobs events QUEUE``, ``fastjobs db init URL`` (the PostgreSQL store's schema),
``fastjobs dashboard`` (the web dashboard, fastjobs/dashboard/) and the operator's commands of
admin.py (queues, inspect, workers, failed, retry, delete, purge, empty, pause, resume, cancel,
job)."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

from . import __version__, config, serde
from .errors import AuthenticationError, FastJobsError
from .job import registry

__all__ = ["main"]


def _queues(specs: list[str]) -> list[str] | dict[str, int]:
    """``--queue`` values: names (strict order), or ``NAME,WEIGHT`` on every one (weighted)."""
    weighted = [q for q in specs if "," in q]
    if not weighted:
        return specs
    if len(weighted) != len(specs):
        raise ValueError("give a weight to every --queue (NAME,WEIGHT) or to none")
    out: dict[str, int] = {}
    for spec in specs:
        name, _, weight = spec.rpartition(",")
        try:
            out[name] = int(weight)
        except ValueError:
            raise ValueError(f"--queue {spec!r}: the weight after the comma must be an integer") from None
    return out


def _at_least_one(value: str, also: str = "") -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1{also}, got {value!r}")
    return n


def _processes(value: str) -> int | str:
    return value if value == "auto" else _at_least_one(value, ", or auto")


def _megabytes(value: str) -> float:
    try:
        mb = float(value)
    except ValueError:
        mb = 0.0
    if not mb > 0 or mb == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of MB above 0, got {value!r}")
    return mb


def _worker(args: argparse.Namespace) -> int:
    from .worker import Worker

    _connect(args)
    sys.path.insert(0, os.getcwd())
    for name in args.modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            print(f"fastjobs: cannot import {name!r}: {e}", file=sys.stderr)
            return 2
        except BaseException:  # noqa: BLE001 - the module's own error: its traceback, before any worker starts
            print(f"fastjobs: importing {name!r} failed:\n{traceback.format_exc()}", file=sys.stderr)
            return 2
    try:
        config.client()  # a bad URL in $FASTJOBS_URL
    except ValueError as e:
        raise _Refused(e) from None
    try:
        w = Worker(
            _queues(args.queue or ["default"]),
            concurrency=args.concurrency,
            prefetch=args.prefetch,
            lease=args.lease,
            grace=args.grace,
            scheduler=not args.no_scheduler,
            processes=args.processes,
            max_jobs_per_child=args.max_jobs_per_child,
            max_memory_per_child=args.max_memory_per_child,
            start_method=args.start_method,
            reload=args.reload,
            callback_secret=args.callback_secret,
            callback_attempts=args.callback_attempts,
            callback_backoff=args.callback_backoff,
            metrics_port=args.metrics_port,
            registry_interval=args.registry_interval,
        )
    except ValueError as e:  # an option out of range
        print(f"fastjobs worker: {_flagged(e)}", file=sys.stderr)
        return 2
    if w._pool is not None:  # a reload imports the modules named here again, with the jobs'
        w._pool.modules = sorted(set(w._pool.modules) | set(args.modules))
    if not w.jobs:
        print(f"fastjobs: the modules {args.modules} register no job", file=sys.stderr)
        return 2
    if not {cls.queue for cls in w.jobs.values()} & set(w.queues):
        logging.getLogger("fastjobs.worker").warning(
            "no registered job routes to the consumed queues %s: jobs go to %s (add -q for their queues)", w.queues,
            ", ".join(f"{name} -> {cls.queue}" for name, cls in sorted(w.jobs.items())))
    try:
        w._check_connection()  # settings that can never work: exit 1 before "worker started"
    except (FastJobsError, ValueError) as e:
        raise _Refused(e) from None
    try:
        s = w.run()
    except ValueError as e:  # before it started: the metrics port cannot be listened on
        print(f"fastjobs worker: {_flagged(e)}", file=sys.stderr)
        return 2
    print(
        f"fastjobs worker: {s.completed} completed, {s.retried} retried, {s.failed} failed, "
        f"{s.handed_back} handed back, {s.stale} stale, {s.cancelled} cancelled in {s.seconds:.1f}s"
        + (f"; children replaced: {sum(s.restarts.values())} ("
           + ", ".join(f"{n} {why}" for why, n in sorted(s.restarts.items())) + ")" if s.restarts else ""),
        file=sys.stderr,
    )
    return 0


def _flagged(e: ValueError) -> str:
    """A Worker's message, naming the command's flag instead of the parameter."""
    message = str(e)
    for param in ("max_jobs_per_child", "max_memory_per_child", "processes", "start_method", "concurrency", "prefetch",
                  "lease", "grace", "callback_secret", "callback_attempts", "callback_backoff", "metrics_port",
                  "registry_interval"):
        message = re.sub(rf"\b{param}\b", "--" + param.replace("_", "-"), message)
    return message


class _BadLine(ValueError):
    pass


def _lines(path: str) -> Iterator[Any]:
    """Payloads of a JSON-lines file (``-`` for stdin), one per non-blank line."""
    import orjson

    f = sys.stdin.buffer if path == "-" else open(path, "rb")
    try:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError as e:
                raise _BadLine(f"line {number}: not valid JSON ({e})") from None
    finally:
        if f is not sys.stdin.buffer:
            f.close()


def _enqueue(args: argparse.Namespace) -> int:
    from .bulk import BulkDispatchError
    from .job import Job

    _connect(args)
    module, _, name = args.job.partition(":")
    if not name:
        print("fastjobs: name the job as MODULE:NAME (e.g. myapp.jobs:SendEmail)", file=sys.stderr)
        return 2
    sys.path.insert(0, os.getcwd())
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        print(f"fastjobs: cannot import {module!r}: {e}", file=sys.stderr)
        return 2
    job = getattr(mod, name, None)
    job = getattr(job, "job_class", job)  # a @job function
    if not (isinstance(job, type) and issubclass(job, Job)):
        job = registry().get(name)
    if job is None:
        print(f"fastjobs: {module} has no job named {name!r}", file=sys.stderr)
        return 2
    options: dict[str, Any] = {}
    for opt in ("queue", "delay", "attempts", "priority"):
        value = getattr(args, opt)
        if value is not None:
            if opt == "delay":
                try:
                    value = float(value)  # plain seconds
                except ValueError:
                    pass  # a duration string, checked by the dispatch
            options[opt] = value
    if args.path != "-" and not os.path.exists(args.path):
        print(f"fastjobs: no such file: {args.path}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        result = job.dispatch_many(_lines(args.path), progress=not args.quiet, chunk_size=args.chunk_size, **options)
    except BulkDispatchError as e:
        cause = e.__cause__
        where = str(cause) if isinstance(cause, _BadLine) else f"{type(cause).__name__}: {cause}"
        print(f"\nfastjobs enqueue: stopped at {where}", file=sys.stderr)
        print(f"fastjobs enqueue: {e.committed:,} job(s) were committed (the first {e.committed:,} payloads); "
              "nothing after them was sent", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"fastjobs enqueue: {e}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - started
    rate = result.count / seconds if seconds > 0 else 0.0
    queue = options.get("queue", job.queue)
    print(f"fastjobs enqueue: {result.count:,} {job.name} job(s) on queue {queue!r} in {seconds:.2f}s ({rate:,.0f} jobs/s)",
          file=sys.stderr)
    return 0


class _Refused(Exception):
    """Settings that can never work (a bad URL, credentials Redis refuses, a database it does
    not have, a host that does not exist): one line on stderr and exit status 1."""


def _connect(args: argparse.Namespace) -> None:
    try:
        if args.url:
            config.configure(args.url, prefix=args.prefix)
        elif args.prefix:
            config.configure(prefix=args.prefix)
    except ValueError as e:  # its message masks the password
        raise _Refused(e) from None


def _schedule(args: argparse.Namespace) -> int:
    from .schedule import JobScheduler

    _connect(args)
    if args.action == "list":
        found = JobScheduler.list()
        if not found:
            print("no schedules")
        for s in found:
            timing = f"cron {s.repeat['pattern']!r} {s.repeat['tz']}" if "pattern" in s.repeat else f"every {s.repeat['every']} ms"
            last = s.last_run.isoformat(timespec="seconds") if s.last_run else "never"
            print(f"{s.key}  {s.job} -> {s.queue}  {timing}  next {s.next_run.isoformat(timespec='seconds')}  "
                  f"runs {s.runs}  last {last}  ({s.origin})")
        return 0
    if args.action == "remove":
        if not args.keys:
            print("fastjobs schedule remove: name the KEY(s) to remove", file=sys.stderr)
            return 2
        missing = [k for k in args.keys if not JobScheduler.remove(k)]
        for k in missing:
            print(f"fastjobs schedule remove: no schedule {k!r}", file=sys.stderr)
        return 1 if missing else 0
    print(f"removed {JobScheduler.clear()} schedule(s)")
    return 0


def _admin(args: argparse.Namespace) -> int:
    from . import admin

    _connect(args)
    return admin.run(admin.COMMANDS[args.command], args)


def _events(args: argparse.Namespace) -> int:
    from .queue import Queue

    _connect(args)
    try:
        stream = Queue(args.queue).events(args.since, timeout=args.timeout)
    except (TypeError, ValueError) as bad:
        raise _Refused(bad) from None
    for e in stream:
        if args.json:
            print(serde.dumps({"id": e.id, "type": e.type, "queue": e.queue, "job_id": e.job_id, "name": e.name,
                               "at": e.at.isoformat(), "attempt": e.attempt, "data": e.data}).decode(), flush=True)
        else:
            data = f" {serde.dumps(e.data).decode()}" if e.data else ""
            print(f"{e.at:%H:%M:%S.%f}"[:-3] + f"  {e.type:<9}  {e.job_id}  {e.name or ''}{data}", flush=True)
    return 0


def _db(args: argparse.Namespace) -> int:
    from .postgres import init_db

    url = args.url or os.environ.get("FASTJOBS_URL")
    if not url:
        print("fastjobs db init: name the database: fastjobs db init postgresql://user@host:5432/dbname "
              "(or set $FASTJOBS_URL)", file=sys.stderr)
        return 2
    try:
        applied = init_db(url)
    except (FastJobsError, ValueError) as e:  # its message masks the password
        raise _Refused(e) from None
    where = config.mask_url(url)
    if args.json:
        print(serde.dumps({"url": where, "applied": applied}).decode())
    elif applied:
        print(f"fastjobs db init: {where}: schema versions {', '.join(map(str, applied))} applied")
    else:
        print(f"fastjobs db init: {where}: the schema is up to date")
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        print("fastjobs dashboard: uvicorn is not installed: pip install 'fastjobs[dashboard]'", file=sys.stderr)
        return 2
    import secrets

    from .dashboard import TOKEN_ENV, app

    _connect(args)
    try:
        config.client().check_connection()
    except (FastJobsError, ValueError) as e:
        raise _Refused(e) from None
    token = args.token or os.environ.get(TOKEN_ENV) or None
    if token is None and not args.read_only:
        token = secrets.token_urlsafe(18)
        print(f"fastjobs dashboard: no --token or ${TOKEN_ENV}: actions need this one: {token}", file=sys.stderr)
    try:
        dashboard = app(token=token, read_only=args.read_only)
    except ValueError as e:
        raise _Refused(e) from None
    print(f"fastjobs dashboard: http://{args.host}:{args.port}/" + (" (read-only)" if args.read_only else ""), file=sys.stderr)
    uvicorn.run(dashboard, host=args.host, port=args.port, log_level="warning", lifespan="on")
    return 0


class _Parser(argparse.ArgumentParser):
    """Bad usage is one line on stderr (pointing at ``--help``) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="fastjobs", description="fastjobs: background jobs with a Rust engine on Redis")
    p.add_argument("--version", action="version", version=f"fastjobs {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker", help="run jobs from queues", description="Run the jobs the MODULES register.")
    w.add_argument("modules", nargs="+", metavar="MODULE", help="modules that define the jobs (imported, e.g. myapp.jobs)")
    w.add_argument("-q", "--queue", action="append",
                   help="queue to consume; repeat for several, highest priority first (default: default); "
                        "NAME,WEIGHT on every one for the weighted order instead (e.g. -q emails,3 -q reports,1)")
    w.add_argument("-c", "--concurrency", type=int, default=1, help="handler threads / concurrent async jobs (default 1)")
    w.add_argument("--prefetch", type=int, default=None,
                   help="jobs kept reserved ahead of the handlers (default: adaptive, ~50 ms of work, at most max(8000, 4 x concurrency))")
    w.add_argument("--lease", type=float, default=30.0, help="seconds a reserved job stays leased without a heartbeat (default 30)")
    w.add_argument("--grace", type=float, default=30.0, help="seconds a graceful stop waits for running jobs (default 30)")
    w.add_argument("--url", default=None, help="Redis URL (default: $FASTJOBS_URL or redis://127.0.0.1:6379/0)")
    w.add_argument("--prefix", default=None, help="key prefix (default: $FASTJOBS_PREFIX or fj)")
    w.add_argument("--no-scheduler", action="store_true", help="do not promote delayed jobs or reap leases in this process")
    w.add_argument("--log-level", type=_log_level, default="INFO", help="logging level: DEBUG, INFO (default), WARNING, ERROR")
    w.add_argument("--log-format", choices=["text", "json"], default="text",
                   help="text lines (default), or one JSON object per line (time, level, logger, message, job_id, job_name, queue)")
    w.add_argument("--registry-interval", type=float, default=5.0, metavar="SECONDS",
                   help="seconds between two refreshes of the worker's entry in the worker registry (default 5)")
    w.add_argument("-p", "--processes", type=_processes, default=None, metavar="N|auto",
                   help="run a pool of N worker processes (auto: one per usable core), each with --concurrency threads")
    w.add_argument("--max-jobs-per-child", type=_at_least_one, default=None, metavar="N",
                   help="replace a pool child after it ran N jobs")
    w.add_argument("--max-memory-per-child", type=_megabytes, default=None, metavar="MB",
                   help="replace a pool child once its resident memory passes MB")
    w.add_argument("--start-method", choices=["fork", "spawn"], default=None,
                   help="how pool children start (default: fork on Linux, spawn elsewhere)")
    w.add_argument("--reload", action="store_true",
                   help="development: replace the pool's children when a .py file of the job modules' directories changes")
    w.add_argument("--callback-secret", default=None, metavar="SECRET",
                   help="sign the jobs' callbacks with SECRET (default: $FASTJOBS_CALLBACK_SECRET, which ps does not show)")
    w.add_argument("--callback-attempts", type=int, default=5, metavar="N", help="tries per callback (default 5)")
    w.add_argument("--callback-backoff", type=float, default=4.0, metavar="SECONDS",
                   help="wait after a callback's first failed try, doubled after each (default 4)")
    w.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                   help="serve Prometheus metrics on http://0.0.0.0:PORT/metrics (a pool: one endpoint for all its children)")
    w.set_defaults(func=_worker)

    e = sub.add_parser("enqueue", help="dispatch one job per line of a JSON-lines file",
                       description="Dispatch one JOB per line of FILE (a JSON payload per line), in bulk.")
    e.add_argument("job", metavar="JOB", help="MODULE:NAME of the job class or @job function (e.g. myapp.jobs:SendEmail)")
    e.add_argument("--from", dest="path", required=True, metavar="FILE", help="JSON-lines file of payloads, - for stdin")
    e.add_argument("-q", "--queue", default=None, help="queue (default: the job's)")
    e.add_argument("--delay", default=None, help="delay every job: seconds or '30s', '10m', '2h', '3d'")
    e.add_argument("--attempts", type=int, default=None, help="attempts per job (default: the job's)")
    e.add_argument("--priority", type=int, default=None, help="0 (default) to 9, higher runs first")
    e.add_argument("--chunk-size", type=int, default=10_000, help="payloads per write (default 10000)")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.add_argument("--url", default=None, help="Redis URL (default: $FASTJOBS_URL or redis://127.0.0.1:6379/0)")
    e.add_argument("--prefix", default=None, help="key prefix (default: $FASTJOBS_PREFIX or fj)")
    e.set_defaults(func=_enqueue)

    s = sub.add_parser("schedule", help="list or remove schedules (JobScheduler)",
                       description="list: every schedule with its next run; remove KEY...: delete those; clear: delete all.")
    s.add_argument("action", choices=["list", "remove", "clear"])
    s.add_argument("keys", nargs="*", metavar="KEY", help="schedule keys (remove)")
    s.add_argument("--url", default=None, help="Redis URL (default: $FASTJOBS_URL or redis://127.0.0.1:6379/0)")
    s.add_argument("--prefix", default=None, help="key prefix (default: $FASTJOBS_PREFIX or fj)")
    s.set_defaults(func=_schedule)

    j = _command(sub, "job", "one job's state, progress and log lines",
                 "Print the state of job ID on QUEUE, its last progress, its result or error, and its log lines.", "queue", "id")
    j.add_argument("--logs", type=int, default=100, metavar="N", help="log lines shown, oldest first (default 100)")
    _admin_commands(sub)

    v = _command(sub, "events", "follow a queue's events (Queue.set_events)",
                 "Print QUEUE's events as they happen, one line per job and change.", "queue", json=False)
    v.add_argument("--since", default="$", help="'$' new events only (default), '0' every event kept, or an event id to resume after")
    v.add_argument("--timeout", type=float, default=None, help="stop after this many seconds without an event (default: never)")
    v.add_argument("--json", action="store_true", help="one JSON object per line")
    v.set_defaults(func=_events)

    db = sub.add_parser("db", help="the PostgreSQL store's schema: fastjobs db init URL",
                        description="init: create the fastjobs schema in a PostgreSQL database, or upgrade it to this "
                                    "version's (running it again changes nothing).")
    db.add_argument("action", choices=["init"])
    db.add_argument("url", nargs="?", default=None, metavar="URL",
                    help="postgresql://user[:password]@host[:port]/database[?sslmode=...] (default: $FASTJOBS_URL)")
    db.add_argument("--json", action="store_true", help="print one JSON document: the URL (password masked) and the versions applied")
    db.set_defaults(func=_db)

    d = sub.add_parser("dashboard", help="serve the web dashboard (needs uvicorn: fastjobs[dashboard])",
                       description="Serve the web dashboard: queues, throughput, failed jobs, schedules, jobs and workers.")
    d.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    d.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    d.add_argument("--read-only", action="store_true", help="hide and refuse every action (retry, delete, purge, pause, resume, cancel)")
    d.add_argument("--token", default=None,
                   help="token the actions need (default: $FASTJOBS_DASHBOARD_TOKEN, which ps does not show; else a random one, printed)")
    d.add_argument("--url", default=None, help="Redis URL (default: $FASTJOBS_URL or redis://127.0.0.1:6379/0)")
    d.add_argument("--prefix", default=None, help="key prefix (default: $FASTJOBS_PREFIX or fj)")
    d.set_defaults(func=_dashboard)
    return p


def _command(sub: Any, name: str, help: str, description: str, *positional: str, json: bool = True) -> argparse.ArgumentParser:
    """An operator's command (admin.py): its positional QUEUE/ID, --json, --url and --prefix."""
    c: argparse.ArgumentParser = sub.add_parser(name, help=help, description=description)
    for p in positional:
        c.add_argument(p, metavar=p.upper())
    if json:
        c.add_argument("--json", action="store_true", help="print one JSON document")
    c.add_argument("--url", default=None, help="Redis URL (default: $FASTJOBS_URL or redis://127.0.0.1:6379/0)")
    c.add_argument("--prefix", default=None, help="key prefix (default: $FASTJOBS_PREFIX or fj)")
    c.set_defaults(func=_admin)
    return c


def _admin_commands(sub: Any) -> None:
    _command(sub, "queues", "every queue with its counts, paused, limits", "List every known queue with its jobs per state.")
    i = _command(sub, "inspect", "one queue: counts, limits, rates, workers",
                 "Show QUEUE's jobs per state, whether it is paused, its limits, its completed and failed jobs per second "
                 "(the counters sampled --sample seconds apart) and the workers consuming it.", "queue")
    i.add_argument("--sample", type=float, default=1.0, metavar="SECONDS",
                   help="seconds between the two samples of the rates (default 1; 0: no rates)")
    w = _command(sub, "workers", "live workers (the worker registry)",
                 "List the workers of the registry: host, pid, queues, concurrency, started, last seen, jobs done; "
                 "workers not seen for three refresh intervals are shown gone.")
    w.add_argument("-q", "--queue", default=None, help="only the workers consuming this queue")
    f = _command(sub, "failed", "a queue's failed jobs, or one's traceback",
                 "List QUEUE's failed jobs, oldest first (id, name, when, error), or with --show ID one's traceback.", "queue")
    f.add_argument("--limit", type=_at_least_one, default=100, metavar="N", help="jobs listed (default 100)")
    f.add_argument("--show", default=None, metavar="ID", help="print this failed job's error and traceback")
    r = _command(sub, "retry", "retry a failed job, or every one (--all)",
                 "Put failed job ID (or with --all every failed job) of QUEUE back in the queue, attempts reset.", "queue",
                 json=False)
    r.add_argument("id", metavar="ID", nargs="?", default=None)
    r.add_argument("--all", action="store_true", help="every failed job of the queue")
    _command(sub, "delete", "delete a job that is not running (Queue.remove)",
             "Delete every trace of job ID of QUEUE (waiting, delayed, failed or completed).", "queue", "id", json=False)
    _command(sub, "purge", "delete a queue's failed jobs", "Delete every failed job of QUEUE.", "queue", json=False)
    e = _command(sub, "empty", "cancel a queue's waiting and delayed jobs",
                 "Cancel every waiting and delayed job of QUEUE (asks first unless --yes).", "queue", json=False)
    e.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    _command(sub, "pause", "workers stop taking jobs from a queue", "Pause QUEUE: workers take none of its jobs until resumed.",
             "queue", json=False)
    _command(sub, "resume", "workers take jobs from a paused queue again", "Resume QUEUE.", "queue", json=False)
    _command(sub, "cancel", "cancel a job", "Cancel job ID of QUEUE: a waiting or delayed one at once, a running one's "
             "worker is asked to stop it.", "queue", "id", json=False)


def _log_level(value: str) -> str:
    name = value.upper()
    if name not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise argparse.ArgumentTypeError(f"must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got {value!r}")
    return name


def main(argv: Sequence[str] | None = None) -> int:
    from .jsonlog import setup_logging

    args = parser().parse_args(argv)
    setup_logging(getattr(args, "log_level", "INFO"), getattr(args, "log_format", "text"))
    try:
        return int(args.func(args))
    except (_Refused, AuthenticationError) as e:
        print(f"fastjobs {args.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
