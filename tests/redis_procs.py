"""What the local Redis launchers share (tests/redis_cluster.py, tests/redis_sentinel.py): the
processes of one test setup on free ports, raw commands to each, waiting for a state, killing,
freezing and stopping them."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from .resp import Redis

_P = TypeVar("_P", bound="RedisProcesses")


class RedisProcesses:
    """Redis processes by port, their files in ``dir``/P (a temporary ``dir`` is removed by stop())."""

    def __init__(self, dir: str | None, name: str) -> None:
        self._own_dir = dir is None
        self.dir = Path(dir or tempfile.mkdtemp(prefix=f"fastjobs-{name}-"))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._killed_at: dict[int, float] = {}
        self._stopped: set[int] = set()  # SIGSTOPped: running, but answering nothing

    @staticmethod
    def command(port: int, *args: Any) -> Any:
        """One command to one process (a connection each, tests/resp.py), a bulk string reply decoded."""
        reply = Redis(port).command(*args)
        return reply.decode() if isinstance(reply, bytes) else reply

    @staticmethod
    def _wait(done: Callable[[], bool], timeout: float, message: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if done():
                    return
            except (OSError, RuntimeError):
                pass  # a process starting, or one that saw the change before the others
            if time.monotonic() > deadline:
                raise TimeoutError(message)
            time.sleep(0.05)

    def alive(self) -> list[int]:
        return [p for p, proc in self.procs.items() if proc.poll() is None and p not in self._stopped]

    def info(self, port: int, section: str) -> dict[str, str]:
        text = str(self.command(port, "INFO", section))
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def kill(self, port: int, sig: int = signal.SIGKILL) -> None:
        """Sends ``sig`` to a process: SIGKILL or SIGTERM end it, SIGSTOP hangs it (as a node that
        stops answering without closing its connections), SIGCONT lets it go on."""
        self.procs[port].send_signal(sig)
        if sig == signal.SIGCONT:
            self._stopped.discard(port)
            return
        self._killed_at[port] = time.monotonic()
        if sig == signal.SIGSTOP:
            self._stopped.add(port)
        else:
            self.procs[port].wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()  # throwaway data: no need for a clean shutdown
            proc.wait(10)
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self: _P) -> _P:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
