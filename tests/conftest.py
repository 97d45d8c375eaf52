"""Test fixtures: a real redis-server started for the session on a free port, a fresh key
prefix per test, a throwaway PostgreSQL server with a fresh database per test, and helpers to
run workers in threads or in real processes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fastjobs
from fastjobs import config

from .redis_cluster import RedisCluster
from .resp import Redis

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A throwaway redis-server process (no persistence)."""

    def __init__(self, port: int | None = None) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed: run `make deps` (Debian package redis-server)")
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="fastjobs-redis-")
        self.proc = subprocess.Popen(
            [exe, *self._args(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                Redis(self.port).command("PING")
                break
            except OSError as e:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from e
                time.sleep(0.02)

    def _args(self) -> list[str]:
        return ["--port", str(self.port)]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    os.environ["FASTJOBS_TEST_REDIS_URL"] = server.url
    yield server
    server.stop()


@pytest.fixture
def prefix() -> str:
    return "t" + uuid.uuid4().hex[:12]


class PostgresServer:
    """A throwaway PostgreSQL server (rust/store/postgres/testserver.sh: trust auth, fsync off,
    stopped when this process ends), the fastjobs schema made once in a template database:
    each test's database is a copy of it (CREATE DATABASE ... TEMPLATE, a file copy).

    ``tls=True``: it takes TLS connections only, its certificate (localhost, 127.0.0.1) signed
    by a throwaway CA, ``tls_dir / "ca.pem"``; ``other-ca.pem`` there is a CA that signed
    nothing. Its databases' URLs carry no TLS parameters: each test adds its own."""

    TEMPLATE = "fastjobs_template"

    def __init__(self, tls: bool = False) -> None:
        import psycopg

        self.port = free_port()
        self.dir = os.path.join(tempfile.gettempdir(), f"fastjobs-pg-{os.getpid()}-{self.port}")
        self.tls_dir = Path(self.dir) / "tls"
        script = ROOT / "rust" / "store" / "postgres" / "testserver.sh"
        command = ["sh", str(script), "start", self.dir, str(self.port), str(os.getpid())] + (["tls"] if tls else [])
        out = subprocess.run(command, capture_output=True, text=True)
        if out.returncode == 3 and os.environ.get("CI") != "true":
            pytest.skip(f"no PostgreSQL server for the tests: {out.stderr.strip()}")
        if out.returncode != 0:
            raise RuntimeError(f"the PostgreSQL test server did not start: {out.stderr.strip()}")
        self.base = f"postgresql://postgres@127.0.0.1:{self.port}"
        self.admin = psycopg.connect(f"{self.base}/postgres", autocommit=True)
        self.admin.execute(f"CREATE DATABASE {self.TEMPLATE}")
        verified = f"?sslmode=verify-full&sslrootcert={self.tls_dir / 'ca.pem'}" if tls else ""
        fastjobs.init_db(f"{self.base}/{self.TEMPLATE}{verified}")
        self.count = 0

    def database(self) -> str:
        """The URL of a new database with the schema."""
        import psycopg

        self.count += 1
        name = f"t{self.count}"
        deadline = time.monotonic() + 10
        while True:
            try:
                self.admin.execute(f"CREATE DATABASE {name} TEMPLATE {self.TEMPLATE}")
                return f"{self.base}/{name}"
            except psycopg.errors.ObjectInUse:
                # The template's last connection (init_db's) is still closing.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def drop(self, url: str) -> None:
        """Drops a test's database, ending the connections a test left open."""
        self.admin.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")

    def stop(self) -> None:
        self.admin.close()
        script = ROOT / "rust" / "store" / "postgres" / "testserver.sh"
        subprocess.run(["sh", str(script), "stop", self.dir], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """Started on first use: only the runs that reach the PostgreSQL store pay for it."""
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_tls_server() -> Iterator[PostgresServer]:
    """A second server, with TLS only; started on first use (tests/test_postgres_tls.py)."""
    server = PostgresServer(tls=True)
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh PostgreSQL database with the fastjobs schema, for this test alone."""
    url = postgres_server.database()
    yield url
    config.reset()  # the clients on it go before the database does
    postgres_server.drop(url)


#: The store the tests run on: FASTJOBS_TEST_STORE=memory runs them on the in-process store,
#: =sqlite on a SQLite file per test, =postgres on a PostgreSQL database per test, =cluster on
#: a Redis Cluster of 3 primaries started for the session (`make test` runs them so too, the
#: tests marked `redis_only` left out).
TEST_STORE = os.environ.get("FASTJOBS_TEST_STORE", "redis")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On another store, tests marked ``redis_only`` (they read Redis's keys, or need a
    second process to share the store) are deselected, never counted as passed."""
    if TEST_STORE == "redis":
        return

    def redis_only(item: pytest.Item) -> bool:
        # A worker or command in another process cannot share an in-process store, and
        # spawn_worker starts it on the session's Redis (tests/test_postgres_store.py runs one
        # on PostgreSQL).
        fixtures = getattr(item, "fixturenames", ())
        if item.get_closest_marker("shared_store") is not None:
            return TEST_STORE == "memory"  # a file or a database is shared by processes, not a process's memory
        return item.get_closest_marker("redis_only") is not None or "spawn_worker" in fixtures

    keep = [i for i in items if not redis_only(i)]
    dropped = [i for i in items if redis_only(i)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(autouse=True)
def fj(request: pytest.FixtureRequest, redis_server: RedisServer, prefix: str) -> Iterator[tuple[str, str]]:
    """Every test talks to the session's store (Redis unless FASTJOBS_TEST_STORE says
    otherwise) under its own key prefix; on PostgreSQL, in its own database (the prefix stays
    the default there; jobs that stamp Redis read the test's from FASTJOBS_TEST_PREFIX).
    Yields the store's (url, prefix), for a second process on it (tests marked shared_store)."""
    config.reset()
    os.environ["FASTJOBS_TEST_PREFIX"] = prefix
    if TEST_STORE == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        fastjobs.configure(cluster.url, prefix=prefix)
        yield cluster.url, prefix
        config.reset()
        return
    if TEST_STORE == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.database()
        fastjobs.configure(url)
        yield url, "fj"
        config.reset()
        server.drop(url)
        return
    url = {"redis": redis_server.url, "sqlite": f"sqlite:///{tempfile.gettempdir()}/fastjobs-{prefix}.db"}.get(TEST_STORE, f"{TEST_STORE}://")
    fastjobs.configure(url, prefix=prefix)
    yield url, prefix
    config.reset()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A real Redis Cluster of 3 primaries on free ports, for the session."""
    with RedisCluster(primaries=3) as c:
        yield c


@pytest.fixture
def redis(redis_server: RedisServer) -> Redis:
    """A raw client for looking at (or tampering with) keys directly."""
    return Redis(redis_server.port)


class ThreadWorker:
    """A Worker running in a thread of the test process."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("lease", 5.0)
        kwargs.setdefault("grace", 5.0)
        self.worker = fastjobs.Worker(**kwargs)
        self.summary: fastjobs.WorkerSummary | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.summary = self.worker.run(install_signals=False)

    def stop(self) -> fastjobs.WorkerSummary:
        self.worker.stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "worker did not stop"
        assert self.summary is not None
        return self.summary


@pytest.fixture
def start_worker() -> Iterator[Any]:
    started: list[ThreadWorker] = []

    def start(**kwargs: Any) -> ThreadWorker:
        w = ThreadWorker(**kwargs)
        started.append(w)
        return w

    yield start
    for w in started:
        if w.thread.is_alive():
            w.stop()


class ProcessWorker:
    """`python -m fastjobs worker` in a real child process. Its output goes to a file, not a
    pipe: a worker that logs much (a line per redelivered job) must never block on a pipe that
    the test reads only at the end."""

    def __init__(self, url: str, prefix: str, modules: list[str], args: list[str], path: str = "") -> None:
        env = dict(os.environ, FASTJOBS_URL=url, FASTJOBS_PREFIX=prefix, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), path])))
        fd, self.log = tempfile.mkstemp(prefix="fastjobs-worker-", suffix=".log")
        with os.fdopen(fd, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fastjobs", "worker", *modules, *args],
                cwd=str(ROOT),
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )

    def read(self) -> str:
        """What the worker wrote so far."""
        return Path(self.log).read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 15.0) -> str:
        """Waits until the worker wrote ``text``; returns its output so far."""
        return str(eventually(lambda: text in self.read() and self.read(), timeout=timeout))

    def output(self) -> str:
        """Waits for the worker to exit; returns everything it wrote."""
        self.proc.wait(timeout=60)
        return self.read()


@pytest.fixture
def spawn_worker(redis_server: RedisServer, prefix: str) -> Iterator[Any]:
    procs: list[ProcessWorker] = []

    def spawn(*args: str, modules: list[str] | None = None, url: str | None = None, path: str = "", key_prefix: str | None = None) -> ProcessWorker:
        p = ProcessWorker(url or redis_server.url, key_prefix or prefix, modules or ["tests.apps.jobs"], list(args), path)
        procs.append(p)
        return p

    yield spawn
    for p in procs:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait()
        os.unlink(p.log)


def eventually(check: Any, timeout: float = 15.0, interval: float = 0.02) -> Any:
    """Polls ``check`` until it returns a truthy value (test helper only, never in the engine)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")
        time.sleep(interval)


def waiting_records(redis: Any, prefix: str, queue: str) -> list[bytes]:
    """The records of a queue's ready list (priority 0) in order, runs split (record.rs: byte
    254, then per record a 2-byte length and the record)."""
    out = []
    for el in redis("LRANGE", f"{prefix}:{{{queue}}}:wait", 0, -1):
        if el[:1] != b"\xfe":
            out.append(el)
            continue
        at = 1
        while at < len(el):
            n = int.from_bytes(el[at : at + 2], "big")
            out.append(el[at + 2 : at + 2 + n])
            at += 2 + n
    return out


@pytest.fixture(params=["sync", "async"])
def face(request: Any) -> Any:
    """Runs a test once through the sync API and once through the async one."""
    from .faces import Async, Sync

    return Sync() if request.param == "sync" else Async()
