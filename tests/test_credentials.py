"""Credentials: the password of the URL never shows (reprs, error messages, worker logs, the
CLI), and authentication failures are one typed, non-retryable error that a worker checks for
before it starts (as it does a database index the server lacks, or a host that does not exist).
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import fastjobs
from fastjobs import Queue, config

from .apps.jobs import Echo
from .conftest import ROOT, RedisServer, eventually, free_port

SECRET = "s3cret"


@pytest.fixture
def acl_url(redis_server: RedisServer, redis: Any) -> Iterator[str]:
    """An ACL user of the shared test Redis whose password is SECRET; yields its URL."""
    user = "fj-" + uuid.uuid4().hex[:8]
    redis("ACL", "SETUSER", user, "on", f">{SECRET}", "~*", "&*", "+@all")
    yield f"redis://{user}:{SECRET}@127.0.0.1:{redis_server.port}/0"
    redis("ACL", "DELUSER", user)


@pytest.fixture(scope="module")
def locked_redis() -> Iterator[RedisServer]:
    """A Redis whose default user needs the password SECRET (a URL without one gets NOAUTH)."""
    server = RedisServer()
    from .resp import Redis

    Redis(server.port).command("CONFIG", "SET", "requirepass", SECRET)
    yield server
    server.stop()


def unknown_host_is_known() -> bool:
    """The resolver says outright that a .invalid name does not exist (without a reachable
    DNS server it can only say "try again", which a worker rightly takes as temporary)."""
    try:
        socket.getaddrinfo("no-such-host.invalid", 6379)
    except socket.gaierror as e:
        return e.errno != socket.EAI_AGAIN
    return False


def no_secret(text: str) -> str:
    assert SECRET not in text, text
    return text


def test_repr_of_the_settings_masks_the_password(acl_url: str) -> None:
    fastjobs.configure(acl_url)
    s = config.settings()
    assert s.url == acl_url  # the real one, for connecting
    user = acl_url.split("//")[1].split(":")[0]
    for shown in (repr(s), str(s), repr(fastjobs.configure(acl_url, connection="other")), config.client().url):
        assert f"{user}:***@" in no_secret(shown)  # the user name stays
    assert config.mask_url(f"unix:///tmp/redis.sock?db=2&user=u&pass={SECRET}") == "unix:///tmp/redis.sock?db=2&user=u&pass=***"
    assert Queue().size() == 0  # and the URL still works


def _bad(url: str, what: str, **kw: Any) -> list[BaseException]:
    """The error of each way an operation can first connect: a direct sync dispatch, the
    shared async path, a waiter's pub/sub connection."""
    fastjobs.configure(url, connect_timeout=kw.get("connect_timeout", 2.0))
    errors: list[BaseException] = []
    for attempt in (lambda: Echo.dispatch(1).send(), lambda: Queue().size(), lambda: fastjobs.JobHandle("x-1", "default").wait_result(1)):
        with pytest.raises(fastjobs.FastJobsError) as e:
            attempt()
        errors.append(e.value)
    return errors


def test_errors_never_carry_the_password(acl_url: str) -> None:
    port = int(acl_url.rsplit(":", 1)[1].split("/")[0])
    user = acl_url.split("//")[1].split(":")[0]
    cases = {
        "wrong password": (f"redis://{user}:{SECRET}-wrong@127.0.0.1:{port}/0", fastjobs.AuthenticationError),
        "bad db": (f"redis://{user}:{SECRET}@127.0.0.1:{port}/99", fastjobs.StoreError),
        "unreachable": (f"redis://{user}:{SECRET}@127.0.0.1:{free_port()}/0", fastjobs.ConnectionError),
        "unknown host": (f"redis://{user}:{SECRET}@no-such-host.invalid:6379/0", fastjobs.ConnectionError),
    }
    for what, (url, kind) in cases.items():
        for e in _bad(url, what):
            assert isinstance(e, kind), (what, e)
            assert f"{user}:***@" in no_secret(str(e)) and SECRET not in repr(e), (what, e)
    with pytest.raises(ValueError) as bad:
        fastjobs.configure(f"redis://{user}:{SECRET}@[::1")
    no_secret(str(bad.value))


def test_authentication_error_is_typed_and_not_retryable(locked_redis: RedisServer, redis: Any, acl_url: str) -> None:
    assert "AuthenticationError" in fastjobs.__all__
    assert issubclass(fastjobs.AuthenticationError, fastjobs.FastJobsError)
    assert not issubclass(fastjobs.AuthenticationError, (fastjobs.ConnectionError, ConnectionError))
    port = locked_redis.port
    # wrong password, no password (NOAUTH), through every path that connects
    for url in (f"redis://:{SECRET}-wrong@127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/0"):
        for e in _bad(url, "auth"):
            assert type(e) is fastjobs.AuthenticationError, e
    noauth = _bad(f"redis://127.0.0.1:{port}/0", "noauth")[0]
    assert "requires a password" in str(noauth)
    # a user that may not load scripts: NOPERM while connecting
    user = "fj-noscript-" + uuid.uuid4().hex[:6]
    redis("ACL", "SETUSER", user, "on", f">{SECRET}", "~*", "&*", "+@all", "-@scripting")
    try:
        for e in _bad(acl_url.replace(acl_url.split("//")[1].split(":")[0], user, 1), "noperm"):
            assert type(e) is fastjobs.AuthenticationError and "permission" in str(e), e
    finally:
        redis("ACL", "DELUSER", user)
    fastjobs.configure(f"redis://:{SECRET}@127.0.0.1:{port}/0")
    assert Queue().size() == 0


@pytest.mark.parametrize(
    "case, error",
    [("wrong password", fastjobs.AuthenticationError), ("bad db", fastjobs.StoreError), ("unknown host", fastjobs.ConnectionError)],
)
def test_worker_run_raises_before_it_starts(case: str, error: type[BaseException], acl_url: str, caplog: Any) -> None:
    user = acl_url.split("//")[1].split(":")[0]
    url = {
        "wrong password": acl_url.replace(SECRET, SECRET + "-wrong"),
        "bad db": acl_url.replace("/0", "/99"),
        "unknown host": f"redis://{user}:{SECRET}@no-such-host.invalid:6379/0",
    }[case]
    fastjobs.configure(url, connect_timeout=2)
    if case == "unknown host" and not unknown_host_is_known():
        # Without a reachable DNS server the resolver can only say "try again": a lookup that
        # may work later, which the start check reports as trouble to retry, not as fatal.
        trouble = fastjobs.config.client().check_connection()
        assert trouble, trouble
        no_secret(trouble)
        return
    caplog.set_level(logging.INFO, logger="fastjobs")
    worker = fastjobs.Worker(jobs=[Echo], lease=5, grace=5)
    with pytest.raises(error) as e:
        worker.run(install_signals=False)
    no_secret(str(e.value))
    assert "worker started" not in caplog.text


def test_worker_logs_name_the_masked_url_and_the_prefix(acl_url: str, prefix: str, caplog: Any, start_worker: Any) -> None:
    fastjobs.configure(acl_url)
    caplog.set_level(logging.INFO, logger="fastjobs")
    w = start_worker(jobs=[Echo])
    assert Echo.dispatch("hi").send().wait_result(timeout=10) == "hi"
    w.stop()
    started = [r.getMessage() for r in caplog.records if "worker started" in r.getMessage()]
    user = acl_url.split("//")[1].split(":")[0]
    assert len(started) == 1 and f"redis://{user}:***@" in started[0] and repr(prefix) in started[0], started
    no_secret(caplog.text)


def test_worker_starts_and_retries_while_redis_is_unreachable(caplog: Any) -> None:
    port = free_port()
    fastjobs.configure(f"redis://user:{SECRET}@127.0.0.1:{port}/0", connect_timeout=1)
    caplog.set_level(logging.INFO, logger="fastjobs")
    worker = fastjobs.Worker(jobs=[Echo], lease=5, grace=1, scheduler=False)
    t = threading.Thread(target=worker.run, kwargs={"install_signals": False}, daemon=True)
    t.start()
    eventually(lambda: "worker started" in caplog.text, timeout=10)
    assert "cannot be reached yet" in caplog.text
    worker.stop()
    t.join(30)
    assert not t.is_alive()
    no_secret(caplog.text)


def _cli(url: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fastjobs", "worker", "tests.apps.jobs", "--url", url, *args],
                          cwd=str(ROOT), capture_output=True, text=True, timeout=timeout)


def test_cli_worker_exits_1_with_one_line_when_the_settings_cannot_work(acl_url: str, locked_redis: RedisServer) -> None:
    user = acl_url.split("//")[1].split(":")[0]
    cases = [
        (acl_url.replace(SECRET, SECRET + "-wrong"), "refused the user name or password"),
        (f"redis://127.0.0.1:{locked_redis.port}/0", "requires a password"),
        (acl_url.replace("/0", "/99"), "DB index is out of range"),
        (f"redis://{user}:{SECRET}@no-such-host.invalid:6379/0", "unknown host"),
        (f"redis://{user}:{SECRET}@[::1", "invalid Redis URL"),
    ]
    if not unknown_host_is_known():
        cases = [c for c in cases if c[1] != "unknown host"]
    for url, reason in cases:
        out = _cli(url)
        assert out.returncode == 1, (url, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("fastjobs worker: ") and reason in lines[0], out.stderr
        no_secret(out.stdout + out.stderr)


def test_cli_worker_starts_when_redis_is_merely_unreachable(spawn_worker: Any) -> None:
    p = spawn_worker("--grace", "1", url=f"redis://user:{SECRET}@127.0.0.1:{free_port()}/0")
    p.wait_for("worker started")
    p.proc.terminate()
    out = p.output()
    assert "cannot be reached yet" in out and "worker started" in out and "user:***@" in out, out
    no_secret(out)
