"""Timeouts: what a job that runs past its timeout is told, and how long a dispatch waits for
a server that accepts connections and never answers (connect_timeout for connecting, plus
response_timeout for the answer, never a multiple of either)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

import fastjobs
from fastjobs import Queue

from .apps.jobs import Echo


class PastItsTimeSync(fastjobs.Job[float, str]):
    timeout = 0.3

    def process(self, payload: float) -> str:
        deadline = time.monotonic() + payload
        try:
            while time.monotonic() < deadline:
                time.sleep(0.01)
        except fastjobs.JobTimeoutError as e:
            if payload > 100:  # the handler sees the message too
                return f"caught: {e}"
            raise
        return "finished"


class PastItsTimeAsync(fastjobs.Job[float, str]):
    timeout = 0.3

    async def process(self, payload: float) -> str:
        await asyncio.sleep(payload)
        return "finished"


@pytest.mark.parametrize("job", [PastItsTimeSync, PastItsTimeAsync])
def test_job_timeout_error_says_the_limit_and_the_job(job: Any, start_worker: Any) -> None:
    start_worker(jobs=[job])
    h = job.dispatch(3.0).send()
    with pytest.raises(fastjobs.JobFailed) as e:
        h.wait_result(timeout=10)
    expected = f"job {h.id} ({job.name}) ran past its timeout of 0.3 s"
    assert e.value.exc_type == "fastjobs.errors.JobTimeoutError"
    assert e.value.message == expected
    [failed] = Queue().failed()
    assert failed.error is not None and failed.error["message"] == expected
    h2 = job.dispatch(1.0).timeout(0.2).send()  # a per-dispatch timeout
    with pytest.raises(fastjobs.JobFailed, match=r"ran past its timeout of 0\.2 s"):
        h2.wait_result(timeout=10)


def test_a_sync_handler_catching_the_timeout_sees_the_message(start_worker: Any) -> None:
    start_worker(jobs=[PastItsTimeSync])
    h = PastItsTimeSync.dispatch(1000.0).send()
    result = h.wait_result(timeout=10)
    assert result == f"caught: job {h.id} (PastItsTimeSync) ran past its timeout of 0.3 s"


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A TCP port whose listener never accepts: the kernel completes connections into the
    backlog, and nothing ever answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    yield s.getsockname()[1]
    s.close()


class HandshakeOnly:
    """A server that answers a connection's handshake (AUTH, SELECT, PING, CLIENT) and then
    never answers again: Redis that stopped responding after connections were made."""

    REPLIES: ClassVar[dict[bytes, bytes]] = {b"AUTH": b"+OK\r\n", b"SELECT": b"+OK\r\n", b"PING": b"+PONG\r\n", b"CLIENT": b"+OK\r\n"}

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: socket.socket) -> None:
        f = c.makefile("rb")
        try:
            while True:
                head = f.readline()
                if not head:
                    return
                args = []
                for _ in range(int(head[1:])):
                    n = int(f.readline()[1:])
                    args.append(f.read(n + 2)[:-2])
                reply = self.REPLIES.get(args[0].upper())
                if reply is None:
                    break  # silent from now on
                c.sendall(reply)
            while f.read(65536):
                pass
        except (OSError, ValueError):
            return

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def handshake_only() -> Iterator[HandshakeOnly]:
    server = HandshakeOnly()
    yield server
    server.close()


def _timed(what: Any) -> tuple[float, BaseException]:
    started = time.monotonic()
    with pytest.raises(fastjobs.FastJobsError) as e:
        what()
    return time.monotonic() - started, e.value


@pytest.mark.parametrize("login", ["", "user:pw@"], ids=["plain", "password and db"])
def test_a_dispatch_to_a_server_that_never_answers_waits_connect_timeout_at_most(silent_listener: int, login: str) -> None:
    db = 3 if login else 0
    fastjobs.configure(f"redis://{login}127.0.0.1:{silent_listener}/{db}", connect_timeout=1.5, response_timeout=0.5)
    # Before: redis-rs waited the connect timeout once per handshake reply (2 to 4 of them).
    for what in (lambda: Echo.dispatch(1).send(), lambda: Queue().size()):
        took, e = _timed(what)
        assert isinstance(e, fastjobs.StoreTimeoutError), e
        assert 1.3 < took < 1.5 + 0.5 + 0.4, (took, e)


def test_a_dispatch_to_a_server_gone_silent_waits_response_timeout_once(handshake_only: HandshakeOnly) -> None:
    fastjobs.configure(f"redis://127.0.0.1:{handshake_only.port}/0", connect_timeout=5, response_timeout=0.5)
    took, e = _timed(lambda: Echo.dispatch(1).send())
    assert isinstance(e, fastjobs.StoreTimeoutError) and 0.4 < took < 1.2, (took, e)
    # A bulk write is several commands (MULTI, RPUSH, EVAL, EXEC): one timeout, not one per
    # reply; then one more at most, asking Redis which of the writes landed.
    took, e = _timed(lambda: Echo.dispatch_many(list(range(1000))))
    assert isinstance(e, fastjobs.BulkDispatchError) and isinstance(e.__cause__, fastjobs.StoreTimeoutError), e
    assert 0.4 < took < 1.7, (took, e)
