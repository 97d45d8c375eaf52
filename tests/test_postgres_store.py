"""The PostgreSQL store from Python (postgresql://): its URLs and errors, its schema (init_db,
``fastjobs db init``), jobs written inside the application's own transaction (send(conn=...)),
a worker in another process, and a Redis queue beside a PostgreSQL one in one application.
Each test has a database of its own on the session's throwaway server (conftest.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import datetime, timezone
from typing import Any

import psycopg
import psycopg2
import pytest

import fastjobs
from fastjobs import Queue

from .apps.jobs import Echo
from .conftest import ROOT, PostgresServer, ProcessWorker, RedisServer


class OnPg(fastjobs.Job[int, str]):
    queue = "mixed-pg"
    connection = "pg"

    def process(self, n: int, /) -> str:
        return f"pg {n}"


class OnRedis(fastjobs.Job[int, str]):
    queue = "mixed-redis"
    connection = "redis"

    def process(self, n: int, /) -> str:
        return f"redis {n}"


def _bare_database(server: PostgresServer, name: str) -> str:
    """A database without the fastjobs schema."""
    server.admin.execute(f"DROP DATABASE IF EXISTS {name}")
    server.admin.execute(f"CREATE DATABASE {name}")
    return f"{server.base}/{name}"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "fastjobs", *args], cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=60)


def test_urls_that_cannot_work_get_typed_errors(postgres_server: PostgresServer) -> None:
    with pytest.raises(fastjobs.ConnectionError, match="cannot reach PostgreSQL") as unreachable:
        fastjobs.configure("postgresql://u:secret@127.0.0.1:1/x", connection="pg")
    assert "secret" not in str(unreachable.value)
    with pytest.raises(ValueError, match="unknown sslmode"):
        fastjobs.configure("postgresql://u@127.0.0.1:1/x?sslmode=on", connection="pg")
    with pytest.raises(ValueError, match="invalid PostgreSQL URL"):
        fastjobs.configure("postgresql://u@127.0.0.1:notaport/x", connection="pg")
    with pytest.raises(ValueError, match="postgresql://"):
        fastjobs.configure("mysql://u@127.0.0.1/x", connection="pg")
    # One database holds one application's jobs: a prefix cannot keep two apart there.
    db = postgres_server.database()
    with pytest.raises(ValueError, match=r'prefix "other".*its own database'):
        fastjobs.configure(db, connection="pg", prefix="other")
    fastjobs.configure(db, connection="pg2", prefix="fj")  # the default, said aloud, is fine
    postgres_server.drop(db)


def test_a_database_without_the_schema_says_to_run_db_init(postgres_server: PostgresServer) -> None:
    url = _bare_database(postgres_server, "noschema")
    with pytest.raises(fastjobs.SchemaError, match="fastjobs db init") as e:
        fastjobs.configure(url, connection="pg")
    assert isinstance(e.value, fastjobs.StoreError)
    applied = fastjobs.init_db(url)
    # Every version, in order (their numbers may skip one that another line of work holds).
    assert applied[0] == 1 and applied == sorted(set(applied)) and len(applied) >= 11
    assert fastjobs.init_db(url) == []  # idempotent: nothing left to apply
    fastjobs.configure(url, connection="pg")
    assert Echo.dispatch(1).on_connection("pg").send().status() == "waiting"
    fastjobs.config.reset()
    postgres_server.drop(url)


def test_db_init_from_the_command_line(postgres_server: PostgresServer) -> None:
    url = _bare_database(postgres_server, "clidb")
    first = _cli("db", "init", url)
    assert first.returncode == 0, first.stderr
    assert "schema versions 1, 2" in first.stdout
    again = _cli("db", "init", url, "--json")
    assert again.returncode == 0, again.stderr
    assert fastjobs.serde.loads(again.stdout.encode()) == {"url": url, "applied": []}
    refused = _cli("db", "init", "postgresql://u:secret@127.0.0.1:1/x")
    assert refused.returncode == 1 and "cannot reach PostgreSQL" in refused.stderr and "secret" not in refused.stderr
    assert _cli("db", "init", "redis://127.0.0.1/0").returncode == 1
    assert _cli("db", "init").returncode == 2  # no URL and no $FASTJOBS_URL
    postgres_server.drop(url)


def test_a_job_sent_in_a_committed_transaction_runs(pg_url: str, start_worker: Any) -> None:
    fastjobs.configure(pg_url, connection="pg")
    with psycopg.connect(pg_url) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY)")
        conn.execute("INSERT INTO orders VALUES (7)")
        handle = Echo.dispatch({"order": 7}).on_connection("pg").send(conn=conn)
        assert handle.created
        # Not committed: nobody else sees the job yet.
        assert handle.status() == "unknown"
    # The with block committed: the order and its job together.
    assert handle.status() == "waiting"
    start_worker(queues=["default"], connection="pg")
    assert handle.wait_result(timeout=30) == {"order": 7}


def test_a_job_sent_in_a_rolled_back_transaction_never_exists(pg_url: str, start_worker: Any) -> None:
    fastjobs.configure(pg_url, connection="pg")
    conn = psycopg.connect(pg_url)
    cur = conn.cursor()  # a cursor is taken too: its connection's transaction
    doomed = Echo.dispatch("doomed").on_connection("pg").send(conn=cur)
    conn.rollback()
    conn.close()
    start_worker(queues=["default"], connection="pg")
    # A job sent after it runs; by then the worker has had every job there is.
    assert Echo.dispatch("after").on_connection("pg").send().wait_result(timeout=30) == "after"
    assert doomed.status() == "unknown"
    assert Queue("default", connection="pg").counts()["completed"] == 1


def test_psycopg2_and_async_psycopg_connections_join_their_transactions(pg_url: str, start_worker: Any) -> None:
    fastjobs.configure(pg_url, connection="pg")
    conn2 = psycopg2.connect(pg_url)
    by_pg2 = Echo.dispatch("psycopg2").on_connection("pg").send(conn=conn2)
    rolled_back = Echo.dispatch("psycopg2 rolled back").on_connection("pg").send(conn=conn2.cursor())
    conn2.rollback()
    again = Echo.dispatch("psycopg2").on_connection("pg").send(conn=conn2)
    conn2.commit()
    conn2.close()

    async def send_async() -> fastjobs.JobHandle[Any]:
        async with await psycopg.AsyncConnection.connect(pg_url) as aconn:
            return await Echo.dispatch("async").on_connection("pg").send_async(conn=aconn)

    by_async = asyncio.run(send_async())
    start_worker(queues=["default"], connection="pg")
    assert again.wait_result(timeout=30) == "psycopg2"
    assert by_async.wait_result(timeout=30) == "async"
    assert by_pg2.status() == rolled_back.status() == "unknown"


def test_a_caller_chosen_id_and_a_deduplication_key_answer_as_a_plain_send(pg_url: str) -> None:
    fastjobs.configure(pg_url, connection="pg")
    with psycopg.connect(pg_url) as conn:
        first = Echo.dispatch(1).on_connection("pg").job_id("order-1").send(conn=conn)
        second = Echo.dispatch(2).on_connection("pg").job_id("order-1").send(conn=conn)
        held = Echo.dispatch(3).on_connection("pg").deduplicate("k").send(conn=conn)
        dup = Echo.dispatch(4).on_connection("pg").deduplicate("k").send(conn=conn)
    assert (first.created, second.created, second.id) == (True, False, "order-1")
    assert held.created and not dup.created and dup.deduplicated and dup.id == held.id
    assert Queue("default", connection="pg").counts()["waiting"] == 2


def test_conn_is_refused_off_postgresql_and_for_what_is_not_a_psycopg_connection(pg_url: str, redis_server: RedisServer,
                                                                                  prefix: str) -> None:
    fastjobs.configure(redis_server.url, connection="redis", prefix=prefix)
    fastjobs.configure(pg_url, connection="pg")
    with psycopg.connect(pg_url) as conn:
        pending = Echo.dispatch(1).on_connection("redis")
        with pytest.raises(ValueError, match="must be PostgreSQL too"):
            pending.send(conn=conn)
        assert pending.send().status() == "waiting"  # refused, not sent: it can be sent otherwise
        with pytest.raises(TypeError, match=r"psycopg \(3\) or psycopg2 connection or cursor"):
            Echo.dispatch(1).on_connection("pg").send(conn=object())
        with pytest.raises(TypeError, match="send_async"):
            asyncio.run(Echo.dispatch(1).on_connection("pg").send_async(conn=conn))  # a sync connection, awaited
    assert Queue("default", connection="pg").counts()["waiting"] == 0


def test_a_worker_in_another_process_drains_a_postgresql_queue(pg_url: str) -> None:
    fastjobs.configure(pg_url, prefix="fj")  # the default connection had the test's Redis prefix
    handles = [Echo.dispatch(i).send() for i in range(20)]
    handles += Echo.dispatch_many(range(20, 220)).handles()  # bulk: COPY in a transaction of its own
    worker = ProcessWorker(pg_url, "fj", ["tests.apps.jobs"], ["-q", "default", "-c", "4"])
    try:
        worker.wait_for("worker started", timeout=30)
        assert [h.wait_result(timeout=60) for h in handles] == list(range(220))
        worker.proc.send_signal(signal.SIGTERM)
        out = worker.output()
        assert "220 completed" in out, out
    finally:
        if worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait()
        os.unlink(worker.log)


def test_a_pool_of_worker_processes_drains_a_postgresql_queue(pg_url: str) -> None:
    fastjobs.configure(pg_url, prefix="fj")
    handles = Echo.dispatch_many(range(100)).handles()
    pool = ProcessWorker(pg_url, "fj", ["tests.apps.jobs"], ["-q", "default", "-p", "2"])
    try:
        assert [h.wait_result(timeout=60) for h in handles] == list(range(100))
        pool.proc.send_signal(signal.SIGTERM)
        out = pool.output()
        assert "100 completed" in out, out
    finally:
        if pool.proc.poll() is None:
            pool.proc.kill()
            pool.proc.wait()
        os.unlink(pool.log)


def test_one_application_dispatches_to_a_redis_queue_and_a_postgresql_queue(pg_url: str, redis_server: RedisServer, prefix: str,
                                                                             start_worker: Any) -> None:
    fastjobs.configure(redis_server.url, connection="redis", prefix=prefix)
    fastjobs.configure(pg_url, connection="pg")
    on_pg, on_redis = OnPg.dispatch(1).send(), OnRedis.dispatch(2).send()
    start_worker(queues=["mixed-pg"], connection="pg")
    start_worker(queues=["mixed-redis"], connection="redis")
    assert on_pg.wait_result(timeout=30) == "pg 1"
    assert on_redis.wait_result(timeout=30) == "redis 2"
    # Each store holds its own queue's jobs only.
    assert Queue("mixed-pg", connection="pg").counts()["completed"] == 1
    assert Queue("mixed-redis", connection="redis").counts()["completed"] == 1
    assert Queue("mixed-redis", connection="pg").counts()["completed"] == 0
    assert Queue("mixed-pg", connection="redis").counts()["completed"] == 0


def test_the_readme_postgresql_examples_run(pg_url: str, tmp_path: Any, monkeypatch: Any, start_worker: Any) -> None:
    """README "PostgreSQL": its module imported as the worker would, its other blocks run in
    order, their printed lines checked (tests/test_readme.py's rules), on this test's database."""
    import importlib

    from .test_readme import README, expectations, python_blocks, run_block

    blocks = [b for b in python_blocks(README.read_text(encoding="utf-8")) if b.postgres]
    modules, runs = [b for b in blocks if b.module], [b for b in blocks if not b.module]
    assert modules and runs, "README.md has no PostgreSQL example"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY)")
    monkeypatch.setenv("DATABASE_URL", pg_url)
    fastjobs.config.reset()  # the module configures the default connection, as an application would
    monkeypatch.setattr(importlib.import_module("fastjobs.job"), "_REGISTRY", {})
    monkeypatch.syspath_prepend(str(tmp_path))
    for b in modules:
        (tmp_path / f"{b.module}.py").write_text(b.code, encoding="utf-8")
    importlib.invalidate_caches()
    try:
        for b in modules:
            importlib.import_module(str(b.module))
        start_worker(queues=sorted({cls.queue for cls in fastjobs.registry().values()}))
        namespace: dict[str, Any] = {"__name__": "__readme__"}
        for b in runs:
            output = run_block(b, namespace)
            for line, expected in expectations(b):
                assert expected in output, f"README.md:{line}: expected the line {expected!r}, the block printed {output!r}"
    finally:
        for b in modules:
            sys.modules.pop(str(b.module), None)


def test_an_event_committed_late_is_read_in_its_place_not_lost(pg_url: str) -> None:
    fastjobs.configure(pg_url, connection="pg")
    q = Queue("default", connection="pg")
    q.set_events(True)  # written by the schema's triggers
    with psycopg.connect(pg_url) as conn:
        early = Echo.dispatch("early").on_connection("pg").send(conn=conn)  # its entry numbered first
        late = Echo.dispatch("late").on_connection("pg").send()  # numbered after, committed first
        # The open transaction holds the stream back: a reader sees neither yet, so it can
        # never have moved past the entry still to commit.
        assert list(q.events("0", timeout=0.3)) == []
    got = [(e.job_id, e.type) for e in q.events("0", timeout=0.5)]
    assert got == [(early.id, "waiting"), (late.id, "waiting")]
    first = next(iter(q.events("0", timeout=1)))
    assert [e.job_id for e in q.events(first.id, timeout=0.3)] == [late.id]
    assert abs((first.at - datetime.now(timezone.utc)).total_seconds()) < 60  # the entry's time, not its id
