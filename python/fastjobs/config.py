"""Where fastjobs finds Redis: ``configure()``, the ``FASTJOBS_URL`` environment variable, or
the default ``redis://127.0.0.1:6379/0``; named connections for apps with several servers."""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, fields, replace
from typing import Any
from urllib.parse import urlsplit

from . import _core
from .options import check_seconds

__all__ = ["configure", "Connection", "DEFAULT_URL", "mask_url", "store_name"]

DEFAULT_URL = "redis://127.0.0.1:6379/0"

_SECRET_PARAM = re.compile(r"([?&](?:pass|password)=)[^&#]*", re.IGNORECASE)


def store_name(url: str) -> str:
    """The store a URL names, for log lines and messages: Redis, Redis Cluster, Redis
    Sentinel, PostgreSQL, SQLite or the in-process store."""
    scheme = url.split(":", 1)[0].removeprefix("rediss+").removeprefix("redis+")
    names = {"postgresql": "PostgreSQL", "postgres": "PostgreSQL", "sqlite": "SQLite", "memory": "In-process store", "cluster": "Redis Cluster",
             "sentinel": "Redis Sentinel"}
    return names.get(scheme, "Redis")


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (the user name stays): the password of
    ``redis://user:password@host``, and the ``pass`` parameter of ``unix:///path?pass=...``.
    For every repr, log line and message that names a server."""
    try:
        parts = urlsplit(url)
        masked = url
        if parts.password is not None:
            userinfo, _, host = parts.netloc.rpartition("@")
            masked = masked.replace(parts.netloc, f"{userinfo.partition(':')[0]}:***@{host}", 1)
    except ValueError:
        return "<unparsable URL>"
    return _SECRET_PARAM.sub(r"\1***", masked)


@dataclass(frozen=True)
class Connection:
    """Settings of one named connection. Durations are in seconds. Its repr masks the
    password of the URL; ``url`` itself is the real one."""

    url: str = DEFAULT_URL
    prefix: str = "fj"
    connect_timeout: float = 5.0
    response_timeout: float = 30.0
    result_ttl: float = 86400.0
    max_payload: int = 512 * 1024
    #: For ``rediss://`` with a private CA, and for client certificates (mTLS): PEM file paths.
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={mask_url(self.url) if f.name == 'url' else getattr(self, f.name)!r}" for f in fields(self))
        return f"Connection({shown})"


_lock = threading.Lock()
_connections: dict[str, Connection] = {}
_clients: dict[str, tuple[int, _core.Client]] = {}


def _default() -> Connection:
    return Connection(url=os.environ.get("FASTJOBS_URL", DEFAULT_URL), prefix=os.environ.get("FASTJOBS_PREFIX", "fj"))


def configure(
    url: str | None = None,
    *,
    prefix: str | None = None,
    connection: str = "default",
    connect_timeout: float | None = None,
    response_timeout: float | None = None,
    result_ttl: float | None = None,
    max_payload: int | None = None,
    tls_ca_file: str | None = None,
    tls_cert_file: str | None = None,
    tls_key_file: str | None = None,
    tracing: bool | None = None,
) -> Connection:
    """Sets (or updates) the named connection; ``connection="default"`` is the one jobs use
    unless they name another. Settings not given keep their current value. The URL forms are
    ``redis://[user:password@]host[:port][/db]``, ``rediss://`` for TLS (server certificates
    are checked against the system's roots, or ``tls_ca_file``; ``#insecure`` at the end of the
    URL skips the check) and ``unix:///path/to/redis.sock``; the other stores'
    ``postgresql://[user[:password]@]host[:port]/database`` (TLS as libpq's parameters say,
    ``?sslmode=verify-full&sslrootcert=ca.pem`` for one: README "TLS"),
    ``sqlite:///path/to/file.db`` and ``memory://``.

    ``connect_timeout`` bounds opening a connection (name lookup, TCP, TLS, authentication,
    loading the scripts), ``response_timeout`` each answer to a command (and each write):
    each 0.001 s to 100 years, as ``result_ttl``.

    Nothing connects to Redis here; the first operation does, and raises
    :class:`fastjobs.ConnectionError` if Redis cannot be reached within ``connect_timeout``.
    A ``postgresql://`` (or ``postgres://``) URL is connected to here, and its database's
    schema checked: :class:`fastjobs.SchemaError` says to run ``fastjobs db init URL``,
    :class:`fastjobs.TLSError` that TLS cannot work with the URL's settings. Its
    ``prefix`` stays ``"fj"``: one database holds one application's jobs.

    ``tracing=True`` turns OpenTelemetry tracing on for the whole process, every connection
    (README "Tracing"; needs the ``opentelemetry-api`` package), ``False`` turns it off.
    """
    if tracing is not None:
        from . import tracing as _tracing

        _tracing.enable(tracing)
    if connect_timeout is not None:
        connect_timeout = check_seconds(connect_timeout, "connect_timeout", minimum=0.001)
    if response_timeout is not None:
        response_timeout = check_seconds(response_timeout, "response_timeout", minimum=0.001)
    if result_ttl is not None:
        result_ttl = check_seconds(result_ttl, "result_ttl", minimum=0.001)
    changes: dict[str, Any] = {
        k: v
        for k, v in dict(
            url=url,
            prefix=prefix,
            connect_timeout=connect_timeout,
            response_timeout=response_timeout,
            result_ttl=result_ttl,
            max_payload=max_payload,
            tls_ca_file=tls_ca_file,
            tls_cert_file=tls_cert_file,
            tls_key_file=tls_key_file,
        ).items()
        if v is not None
    }
    if not changes and tracing is not None:
        return settings(connection)  # tracing alone: the connection is left as it is
    with _lock:
        current = _connections.get(connection) or (_default() if connection == "default" else Connection())
        new = replace(current, **changes)
        # Made before storing: a bad URL or prefix raises ValueError here. Kept: a
        # PostgreSQL client has connected and checked the schema already.
        made = _make(new)
        _connections[connection] = new
        _clients[connection] = (os.getpid(), made)
    return new


def _make(c: Connection) -> _core.Client:
    return _core.Client(
        c.url,
        prefix=c.prefix,
        connect_timeout=c.connect_timeout,
        response_timeout=c.response_timeout,
        result_ttl=c.result_ttl,
        max_payload=c.max_payload,
        tls_ca_file=c.tls_ca_file,
        tls_cert_file=c.tls_cert_file,
        tls_key_file=c.tls_key_file,
    )


def settings(connection: str = "default") -> Connection:
    with _lock:
        if connection in _connections:
            return _connections[connection]
        if connection == "default":
            return _default()
    raise ValueError(f"unknown connection {connection!r}: call fastjobs.configure(..., connection={connection!r}) first")


def configured() -> dict[str, Connection]:
    """The connections set with ``configure()``, by name (a spawned pool child gets them)."""
    with _lock:
        return dict(_connections)


def client(connection: str = "default") -> _core.Client:
    """The engine client of a named connection, one per process (a forked child makes its own)."""
    pid = os.getpid()
    entry = _clients.get(connection)
    if entry is not None and entry[0] == pid:
        return entry[1]
    c = settings(connection)
    with _lock:
        entry = _clients.get(connection)
        if entry is not None and entry[0] == pid:
            return entry[1]
        made = _make(c)
        _clients[connection] = (pid, made)
        return made


def forget(connection: str, previous: Connection | None = None) -> None:
    """Puts ``connection`` back as it was (``previous``), or unset when it was not configured."""
    with _lock:
        if previous is None:
            _connections.pop(connection, None)
        else:
            _connections[connection] = previous
        _clients.pop(connection, None)


def reset() -> None:
    """Forgets every configured connection (tests use it between cases)."""
    with _lock:
        _connections.clear()
        _clients.clear()
