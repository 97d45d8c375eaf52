"""Prometheus metrics: a worker's counts by queue, job name and outcome, its handlers'
durations, the depth of its queues, served as the Prometheus text format (version 0.0.4) on
``/metrics`` by ``Worker(metrics_port=...)`` / ``fastjobs worker --metrics-port PORT``.

Off (no port), nothing here is imported by the worker and its hot paths are untouched. On, the
worker's ``_run_sync`` and ``_run_async`` are wrapped (``instrument``): each job is timed and
counted in plain dicts of the thread that ran it (no lock per job); failed, retried and
cancelled outcomes are noted by handle where the worker settles them (``Worker._fates``). A
scrape sums the threads' tables. Queue depths come from ``Queue.counts()`` sampled every
``SAMPLE_EVERY`` seconds by a thread of their own, never on a job's path.

A pool (``processes=``) serves one endpoint from its parent: each child records and sends
its tables with its counts (pool.py ``_Reporter``), child #1 samples the queues, and the
parent sums the latest report of every child and the last reports of the children gone.

``render(queues)`` gives the queue families alone, read now: for a dashboard's ``/metrics``.
"""

from __future__ import annotations

import bisect
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

    from .queue import Queue
    from .worker import Worker

__all__ = ["render", "BUCKETS", "CONTENT_TYPE"]

log = logging.getLogger("fastjobs.metrics")

#: The upper bounds (seconds) of the handler duration histogram's buckets (``+Inf`` follows).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
#: How often the queues' depths are read from Redis.
SAMPLE_EVERY = 5.0
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: The outcomes counted by ``fastjobs_jobs_total``.
OUTCOMES = ("completed", "failed", "retried", "cancelled")
_STATES = ("waiting", "delayed", "active", "failed")
_EVER = ("completed", "retried", "cancelled")


def check_port(port: Any) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"metrics_port must be a TCP port number from 1 to 65535, got {port!r}")
    return port


# ---- recording, in a worker process ----


class _Table:
    """One thread's counts: ``outcomes[(queue, name, outcome)]``, ``durations[(queue, name)]``
    (one count per bucket, +Inf last, then the sum of seconds), ``running`` (jobs it runs now)."""

    __slots__ = ("outcomes", "durations", "running")

    def __init__(self) -> None:
        self.outcomes: dict[tuple[str, str, str], int] = {}
        self.durations: dict[tuple[str, str], list[float]] = {}
        self.running = 0


class Recorder:
    """A worker process's counts, one ``_Table`` per thread that runs jobs."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._tables: list[_Table] = []
        self._lock = threading.Lock()
        #: handle -> "failed" / "retried" / "cancelled", or None (handed back: not counted),
        #: noted by the worker where it settles a job any other way than completed.
        self.fates: dict[int, str | None] = {}
        #: The last sample of the queues' counts, by queue (``Sampler``).
        self.queues: dict[str, dict[str, Any]] = {}

    def table(self) -> _Table:
        t: _Table | None = getattr(self._local, "table", None)
        if t is None:
            t = self._local.table = _Table()
            with self._lock:
                self._tables.append(t)
        return t

    def record(self, t: _Table, queue: str, name: str, handle: int, seconds: float) -> None:
        fate = self.fates.pop(handle, "completed") if self.fates else "completed"
        if fate is None:
            return
        key = (queue, name, fate)
        t.outcomes[key] = t.outcomes.get(key, 0) + 1
        h = t.durations.get((queue, name))
        if h is None:
            h = t.durations[(queue, name)] = [0.0] * (len(BUCKETS) + 2)
        h[bisect.bisect_left(BUCKETS, seconds)] += 1
        h[-1] += seconds

    def snapshot(self) -> dict[str, Any]:
        """The tables summed, as JSON-friendly lists (what a pool child sends its parent)."""
        outcomes: dict[tuple[str, str, str], int] = {}
        durations: dict[tuple[str, str], list[float]] = {}
        running = 0
        with self._lock:
            tables = list(self._tables)
        for t in tables:
            running += t.running
            for key, n in dict(t.outcomes).items():  # dict(): a copy taken at once (other threads add keys)
                outcomes[key] = outcomes.get(key, 0) + n
            for pair, h in dict(t.durations).items():
                into = durations.setdefault(pair, [0.0] * len(h))
                for i, v in enumerate(list(h)):
                    into[i] += v
        return {"outcomes": [[*k, n] for k, n in outcomes.items()], "durations": [[*k, h] for k, h in durations.items()],
                "running": running, "queues": self.queues}


def merge(snapshots: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Snapshots summed (a pool's children); ``queues`` from the last one that has them."""
    outcomes: dict[tuple[str, ...], int] = {}
    durations: dict[tuple[str, ...], list[float]] = {}
    out: dict[str, Any] = {"running": 0, "queues": {}}
    for s in snapshots:
        for *k, n in s.get("outcomes", ()):
            outcomes[tuple(k)] = outcomes.get(tuple(k), 0) + n
        for *k, h in s.get("durations", ()):
            into = durations.setdefault(tuple(k), [0.0] * len(h))
            for i, v in enumerate(h):
                into[i] += v
        for key in ("running", "stale", "lost_leases", "handed_back"):
            out[key] = out.get(key, 0) + s.get(key, 0)
        if s.get("queues"):
            out["queues"] = s["queues"]
    out["outcomes"] = [[*k, n] for k, n in outcomes.items()]
    out["durations"] = [[*k, h] for k, h in durations.items()]
    return out


class _Stamping(dict):  # type: ignore[type-arg]
    """The worker's job registry with metrics on: ``_run_sync`` looks each job's class up once,
    as the job starts, so a lookup from a thread that runs a batch (``stamps`` set) notes the
    time. A batch then runs whole, its completions acknowledged together as with metrics off."""

    def __init__(self, jobs: dict[str, Any]) -> None:
        super().__init__(jobs)
        self.local = threading.local()

    def get(self, name: Any, default: Any = None) -> Any:
        stamps = getattr(self.local, "stamps", None)
        if stamps is not None:
            stamps.append(time.perf_counter())
        return dict.get(self, name, default)


def instrument(worker: Worker, rec: Recorder) -> None:
    """Wraps the worker's ``_run_sync`` and ``_run_async`` (instance attributes over the
    class's methods): each job timed, then counted by its outcome. A sync job's time is from
    its start to the next one's (the last one's: to the batch's end, its acknowledgement
    handed to the engine)."""
    from .worker import _HANDLE, _NAME, _QUEUE

    run_sync, run_async = worker._run_sync, worker._run_async
    registry = worker.jobs = _Stamping(worker.jobs)
    local = registry.local
    clock, record = time.perf_counter, rec.record

    def metered_sync(jobs: list[tuple[Any, ...]]) -> None:
        t = rec.table()
        stamps: list[float] = []
        local.stamps = stamps
        t.running = 1
        try:
            run_sync(jobs)
        finally:
            local.stamps = None
            t.running = 0
            stamps.append(clock())
            for i in range(len(stamps) - 1):  # the jobs that started (not those handed back at a stop)
                job = jobs[i]
                cls = registry.get(job[_NAME])
                if cls is None or not cls._is_async:  # an async one is timed on the loop
                    record(t, job[_QUEUE], job[_NAME], job[_HANDLE], stamps[i + 1] - stamps[i])

    async def metered_async(job: tuple[Any, ...]) -> None:
        t = rec.table()  # the loop thread's
        t.running += 1
        started = clock()
        try:
            await run_async(job)
        finally:
            t.running -= 1
        record(t, job[_QUEUE], job[_NAME], job[_HANDLE], clock() - started)

    worker._run_sync = metered_sync  # type: ignore[method-assign]
    worker._run_async = metered_async  # type: ignore[method-assign]


class Sampler:
    """Reads ``Queue.counts()`` of the queues every ``SAMPLE_EVERY`` seconds into
    ``rec.queues``, in a daemon thread of its own."""

    def __init__(self, rec: Recorder, queues: list[str], connection: str) -> None:
        self.rec, self.queues, self.connection = rec, queues, connection
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fastjobs-metrics-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        from .queue import Queue

        while True:
            sample = {}
            for name in self.queues:
                try:
                    sample[name] = Queue(name, connection=self.connection).counts()
                except Exception as e:  # noqa: BLE001 - Redis away: the last sample stays, the next try follows
                    log.debug("could not read the counts of queue %r: %s", name, e)
            if sample:
                self.rec.queues = {**self.rec.queues, **sample}
            if self._stop.wait(SAMPLE_EVERY):
                return


# ---- the text format ----


def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: Any) -> str:
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in labels.items()) + "}"


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 2**53 else repr(float(v))


def _family(out: list[str], name: str, kind: str, help: str) -> None:
    out.append(f"# HELP {name} {help}")
    out.append(f"# TYPE {name} {kind}")


def _queue_lines(out: list[str], queues: Mapping[str, Mapping[str, Any]]) -> None:
    if not queues:
        return
    _family(out, "fastjobs_queue_jobs", "gauge", "Jobs of the queue in each state now (waiting, delayed, active, failed).")
    for q, c in sorted(queues.items()):
        for state in _STATES:
            out.append(f"fastjobs_queue_jobs{_labels(queue=q, state=state)} {_num(c.get(state, 0))}")
    _family(out, "fastjobs_queue_paused", "gauge", "1 while the queue is paused.")
    for q, c in sorted(queues.items()):
        out.append(f"fastjobs_queue_paused{_labels(queue=q)} {1 if c.get('paused') else 0}")
    _family(out, "fastjobs_queue_stalled_total", "counter",
            "Jobs whose lease expired (their worker died or froze) and that went back to the queue, since the queue began.")
    for q, c in sorted(queues.items()):
        out.append(f"fastjobs_queue_stalled_total{_labels(queue=q)} {_num(c.get('stalled', 0))}")
    _family(out, "fastjobs_queue_outcomes_total", "counter", "Outcomes of the queue's jobs by every worker, since the queue began.")
    for q, c in sorted(queues.items()):
        for what in _EVER:
            out.append(f"fastjobs_queue_outcomes_total{_labels(queue=q, outcome=what)} {_num(c.get(what, 0))}")


def render_worker(s: Mapping[str, Any], info: Mapping[str, Any]) -> str:
    """A worker's (or a pool's) ``/metrics``: ``s`` a snapshot (``Recorder.snapshot``, or
    ``merge`` of a pool's), ``info`` the labels of ``fastjobs_worker_info``."""
    out: list[str] = []
    _family(out, "fastjobs_worker_info", "gauge", "The worker: its version, id, host, queues, processes and concurrency.")
    out.append(f"fastjobs_worker_info{_labels(**info)} 1")
    _family(out, "fastjobs_jobs_total", "counter", "Jobs this worker ran, by queue, job name and outcome.")
    seen = {(q, n) for q, n, _o, _c in s["outcomes"]}
    counts = {(q, n, o): c for q, n, o, c in s["outcomes"]}
    for q, n in sorted(seen):
        for o in OUTCOMES:
            out.append(f"fastjobs_jobs_total{_labels(queue=q, name=n, outcome=o)} {counts.get((q, n, o), 0)}")
    _family(out, "fastjobs_job_duration_seconds", "histogram", "How long the handlers ran, by queue and job name.")
    for q, n, h in sorted(s["durations"], key=lambda d: (d[0], d[1])):
        cumulative = 0.0
        for bound, c in zip((*BUCKETS, "+Inf"), h[:-1]):
            cumulative += c
            out.append(f"fastjobs_job_duration_seconds_bucket{_labels(queue=q, name=n, le=bound)} {_num(cumulative)}")
        out.append(f"fastjobs_job_duration_seconds_sum{_labels(queue=q, name=n)} {_num(h[-1])}")
        out.append(f"fastjobs_job_duration_seconds_count{_labels(queue=q, name=n)} {_num(cumulative)}")
    _family(out, "fastjobs_jobs_running", "gauge", "Jobs this worker runs now.")
    out.append(f"fastjobs_jobs_running {s.get('running', 0)}")
    for key, help in (("stale", "Outcomes Redis refused because the job's lease had expired while this worker ran it."),
                      ("lost_leases", "Leases this worker held that expired before it could renew them."),
                      ("handed_back", "Jobs this worker handed back to their queues (at a stop, or past the grace period).")):
        _family(out, f"fastjobs_worker_{key}_total", "counter", help)
        out.append(f"fastjobs_worker_{key}_total {s.get(key, 0)}")
    _queue_lines(out, s.get("queues") or {})
    return "\n".join(out) + "\n"


def render(queues: Iterable[str | Queue], *, connection: str = "default") -> str:
    """The queue families of the Prometheus text format for ``queues`` (names or ``Queue``
    objects; a ``Queue`` brings its own connection), read from Redis now: jobs by state,
    paused, stalled and outcomes since the queue began. For a dashboard's ``/metrics``."""
    from .queue import Queue

    counts = {}
    for q in queues:
        queue = q if isinstance(q, Queue) else Queue(q, connection=connection)
        counts[queue.name] = queue.counts()
    out: list[str] = []
    _queue_lines(out, counts)
    return "\n".join(out) + "\n" if out else ""


# ---- the endpoint ----


def worker_info(worker_id: str, queues: list[str], concurrency: int, processes: int) -> dict[str, Any]:
    import socket

    from . import __version__

    return {"version": __version__, "worker": worker_id, "host": socket.gethostname(), "pid": os.getpid(),
            "queues": ",".join(queues), "processes": processes, "concurrency": concurrency}


def serve(port: int, text: Callable[[], str]) -> ThreadingHTTPServer:
    """Serves ``text()`` on ``GET /metrics`` (on every interface), in a daemon thread; raises
    ``ValueError`` when the port cannot be bound. ``shutdown()`` and ``server_close()`` end it."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self.send_error(404, "only /metrics is served here")
                return
            try:
                body = text().encode()
            except Exception:  # noqa: BLE001 - a scrape must not take the worker down
                log.exception("could not render the metrics")
                self.send_error(500)
                return
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a scrape every few seconds: not worth a log line

    try:
        server = ThreadingHTTPServer(("", port), Handler)
    except OSError as e:
        raise ValueError(f"metrics_port {port}: cannot listen on it ({e.strerror or e})") from None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="fastjobs-metrics", daemon=True).start()
    log.info("metrics served on port %d at /metrics", port)
    return server
