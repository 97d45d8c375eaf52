"""TLS to PostgreSQL from Python: the URL's ``sslmode`` and ``sslrootcert`` as libpq reads them.
Jobs dispatched and run over verify-full (the store, ``fastjobs db init`` and a worker in
another process), require without a CA, prefer falling back to plain, and the typed errors of
a CA that did not sign the server's certificate, a server without TLS and a bad sslmode. The
TLS server (conftest.py) takes TLS connections only: a plain one anywhere would fail."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import fastjobs
from fastjobs import Queue, config

from .apps.jobs import Echo
from .conftest import ROOT, PostgresServer, ProcessWorker


@pytest.fixture
def tls_db(postgres_tls_server: PostgresServer) -> Iterator[str]:
    """A database with the schema on the TLS server; its URL has no TLS parameters."""
    url = postgres_tls_server.database()
    yield url
    config.reset()
    postgres_tls_server.drop(url)


def _verified(server: PostgresServer, url: str, ca: str = "ca.pem") -> str:
    return f"{url}?sslmode=verify-full&sslrootcert={server.tls_dir / ca}"


def _tls_connections(server: PostgresServer, url: str) -> tuple[bool, int]:
    """Whether every client connection to the database of ``url`` uses TLS, and how many there are."""
    row = server.admin.execute(
        "SELECT coalesce(bool_and(s.ssl), false), count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
        "WHERE a.datname = %s AND a.backend_type = 'client backend'",
        (url.rsplit("/", 1)[1],),
    ).fetchone()
    assert row is not None
    return bool(row[0]), int(row[1])


def _cli(*args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", **({"FASTJOBS_URL": url} if url else {})}
    return subprocess.run([sys.executable, "-m", "fastjobs", *args], cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=60)


def test_verify_full_against_the_ca_runs_jobs_end_to_end(postgres_tls_server: PostgresServer) -> None:
    server = postgres_tls_server
    bare = f"{server.base}/tlscli"
    server.admin.execute("DROP DATABASE IF EXISTS tlscli")
    server.admin.execute("CREATE DATABASE tlscli")
    url = _verified(server, bare)
    made = _cli("db", "init", url)
    assert made.returncode == 0, made.stderr
    fastjobs.configure(url, prefix="fj")
    handles = [Echo.dispatch(i).send() for i in range(10)]
    handles += Echo.dispatch_many(range(10, 110)).handles()  # bulk: COPY on a connection of its own
    worker = ProcessWorker(url, "fj", ["tests.apps.jobs"], ["-q", "default", "-c", "2"])
    try:
        worker.wait_for("worker started", timeout=30)
        assert [h.wait_result(timeout=60) for h in handles] == list(range(110))
        # This process's pool, listening and bulk connections and the worker's: all TLS.
        all_tls, n = _tls_connections(server, bare)
        assert all_tls and n >= 10, n
        worker.proc.send_signal(signal.SIGTERM)
        out = worker.output()
        assert "110 completed" in out, out
    finally:
        if worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait()
        os.unlink(worker.log)
        config.reset()
        server.drop(bare)


def test_require_encrypts_without_a_ca(postgres_tls_server: PostgresServer, tls_db: str, start_worker: Any) -> None:
    fastjobs.configure(f"{tls_db}?sslmode=require", connection="pg")
    start_worker(queues=["default"], connection="pg")
    assert Echo.dispatch("over TLS").on_connection("pg").send().wait_result(timeout=30) == "over TLS"
    assert _tls_connections(postgres_tls_server, tls_db)[0]


def test_a_ca_that_did_not_sign_the_certificate_is_a_tls_error_and_the_worker_exits(postgres_tls_server: PostgresServer,
                                                                                      tls_db: str) -> None:
    wrong = _verified(postgres_tls_server, tls_db, ca="other-ca.pem")
    with pytest.raises(fastjobs.TLSError, match=r"does not verify against sslrootcert=.*other-ca\.pem") as e:
        fastjobs.configure(wrong, connection="pg")
    # A StoreError, not a (retryable) ConnectionError: nothing waits for it to change.
    assert isinstance(e.value, fastjobs.StoreError) and not isinstance(e.value, fastjobs.ConnectionError)
    refused = _cli("worker", "tests.apps.jobs", "-q", "default", url=wrong)
    assert refused.returncode == 1 and "does not verify" in refused.stderr, refused.stderr
    assert "worker started" not in refused.stdout + refused.stderr
    with pytest.raises(fastjobs.TLSError, match=r"cannot read the sslrootcert file .*missing\.pem"):
        fastjobs.configure(f"{tls_db}?sslmode=verify-ca&sslrootcert={postgres_tls_server.tls_dir / 'missing.pem'}", connection="pg")


def test_require_against_a_server_without_tls_is_a_tls_error_and_prefer_goes_plain(postgres_server: PostgresServer,
                                                                                     pg_url: str) -> None:
    with pytest.raises(fastjobs.TLSError, match="does not accept TLS"):
        fastjobs.configure(f"{pg_url}?sslmode=require", connection="pg")
    fastjobs.configure(f"{pg_url}?sslmode=prefer", connection="pg")
    Echo.dispatch("plain").on_connection("pg").send()
    assert Queue("default", connection="pg").counts()["waiting"] == 1
    all_tls, n = _tls_connections(postgres_server, pg_url)
    assert not all_tls and n >= 5


def test_bad_tls_settings_are_refused_before_connecting() -> None:
    with pytest.raises(ValueError, match=r'unknown sslmode "verify".*verify-full'):
        fastjobs.configure("postgresql://u@127.0.0.1:1/x?sslmode=verify", connection="pg")
    with pytest.raises(ValueError, match="needs the CA"):
        fastjobs.configure("postgresql://u@127.0.0.1:1/x?sslmode=verify-full", connection="pg")
    # Redis's TLS files would be ignored: the URL carries PostgreSQL's.
    with pytest.raises(ValueError, match="sslrootcert="):
        fastjobs.configure("postgresql://u@127.0.0.1:1/x?sslmode=require", connection="pg", tls_ca_file="/etc/ca.pem")
