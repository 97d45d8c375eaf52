"""Redis restarted under load, its data kept in an append-only file: producers dispatch single
jobs in a loop and a worker drains meanwhile. Producers get typed errors while Redis is away
and carry on by themselves; the worker reconnects by itself; every dispatch that returned
completes, once."""

from __future__ import annotations

import signal
import socket
import threading
import time
from typing import Any

import pytest

import fastjobs
from fastjobs import Queue

from ..conftest import eventually
from ..resp import Redis
from .conftest import audit, connect, counts, drained, sizes
from .jobs import Rec, runs
from .producers import Producer


@pytest.mark.parametrize(
    "fsync, sig",
    # With appendfsync always, every write Redis answered is on disk: it survives SIGKILL. With
    # everysec the file is fsynced once a second, and Redis documents that a crash may lose up
    # to about a second of writes: a SIGKILL there could lose dispatches that returned, so that
    # setting is restarted with SIGTERM, a clean shutdown (the file is written and fsynced first).
    [("always", signal.SIGKILL), ("everysec", signal.SIGTERM)],
    ids=["always-sigkill", "everysec-sigterm"],
)
@sizes(short=1, long=6)
def test_redis_restarted_under_producers_and_a_worker_loses_no_dispatch_that_returned(
        fsync: str, sig: int, size: int, persistent_redis: Any, workers: Any, ledger: Redis, prefix: str, figures: Any) -> None:
    restarts = size
    server = persistent_redis(fsync)
    connect(server.url, prefix, connect_timeout=1.0)
    q = "restart"
    backlog = Rec.dispatch_many([{"tag": f"b{i}", "sleep": 0.002} for i in range(500 * restarts)], queue=q, attempts=1)
    w = workers("--queue", q, "--concurrency", "2", "--lease", "10", "--grace", "30", url=server.url)
    producers = [Producer(f"p{n}", q) for n in range(2)]
    for p in producers:
        p.start()

    errors = 0
    fault_end = time.monotonic()
    for r in range(restarts):
        # Mid-drain, and the producers are sending.
        eventually(lambda r=r: counts(q).get("completed", 0) >= 250 * (r + 1), timeout=60)
        eventually(lambda t=fault_end: all(len([c for c in p.calls if c[0] > t and not c[1]]) >= 10 for p in producers), timeout=30)
        before = sum(len(p.calls) for p in producers)
        fault_end = server.restart(sig, down=1.0)
        assert sum(len(p.calls) for p in producers) > before  # they kept calling meanwhile
        # Each producer recovers by itself, with the same client: once Redis answers again its
        # calls succeed. A connection that broke while no call used it fails the first call
        # made on it (then it is opened again): one failure at most per connection, and a
        # producer uses two (its thread's own, and the shared one when another thread holds it).
        eventually(lambda t=fault_end: all(len([c for c in p.calls if c[0] > t and not c[1]]) >= 5 for p in producers), timeout=30)
        for p in producers:
            late = [kind for started, kind in p.calls if started > fault_end and kind]
            assert len(late) <= 2, (p.tag, late)
        assert all(p.is_alive() for p in producers), [p.unexpected for p in producers]
    for p in producers:
        p.halt.set()
        p.join(30)
    for p in producers:
        assert not p.unexpected, p.unexpected
        failed = [kind for _t, kind in p.calls if kind]
        assert failed, f"producer {p.tag} never saw Redis away"
        assert set(failed) <= {"ConnectionError", "StoreTimeoutError"}, set(failed)
        errors += len(failed)

    end = drained(q, 0, timeout=120)
    summary = w.stop()
    log = w.log()
    assert "Redis trouble, retrying" in log  # it saw Redis go away, and carried on by itself

    sent = [backlog.handle(i) for i in range(len(backlog))] + [h for p in producers for h in p.sent]
    uncertain = {tag for p in producers for tag in p.uncertain}
    landed = {r.tag for r in runs(ledger, prefix)} & uncertain  # raised, yet taken before Redis went away
    a = audit(q, sent, ledger, prefix, workers.all, extra=len(landed))
    # One worker, never killed: its summary is the whole story.
    assert (summary.completed, summary.stale) == (a.jobs, a.duplicates), (summary, a.jobs, a.duplicates)
    figures(jobs=a.jobs, restarts=restarts, lost=0, duplicates=a.duplicates, producer_errors=errors,
            landed_though_raised=len(landed), recovery_s=end - fault_end)


class LoadingRedis:
    """A server that answers every command as a Redis still reading its data back does."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = int(self.listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _serve(conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as f:
            try:
                while line := f.readline():  # a command: *<n>, then n bulk strings
                    for _ in range(int(line[1:])):
                        f.read(int(f.readline()[1:]) + 2)
                    conn.sendall(b"-LOADING Redis is loading the dataset in memory\r\n")
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()


def test_a_redis_loading_its_data_raises_connection_error(prefix: str) -> None:
    # It comes up on its port before it has read its append-only file back; until then it
    # answers LOADING. Callers get the retryable ConnectionError, as when it is down (it was a
    # StoreError, which the producers of the test above did not expect).
    server = LoadingRedis()
    try:
        connect(f"redis://127.0.0.1:{server.port}/0", prefix, connect_timeout=1.0)
        with pytest.raises(fastjobs.ConnectionError) as info:
            Rec.dispatch({"tag": "x"}).send()
        assert "loading" in str(info.value), info.value
        with pytest.raises(fastjobs.ConnectionError):
            Queue("q").counts()
    finally:
        server.close()
