"""Servers whose data survives a restart: a redis-server with an append-only file in a
directory of its own, on a port it keeps, restarted after a clean shutdown (SIGTERM) or a
crash (SIGKILL); a PostgreSQL server that commits durably, restarted after a crash."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Literal

import fastjobs

from ..conftest import ROOT, RedisServer, free_port
from ..resp import Redis

Fsync = Literal["always", "everysec"]


class PersistentRedis(RedisServer):
    """``appendonly yes`` with ``appendfsync`` ``always`` (every write is on disk before Redis
    answers it: nothing acknowledged is lost, even to SIGKILL) or ``everysec`` (fsynced once a
    second in the background; see ``kill``). ``stop()`` shuts it down cleanly and keeps the
    data; ``start()`` starts it again on the same port with that data; ``remove()`` deletes
    the directory. ``PersistentRedis(port, dir)`` starts one on the data of an earlier one."""

    def __init__(self, port: int | None = None, dir: str | None = None, fsync: Fsync = "always") -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed: run `make deps` (Debian package redis-server)")
        self.port = port or free_port()
        self.dir = dir or tempfile.mkdtemp(prefix="fastjobs-redis-aof-")
        self.fsync = fsync
        self.restarts = 0
        self.start()

    def start(self) -> None:
        """Starts the server (again) and waits until it has loaded its file and answers."""
        exe = shutil.which("redis-server")
        assert exe is not None
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
             "--appendfsync", self.fsync, "--dir", self.dir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                if Redis(self.port).command("PING") == "PONG":
                    return
            except (OSError, RuntimeError):  # refused, or "LOADING" while it reads the file
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Ends the server with ``sig`` and waits for it to be gone. SIGTERM is a clean shutdown:
        Redis writes and fsyncs the append-only file before it exits, whatever ``appendfsync``
        says. SIGKILL is a crash: with ``always`` every write Redis answered is in the file; with
        ``everysec`` a kill may lose up to about a second of writes (Redis's documented bound for
        that setting: the file is fsynced once a second, and its writes are put off while a slow
        fsync runs), so tests that kill it with SIGKILL use ``always``."""
        self.proc.send_signal(sig)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def restart(self, sig: int = signal.SIGKILL, down: float = 0.0) -> float:
        """``kill(sig)``, stays down ``down`` seconds, starts again; returns the monotonic time at
        which it answers again (the end of the fault)."""
        self.kill(sig)
        time.sleep(down)
        self.start()
        self.restarts += 1
        return time.monotonic()

    def stop(self) -> None:
        """Shuts down cleanly (SIGTERM: the append-only file is complete); keeps the data."""
        if self.proc.poll() is None:
            self.kill(signal.SIGTERM)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class PersistentPostgres:
    """A PostgreSQL server of its own (rust/store/postgres/testserver.sh ``durable``: every
    commit is in the WAL before it is answered) with the fastjobs schema, on a port it keeps.
    ``restart()`` crashes it (an immediate shutdown: no checkpoint, the next start replays the
    WAL) and starts it again on the same data."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = os.path.join(tempfile.gettempdir(), f"fastjobs-pg-durable-{os.getpid()}-{self.port}")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.restarts = 0
        self.start()
        fastjobs.init_db(self.url)

    def _script(self, *args: str) -> None:
        out = subprocess.run(["sh", str(ROOT / "rust" / "store" / "postgres" / "testserver.sh"), *args], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"testserver.sh {args[0]}: {out.stderr.strip()}")

    def start(self) -> None:
        self._script("start", self.dir, str(self.port), str(os.getpid()), "durable")

    def restart(self, down: float = 0.0) -> float:
        """Crashes the server, keeps it down ``down`` seconds, starts it again; returns the
        monotonic time at which it answers again (the end of the fault)."""
        self._script("stop", self.dir)
        time.sleep(down)
        self.start()
        self.restarts += 1
        return time.monotonic()

    def remove(self) -> None:
        self._script("stop", self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)
