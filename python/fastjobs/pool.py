"""A pool of worker processes from one command: ``fastjobs worker MODULE --processes N``, or
``Worker(..., processes=N)``.

The parent imports the job modules once and forks the children (copy-on-write; ``spawn``
starts fresh interpreters that import them, for platforms where fork is unsafe). The parent
never runs handlers and never talks to Redis: it forks, watches and signals. Each child is a
plain worker process (``Worker.run``) with its own engine and connections, made after the fork.

What the parent does:

- restarts a child that died (a signal, a segfault, the OOM killer, a job calling
  ``os._exit``), at once the first time, then with a growing delay while children keep dying
  within seconds of their start; the next child it starts ends the dead one's leases at once
  (``Client.expire_worker``: its jobs go back to their queues, to run alone, see the README's
  Reliability), and logs which jobs it held, and which one was running if it ran alone;
- recycles children: after ``max_jobs_per_child`` jobs, or once their memory (RSS) passes
  ``max_memory_per_child`` MB, a child stops taking jobs, finishes its running ones, hands
  back its prefetched ones and exits; a new one takes its place;
- SIGTERM/SIGINT: graceful stop of every child (each within its grace); a second signal:
  immediate. SIGHUP: re-imports the job modules and replaces every child gracefully (new
  code; if the modules fail to import, the old children keep running). SIGTTIN/SIGTTOU: one
  child more/less. ``reload=True`` sends the SIGHUP when a ``.py`` file under the current
  directory changes (the ``watchfiles`` package, watched from a process of its own);
- the scheduler (promotion of delayed jobs, reaping of leases, cron) runs in exactly one
  child: the first one started while no other running child has it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import select
import signal
import subprocess
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from . import config
from .jsonlog import JsonFormatter, setup_logging

__all__ = ["usable_cores", "Pool"]

log = logging.getLogger("fastjobs.pool")

#: A child that dies within this many seconds of its start is restarted after a delay that
#: doubles with each such death in a row (from 0.5 s, at most 30 s).
QUICK_DEATH = 5.0
#: After its grace, a child still has this long to hand its jobs back before it is killed.
HAND_BACK = 10.0


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity, lowered by a cgroup CPU quota
    (containers: ``cpu.max`` of cgroup v2, ``cpu.cfs_quota_us`` of v1), rounded up."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_quota()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def _cgroup_quota() -> float | None:
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for cpu_max in ((f"/sys/fs/cgroup{path}/cpu.max", "/sys/fs/cgroup/cpu.max") if controllers == "" else ()):
            try:
                with open(cpu_max) as f:
                    quota, period = f.read().split()
                return None if quota == "max" else int(quota) / int(period)
            except (OSError, ValueError):
                continue
        if "cpu" in controllers.split(","):
            base = "/sys/fs/cgroup/cpu,cpuacct" if os.path.isdir("/sys/fs/cgroup/cpu,cpuacct") else "/sys/fs/cgroup/cpu"
            try:
                with open(f"{base}/cpu.cfs_quota_us") as f:
                    quota_us = int(f.read())
                with open(f"{base}/cpu.cfs_period_us") as f:
                    period_us = int(f.read())
                return None if quota_us <= 0 else quota_us / period_us
            except (OSError, ValueError):
                return None
    return None


def rss_mb() -> float:
    """This process's resident memory in MB (Linux: now; elsewhere: its peak so far)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 1e6 if sys.platform == "darwin" else peak / 1e3


@dataclass
class _Child:
    number: int  # for the logs: child #1, #2, ... (the lowest free number)
    pid: int
    worker_id: str
    started: float
    status_fd: int
    scheduler: bool
    stats: dict[str, int] = field(default_factory=dict)
    leaving: str | None = None  # why it said it exits (a recycling), from its last report
    retiring: bool = False  # asked to stop (reload, one child less, the pool's stop): not replaced
    buffer: bytes = b""
    metrics: dict[str, Any] | None = None  # its last metrics snapshot (metrics.py), with metrics on
    # A spawned child's Popen, kept: dropped while it runs, subprocess would reap it on its own
    # later and this pool's waitpid would never hear of its end.
    proc: subprocess.Popen[bytes] | None = None

    def __str__(self) -> str:
        return f"child #{self.number} (pid {self.pid})"


@dataclass
class _Restart:
    at: float  # monotonic time it is due
    number: int


class Pool:
    """The supervisor; see the module's docstring. ``spec`` is what a child needs to build its
    worker (``_child_main``: ``make_worker(queues, **options)``, the ``Worker`` class, given so
    that this module does not import the one that imports it), ``modules`` the job modules to
    import again on a reload."""

    def __init__(
        self,
        spec: dict[str, Any],
        make_worker: Callable[..., Any],
        *,
        processes: int,
        modules: list[str],
        start_method: str,
        grace: float,
        reload: bool,
    ) -> None:
        self.spec = spec
        self.make_worker = make_worker
        self.target = processes
        self.modules = modules
        self.start_method = start_method
        self.grace = grace
        self.reload = reload
        self.children: dict[int, _Child] = {}  # by pid
        self.restarts: list[_Restart] = []
        self.quick_deaths = 0  # children in a row that died within QUICK_DEATH of their start
        self.dead_workers: list[dict[str, str]] = []  # leases for the next child to end
        self.stats: Counter[str] = Counter()  # counts of children gone
        self.why: Counter[str] = Counter()  # children replaced, by why
        self.signals: list[int] = []
        self.stopping = 0  # signals to stop received
        self.kill_at: float | None = None
        self.watcher: subprocess.Popen[bytes] | None = None
        self._wake: tuple[int, ...] = ()
        self.metrics_gone: dict[str, Any] = {}  # the children gone: their last metrics, summed

    # ---- the parent's loop ----

    def check_reload(self) -> None:
        """``reload`` needs the watchfiles package: raises before anything starts without it."""
        if self.reload:
            try:
                import watchfiles  # noqa: F401
            except ImportError:
                raise ValueError("reload needs the watchfiles package: pip install 'fastjobs[reload]'") from None

    def run(self) -> dict[str, Any]:
        """Runs the pool until it is stopped; returns the children's counts summed, and
        ``restarts``: children replaced, by why."""
        started = time.monotonic()
        served = None
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        self._wake = (wake_r, wake_w)
        old_fd = signal.set_wakeup_fd(wake_w)
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGCHLD)
        old = {s: signal.signal(s, self._note_signal) for s in handled}
        try:
            log.info("pool started: %d process(es), %s, pid %d", self.target, self.start_method, os.getpid())
            if self.reload:
                self._start_watcher()
            served = self._serve_metrics()
            for _ in range(self.target):
                self._start_child()
            while self.children or (not self.stopping and self.restarts):
                self._handle_signals()
                self._reap()
                self._due_restarts()
                self._kill_late()
                self._wait(wake_r)
        finally:
            if served is not None:
                served.shutdown()
                served.server_close()
            signal.set_wakeup_fd(old_fd)
            for s, h in old.items():
                signal.signal(s, h)
            os.close(wake_r)
            os.close(wake_w)
            self._stop_watcher()
        if self.stopping > 1:
            log.warning("second signal: the pool exited at once; leases of jobs that were running expire and go back")
            os._exit(130)
        totals: dict[str, Any] = dict(self.stats)
        totals["seconds"] = time.monotonic() - started
        totals["restarts"] = dict(self.why)
        return totals

    def _serve_metrics(self) -> Any:
        """``metrics_port``: one endpoint for every child, served from this process."""
        port = self.spec.get("metrics_port")
        if port is None:
            return None
        from . import metrics

        info = metrics.worker_info(f"pool-{os.getpid()}", list(self.spec["queues"]), self.spec["concurrency"], self.target)
        return metrics.serve(port, lambda: metrics.render_worker(self.metrics_snapshot(), dict(info, processes=self.target)))

    def metrics_snapshot(self) -> dict[str, Any]:
        """The children's metrics summed: the latest report of each running child, and the
        last ones of the children gone."""
        from .metrics import merge

        live = [c.metrics for c in list(self.children.values()) if c.metrics]
        return merge([self.metrics_gone, *live])

    def stop(self) -> None:
        """A graceful stop, as SIGTERM (thread-safe)."""
        self.signals.append(signal.SIGTERM)
        if self._wake:
            try:
                os.write(self._wake[1], b"\0")
            except OSError:
                pass

    def _note_signal(self, signum: int, frame: Any) -> None:
        self.signals.append(signum)

    def _wait(self, wake_r: int) -> None:
        now = time.monotonic()
        timers = [r.at for r in self.restarts] + ([self.kill_at] if self.kill_at else [])
        timeout = max(0.0, min([1.0] + [t - now for t in timers]))
        fds = [wake_r] + [c.status_fd for c in self.children.values() if c.status_fd >= 0]
        try:
            ready, _, _ = select.select(fds, [], [], timeout)
        except InterruptedError:  # pragma: no cover - PEP 475 retries select
            return
        for fd in ready:
            if fd == wake_r:
                try:
                    while os.read(wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
            else:
                child = next((c for c in self.children.values() if c.status_fd == fd), None)
                if child is not None:
                    self._read_status(child)

    def _handle_signals(self) -> None:
        while self.signals:
            s = self.signals.pop(0)
            if s in (signal.SIGTERM, signal.SIGINT):
                self._stop(s)
            elif self.stopping or s == signal.SIGCHLD:
                continue
            elif s == signal.SIGHUP:
                self._reload()
            elif s == signal.SIGTTIN:
                self.target += 1
                log.info("SIGTTIN: one child more (%d)", self.target)
                self._start_child()
            elif s == signal.SIGTTOU:
                if self.target <= 1:
                    log.info("SIGTTOU: the pool keeps its last child")
                    continue
                self.target -= 1
                log.info("SIGTTOU: one child less (%d)", self.target)
                if self.restarts:
                    self.restarts.pop()
                    continue
                staying = [c for c in self.children.values() if not c.retiring]
                if staying:
                    self._retire(max(staying, key=lambda c: c.number))

    def _stop(self, signum: int) -> None:
        self.stopping += 1
        self.restarts.clear()
        # A child's SIGTERM is a graceful stop however many come (systemd's default sends one
        # to every process of the service, and the parent forwards its own): the immediate
        # stop is SIGKILL.
        if self.stopping == 1:
            log.info("signal %d: stopping %d child(ren) gracefully (a second signal stops them at once)", signum, len(self.children))
            self.kill_at = time.monotonic() + self.grace + HAND_BACK
        for c in self.children.values():
            c.retiring = True
            _signal(c.pid, signal.SIGTERM if self.stopping == 1 else signal.SIGKILL)

    def _kill_late(self) -> None:
        if self.kill_at is None or time.monotonic() < self.kill_at:
            return
        for c in self.children.values():
            log.error("%s did not stop in time: killed", c)
            _signal(c.pid, signal.SIGKILL)
        self.kill_at = None

    def _retire(self, c: _Child) -> None:
        c.retiring = True
        _signal(c.pid, signal.SIGTERM)

    def _reload(self) -> None:
        try:
            _reimport(self.modules)
        except BaseException:  # noqa: BLE001 - any error of the new code: the old code keeps running
            log.error("SIGHUP: the job modules failed to import; the children keep running the code they have:\n%s",
                      traceback.format_exc())
            return
        old = [c for c in self.children.values() if not c.retiring]
        log.info("SIGHUP: modules %s imported again; replacing %d child(ren) gracefully", self.modules, len(old))
        for c in old:
            c.retiring = True
            c.scheduler = False  # a new child takes the scheduler at once
        self.restarts.clear()
        for _ in range(self.target):
            self._start_child()
        for c in old:
            _signal(c.pid, signal.SIGTERM)

    # ---- children ----

    def _start_child(self, number: int | None = None) -> None:
        taken = {c.number for c in self.children.values() if not c.retiring} | {r.number for r in self.restarts}
        if number is None:
            number = next(n for n in range(1, len(taken) + 2) if n not in taken)
        scheduler = bool(self.spec["scheduler"]) and not any(c.scheduler for c in self.children.values())
        worker_id = os.urandom(12).hex()
        spec = dict(self.spec, worker_id=worker_id, scheduler=scheduler, number=number, parent=os.getpid(),
                    expire=self.dead_workers, modules=self.modules)
        self.dead_workers = []
        read_fd, write_fd = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        proc: subprocess.Popen[bytes] | None = None
        if self.start_method == "fork":
            pid = os.fork()
            if pid == 0:  # the child: never returns
                code = 1
                try:
                    for fd in (read_fd, *self._wake, *(c.status_fd for c in self.children.values() if c.status_fd >= 0)):
                        os.close(fd)
                    code = _child_main(spec, write_fd, self.make_worker)
                except BaseException:  # noqa: BLE001
                    traceback.print_exc()
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
        else:
            spec["connections"] = {name: asdict(c) for name, c in config.configured().items()}
            spec["path"] = sys.path
            spec["log_level"] = logging.getLogger("fastjobs").getEffectiveLevel()
            spec["log_json"] = any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)
            env = dict(os.environ)
            secret = spec.pop("callback_secret", None)
            if secret is not None:  # in the environment, not on the command line (ps shows that)
                env[_SECRET_VAR] = secret
            proc = subprocess.Popen(
                [sys.executable, "-c", "import fastjobs.worker as w; w.spawned_child()", json.dumps(spec), str(write_fd)],
                pass_fds=(write_fd,),
                env=env,
            )
            pid = proc.pid
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        self.children[pid] = _Child(number, pid, worker_id, time.monotonic(), read_fd, scheduler, proc=proc)
        log.info("child #%d started: pid %d%s", number, pid, " (runs the scheduler)" if scheduler else "")

    def _read_status(self, c: _Child) -> None:
        """Takes in what the child reported (its counts, and why it leaves when it is recycled)."""
        while c.status_fd >= 0:
            try:
                data = os.read(c.status_fd, 65536)
            except BlockingIOError:
                return
            if not data:  # the child exited (or closed it): waitpid tells how
                os.close(c.status_fd)
                c.status_fd = -1
                return
            *lines, c.buffer = (c.buffer + data).split(b"\n")
            for line in lines:
                try:
                    report = json.loads(line)
                except ValueError:
                    continue
                c.stats = report.get("stats", c.stats)
                c.leaving = report.get("leaving", c.leaving)
                c.metrics = report.get("metrics", c.metrics)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.watcher is not None and pid == self.watcher.pid:
                self.watcher.returncode = os.waitstatus_to_exitcode(status)
                log.error("the file watcher of --reload exited (code %s); changes are no longer watched", self.watcher.returncode)
                self.watcher = None
                continue
            c = self.children.pop(pid, None)
            if c is not None:
                if c.proc is not None:
                    c.proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here
                self._read_status(c)  # its last report, if the loop has not read it yet
                if c.status_fd >= 0:
                    os.close(c.status_fd)
                self.stats.update(c.stats)
                if c.metrics:
                    from .metrics import merge

                    self.metrics_gone = merge([self.metrics_gone, dict(c.metrics, queues={}, running=0)])
                self._gone(c, os.waitstatus_to_exitcode(status))

    def _gone(self, c: _Child, code: int) -> None:
        if code < 0:
            try:
                how = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
        else:
            how = f"exited with code {code}"
        if c.retiring:
            if code == 0 or (code == -signal.SIGKILL and self.stopping > 1):
                log.info("%s stopped", c)
            else:
                log.warning("%s %s while it stopped", c, how)
            return
        lived = time.monotonic() - c.started
        if c.leaving:
            self.why[c.leaving] += 1
            if c.stats.get("completed", 0) + c.stats.get("failed", 0) + c.stats.get("retried", 0) == 0 and lived < QUICK_DEATH:
                # Recycled before it ran anything: it starts above --max-memory-per-child.
                # Replacing it at once would loop; it is a quick death.
                self.quick_deaths += 1
                delay = min(30.0, 0.5 * 2 ** (self.quick_deaths - 1))
                log.error("%s %s before it ran a job (it starts above the limit?): the next starts in %.1f s", c, c.leaving, delay)
                self.restarts.append(_Restart(time.monotonic() + delay, c.number))
                return
            log.info("%s %s: starting another", c, c.leaving)
            self._start_child(c.number)
            return
        # It died (or stopped on its own, which it should not): its leases end now, at the
        # next child's start, not when they time out; its running job is logged then.
        self.why[how] += 1
        self.dead_workers.append({"worker": c.worker_id, "child": str(c)})
        self.quick_deaths = self.quick_deaths + 1 if lived < QUICK_DEATH else 0
        delay = 0.0 if self.quick_deaths <= 1 else min(30.0, 0.5 * 2 ** (self.quick_deaths - 2))
        if delay:
            log.error("%s %s after %.1f s; %d children in a row died within %.0f s of their start: the next starts in %.1f s",
                      c, how, lived, self.quick_deaths, QUICK_DEATH, delay)
        else:
            log.error("%s %s after %.1f s; starting another", c, how, lived)
        self.restarts.append(_Restart(time.monotonic() + delay, c.number))

    def _due_restarts(self) -> None:
        now = time.monotonic()
        due = [r for r in self.restarts if r.at <= now]
        for r in due:
            self.restarts.remove(r)
            self._start_child(r.number)

    # ---- --reload ----

    def _start_watcher(self) -> None:
        roots = _roots(self.modules)
        self.watcher = subprocess.Popen([sys.executable, "-c", "import fastjobs.pool as p; p._watch()", str(os.getpid()), *roots])
        log.info("watching %s for changed .py files (pid %d)", ", ".join(roots), self.watcher.pid)

    def _stop_watcher(self) -> None:
        if self.watcher is not None:
            self.watcher.terminate()
            try:
                self.watcher.wait(5)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self.watcher.kill()


def check_connection(connection: str, start_method: str) -> str | None:
    """``Worker._check_connection`` for a pool's parent, which must stay free of the engine's
    threads to fork safely: the check runs in a child of its own. Raises what the check
    raised there (an error type of fastjobs.errors); returns the trouble of a Redis that
    cannot be reached yet."""
    if start_method != "fork":
        return config.client(connection).check_connection()
    from . import errors

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        answer: dict[str, Any]
        try:
            os.close(read_fd)
            answer = {"trouble": config.client(connection).check_connection()}
        except Exception as e:  # noqa: BLE001 - sent to the parent, which raises it
            answer = {"error": type(e).__name__, "message": str(e)}
        try:
            os.write(write_fd, json.dumps(answer).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    answer = json.loads(data or b'{"error": "FastJobsError", "message": "the connection check died"}')
    if "error" in answer:
        kind = getattr(errors, answer["error"], None)
        if not (isinstance(kind, type) and issubclass(kind, Exception)):
            kind = ValueError if answer["error"] == "ValueError" else errors.FastJobsError
        raise kind(answer["message"])
    trouble: str | None = answer["trouble"]
    return trouble


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _library(path: str) -> bool:
    """Whether ``path`` is a file of the standard library, an installed package or fastjobs."""
    import sysconfig

    paths = sysconfig.get_paths()
    libraries = {os.path.realpath(p) for p in (paths["stdlib"], paths["purelib"], paths["platlib"], sys.base_prefix)}
    libraries.add(os.path.realpath(os.path.dirname(__file__)))  # fastjobs, even built in the application's tree
    return any(path.startswith(lib + os.sep) for lib in libraries)


def _roots(modules: list[str]) -> list[str]:
    """The application's directories: those of the job modules' files (a package's directory
    for a module of a package), libraries left out. A reload watches them and imports every
    module under them again."""
    roots: set[str] = set()
    for name in modules:
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if path and not _library(os.path.realpath(path)):
            top = sys.modules.get(name.partition(".")[0])
            top_path = getattr(top, "__file__", None) or path
            roots.add(os.path.dirname(top_path))
    return sorted(os.path.realpath(r) for r in roots) or [os.getcwd()]


def _reimport(modules: list[str]) -> None:
    """Imports the job modules again, with every module of the application they loaded (under
    ``_roots``, libraries left out): a reload brings new code of the application; upgraded
    libraries need a restart."""
    import importlib

    from .job import _REGISTRY

    roots = [r + os.sep for r in _roots(modules)]
    ours: list[str] = []
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if name == "__main__" or not path:
            continue
        path = os.path.realpath(path)
        if name in modules or (any(path.startswith(r) for r in roots) and not _library(path)):
            ours.append(name)
    saved = {name: sys.modules[name] for name in ours}
    registered = _REGISTRY.copy()
    for name in ours:
        del sys.modules[name]
    for name, cls in registered.items():
        if cls.__module__ in saved:
            del _REGISTRY[name]
    importlib.invalidate_caches()
    try:
        for name in modules:
            if name != "__main__":
                importlib.import_module(name)
    except BaseException:
        sys.modules.update(saved)  # the old code stays what the next child is forked from
        _REGISTRY.clear()
        _REGISTRY.update(registered)
        raise


# ---- the child ----


#: A spawned child's callback secret (hex), passed in its environment.
_SECRET_VAR = "_FASTJOBS_CHILD_CALLBACK_SECRET"


def _child_secret(spec: dict[str, Any]) -> bytes | None:
    """The pool's callback secret (hex in the spec of a forked child, in the environment of
    a spawned one)."""
    secret = spec.get("callback_secret") or os.environ.pop(_SECRET_VAR, None)
    return None if secret is None else bytes.fromhex(secret)


def _child_main(spec: dict[str, Any], status_fd: int, make_worker: Callable[..., Any]) -> int:
    """A child of the pool: builds its worker and runs it until it stops; 0 when it stopped
    as asked or was recycled (it says which in its last report)."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    # The terminal's signals reach the whole process group; they are the parent's to act on
    # (Ctrl-C, a hang-up, SIGTTIN/SIGTTOU, whose default would stop this process).
    for s in (signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(s, signal.SIG_IGN)
    _die_with_parent(spec["parent"])
    w = make_worker(
        spec["queues"],
        concurrency=spec["concurrency"],
        connection=spec["connection"],
        prefetch=spec["prefetch"],
        lease=spec["lease"],
        grace=spec["grace"],
        scheduler=spec["scheduler"],
        jobs=_jobs(spec["jobs"]),
        callback_secret=_child_secret(spec),
        callback_attempts=spec.get("callback_attempts", 5),
        callback_backoff=spec.get("callback_backoff", 4.0),
        _worker_id=spec["worker_id"],
        _max_jobs=spec["max_jobs"],
        middleware=_middleware(spec.get("middleware")),
        _metrics=None if spec.get("metrics_port") is None else "sample" if spec["number"] == 1 else "record",
        registry_interval=spec.get("registry_interval", 5.0),
    )
    w._pool_parent = spec["parent"]
    reporter = _Reporter(w, status_fd, spec)
    w._on_tick = reporter.tick

    def on_term(signum: int, frame: Any) -> None:
        if not w._stopping:
            log.info("child #%d: stopping", spec["number"])
            w.stop()

    signal.signal(signal.SIGTERM, on_term)
    if spec["expire"]:
        _expire_dead(w, spec["expire"])
    summary = w.run(install_signals=False)
    reporter.report(leaving=reporter.leaving(summary.completed + summary.retried + summary.failed + summary.cancelled))
    return 0


def _middleware(names: list[str] | None) -> list[Any]:
    """``Worker(middleware=...)`` of the pool, found by name in this child."""
    from .hooks import resolve

    return [resolve(n) for n in names or ()]


def _jobs(names: list[str] | None) -> Any:
    if names is None:
        return None
    from .job import registry

    known = registry()
    return [known[n] for n in names if n in known]


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel sends this child SIGTERM (a graceful stop) if the parent dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover
            pass
    if os.getppid() != parent:  # it died before: stop now (the report loop checks too)
        os.kill(os.getpid(), signal.SIGTERM)


def _expire_dead(w: Any, dead: list[dict[str, str]]) -> None:
    """Ends the leases of children that died, and says what they held."""
    for d in dead:
        try:
            found = w.client.expire_worker(w.queues, d["worker"])
        except Exception as e:  # noqa: BLE001 - their leases expire in time anyway
            log.error("could not end the leases of %s, which died (%s); they expire in time", d["child"], e)
            continue
        for queue, held, ids, started in found:
            shown = ", ".join(ids) + (", ..." if held > len(ids) else "")
            log.warning("%s died holding %d job(s) of queue %r (running or prefetched): %s; they are back at the head of the "
                        "queue, each to run alone once", d["child"], held, queue, shown)
            for job_id in started:
                log.error("job %s was running alone when %s died (it ran again after an earlier worker died): it may be what "
                          "kills its workers; it fails with LeaseExpired once its attempts are used up", job_id, d["child"])


class _Reporter:
    """Sends the child's counts to the parent (from ``Worker.run``'s loop, every 0.1 s),
    and stops the worker when it is to be recycled or the parent is gone."""

    def __init__(self, w: Any, fd: int, spec: dict[str, Any]) -> None:
        self.w, self.fd, self.spec = w, fd, spec
        self.max_memory: float | None = spec["max_memory_mb"]
        self.over: float | None = None
        self.pending = b""
        os.set_blocking(fd, False)

    def tick(self) -> None:
        w = self.w
        if self.max_memory is not None and self.over is None:
            rss = rss_mb()
            if rss > self.max_memory:
                self.over = rss
                log.info("child #%d uses %.0f MB, over --max-memory-per-child %.0f: recycling it", self.spec["number"], rss,
                         self.max_memory)
                w.stop()
        if w.engine.exhausted() and not w._stopping:
            w.stop()  # a puller stops it too, when it next finds nothing
        if os.getppid() != self.spec["parent"]:
            log.warning("the pool's parent process is gone: stopping")
            w.stop()
        self.report()

    def leaving(self, ran: int) -> str | None:
        if self.over is not None:
            return f"recycled at {self.over:.0f} MB"
        if self.spec["max_jobs"] is not None and self.w.engine.exhausted():
            return f"recycled after {self.spec['max_jobs']} jobs"
        return None

    def report(self, leaving: str | None = None) -> None:
        s = self.w.engine.stats()
        stats = {"completed": s["completed"], "retried": s["retried"], "failed": s["failed"], "handed_back": s["released"],
                 "stale": s["stale"], "cancelled": s["cancelled"]}
        report: dict[str, Any] = {"stats": stats, "leaving": leaving}
        if self.w._recorder is not None:
            report["metrics"] = self.w.metrics_snapshot()
        line = json.dumps(report).encode() + b"\n"
        if self.pending:  # the rest of a line the pipe took in part (one past PIPE_BUF: metrics)
            self._write(self.pending)
            if self.pending:
                return  # the parent reads the next one (the counts are totals)
        self._write(line)

    def _write(self, data: bytes) -> None:
        try:
            n = os.write(self.fd, data)
        except BlockingIOError:
            n = 0 if data is self.pending else len(data)  # a whole new line not taken: dropped
        except BrokenPipeError:
            n = len(data)
        self.pending = data[n:]


def spawned(make_worker: Callable[..., Any]) -> None:
    """The entry point of a spawned child (``start_method="spawn"``; ``worker.spawned_child``)."""
    import importlib

    spec = json.loads(sys.argv[1])
    status_fd = int(sys.argv[2])
    sys.path[:] = spec["path"]
    setup_logging(spec["log_level"], "json" if spec.get("log_json") else "text")
    for name, settings in spec["connections"].items():
        config.configure(connection=name, **settings)
    for name in spec["modules"]:
        importlib.import_module(name)
    sys.exit(_child_main(spec, status_fd, make_worker))


def _watch() -> None:
    """The file watcher of ``reload``: SIGHUP to the pool when a ``.py`` file changes."""
    import watchfiles

    parent, roots = int(sys.argv[1]), sys.argv[2:]
    _die_with_parent(parent)
    for _changes in watchfiles.watch(*roots, watch_filter=watchfiles.PythonFilter()):
        try:
            os.kill(parent, signal.SIGHUP)
        except ProcessLookupError:
            return

