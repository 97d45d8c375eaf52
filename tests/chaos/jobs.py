"""The job the fault tests' workers run (`fastjobs worker tests.chaos.jobs`), and the ledger
where it records each run.

The ledger is a list in the test run's own redis-server (``FASTJOBS_CHAOS_LEDGER`` is its
port, the key ``<prefix>:runs`` with the test's prefix, ``FASTJOBS_CHAOS_RUNS``), never the
store under test: it is neither restarted nor behind the proxy, so a run is recorded whatever
the fault. Each run appends
``<job id> <pid> <redelivered 0|1> <attempt> <tag>`` before the handler does anything else.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import fastjobs


class _Ledger(threading.local):
    """One connection per thread to the ledger's Redis (a connection per run would leave
    thousands of sockets in TIME_WAIT over a long run)."""

    sock: socket.socket | None = None

    def append(self, line: str) -> None:
        key = f"{os.environ.get('FASTJOBS_CHAOS_RUNS') or os.environ.get('FASTJOBS_PREFIX', 'fj')}:runs".encode()
        value = line.encode()
        msg = b"*3\r\n$5\r\nRPUSH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(value), value)
        for again in (False, True):
            try:
                if self.sock is None:
                    self.sock = socket.create_connection(("127.0.0.1", int(os.environ["FASTJOBS_CHAOS_LEDGER"])), timeout=10)
                self.sock.sendall(msg)
                reply = self.sock.recv(64)
                if not reply.startswith(b":"):
                    raise RuntimeError(f"ledger RPUSH answered {reply!r}")
                return
            except OSError:
                if self.sock is not None:
                    self.sock.close()
                self.sock = None
                if again:
                    raise


_ledger = _Ledger()


class Rec(fastjobs.Job[dict, int]):
    """Records its run in the ledger, then: sleeps ``sleep`` seconds; sleeps ``stall`` seconds
    more on a first delivery (not when ``self.redelivered``); kills its own process at once
    (``os._exit(1)``) when ``poison``. Returns the worker's pid."""

    name = "chaos.Rec"

    def process(self, payload: dict) -> int:
        _ledger.append(f"{self.job_id} {os.getpid()} {int(self.redelivered)} {self.attempt} {payload.get('tag', '-')}")
        if payload.get("poison"):
            os._exit(1)
        if payload.get("sleep"):
            time.sleep(payload["sleep"])
        if payload.get("stall") and not self.redelivered:
            time.sleep(payload["stall"])
        return os.getpid()


@dataclass(frozen=True)
class Run:
    job_id: str
    pid: int
    redelivered: bool
    attempt: int
    tag: str


def runs(ledger: Any, prefix: str) -> list[Run]:
    """Every run recorded, in the order they started."""
    out = []
    for line in ledger("LRANGE", f"{prefix}:runs", 0, -1):
        job_id, pid, redelivered, attempt, tag = line.decode().split(" ", 4)
        out.append(Run(job_id, int(pid), redelivered == "1", int(attempt), tag))
    return out
