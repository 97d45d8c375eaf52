"""Connection settings: URL forms (db number, password), named connections, bad URLs."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fastjobs
from fastjobs import Queue

from .apps.jobs import Echo
from .conftest import RedisServer, free_port
from .resp import Redis


class PasswordRedis(RedisServer):
    def __init__(self) -> None:
        super().__init__()
        Redis(self.port).command("CONFIG", "SET", "requirepass", "s3cret")


@pytest.fixture
def second_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


def test_db_number_selects_the_database(redis_server: RedisServer, redis: Any, prefix: str) -> None:
    fastjobs.configure(f"redis://127.0.0.1:{redis_server.port}/3")
    Echo.dispatch(1).send()
    assert Queue().size() == 1
    assert redis("EXISTS", f"{prefix}:{{default}}:wait") == 0  # not in db 0
    fastjobs.configure(redis_server.url)
    assert Queue().size() == 0


def test_password_in_the_url() -> None:
    server = PasswordRedis()
    try:
        fastjobs.configure(f"redis://:s3cret@127.0.0.1:{server.port}/0")
        Echo.dispatch(1).send()
        assert Queue().size() == 1
        fastjobs.configure(f"redis://:wrong@127.0.0.1:{server.port}/0")
        with pytest.raises(fastjobs.FastJobsError) as e:
            Queue().size()
        assert "wrong" not in str(e.value) and "***" in str(e.value)
    finally:
        server.stop()


def test_named_connections(second_redis: RedisServer, start_worker: Any) -> None:
    fastjobs.configure(second_redis.url, connection="reports", prefix="rep")

    class Report(fastjobs.Job[int, int]):
        connection = "reports"

        def process(self, payload: int) -> int:
            return payload + 1

    h = Report.dispatch(1).send()
    assert Queue(connection="reports").size() == 1
    assert Queue().size() == 0
    Echo.dispatch(2).on_connection("reports").send()
    assert Queue(connection="reports").size() == 2
    start_worker(connection="reports")
    assert h.wait_result(timeout=10) == 2


def test_unknown_connection_name() -> None:
    with pytest.raises(ValueError, match="unknown connection 'nope'"):
        Echo.dispatch(1).on_connection("nope")


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "redis://:x@[::1", "not a url"])
def test_invalid_url_is_refused_at_configure(url: str) -> None:
    with pytest.raises(ValueError, match=r"invalid (Redis|store) URL"):
        fastjobs.configure(url)


def test_invalid_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid key prefix"):
        fastjobs.configure(prefix="has space")


def test_configure_keeps_unchanged_settings(redis_server: RedisServer) -> None:
    c = fastjobs.configure(result_ttl=60)
    assert c.url == redis_server.url and c.result_ttl == 60


class TlsRedis(RedisServer):
    """redis-server with TLS only, its certificate signed by a throwaway CA."""

    def __init__(self, certs: Path) -> None:
        self.certs = certs
        self.tls_port = free_port()
        super().__init__()

    def _args(self) -> list[str]:
        c = self.certs
        return ["--port", str(self.port), "--tls-port", str(self.tls_port), "--tls-cert-file", str(c / "server.pem"),
                "--tls-key-file", str(c / "server.key"), "--tls-ca-cert-file", str(c / "ca.pem"), "--tls-auth-clients", "no"]


def make_certs(d: Path) -> Path:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=fastjobs test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem",
        "-days", "2", "-extfile", "ext.cnf")
    return d


def test_tls(tmp_path: Path, start_worker: Any) -> None:
    server = TlsRedis(make_certs(tmp_path))
    try:
        url = f"rediss://127.0.0.1:{server.tls_port}/0"
        fastjobs.configure(url, tls_ca_file=str(tmp_path / "ca.pem"))
        start_worker()
        assert Echo.dispatch("over tls").send().wait_result(timeout=10) == "over tls"
        fastjobs.configure(url, connection="unchecked", connect_timeout=2)
        with pytest.raises(fastjobs.ConnectionError, match="UnknownIssuer"):
            Queue(connection="unchecked").size()
        fastjobs.configure(url + "#insecure", connection="insecure")
        assert Queue(connection="insecure").size() == 0
        with pytest.raises(ValueError, match="cannot read the TLS CA file"):
            fastjobs.configure(url, connection="missing", tls_ca_file=str(tmp_path / "nope.pem"))
    finally:
        server.stop()
