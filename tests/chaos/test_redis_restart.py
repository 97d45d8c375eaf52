"""Redis restarted under load, its data kept in an append-only file: producers dispatch single
jobs in a loop and a worker drains meanwhile. Producers get typed errors while Redis is away
and carry on by themselves; the worker reconnects by itself; every dispatch that returned
completes, once."""

from __future__ import annotations

import signal
import socket
import threading
from typing import Any

import pytest

import fastjobs
from fastjobs import Queue

from ..resp import Redis
from .conftest import connect, sizes
from .jobs import Rec
from .scenarios import restart_under_load


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
    server = persistent_redis(fsync)
    connect(server.url, prefix, connect_timeout=1.0)
    # A connection that broke while no call used it fails the first call made on it (then it is
    # opened again): one failure at most per connection after the restart, and a producer uses
    # two (its thread's own, and the shared one when another thread holds it).
    figures(**restart_under_load(size, lambda: server.restart(sig, down=1.0), "Redis", workers, ledger, prefix, url=server.url,
                                 max_late_failures=2))


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
