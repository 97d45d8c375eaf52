"""What only the PostgreSQL store has: its schema (``init_db``, ``fastjobs db init``) and jobs
written by the application's own connection, inside its transaction (``send(conn=...)``)."""

from __future__ import annotations

import sys
from typing import Any

from . import _core

__all__ = ["init_db"]


def init_db(url: str) -> list[int]:
    """Creates the fastjobs schema in the PostgreSQL database of ``url``, or upgrades it to
    this version's; returns the schema versions it applied (``[]``: it was up to date, so
    running it again is harmless). Concurrent runs wait for each other. Raises ``ValueError``
    for a URL that is not ``postgresql://`` or ``postgres://`` (or a bad ``sslmode``),
    ``fastjobs.ConnectionError`` or ``AuthenticationError`` when the server cannot be reached
    or refuses the URL's user, and ``TLSError`` when TLS cannot work with the URL's settings."""
    if not isinstance(url, str):
        raise TypeError(f"init_db takes a postgresql:// URL (str), got {type(url).__name__}")
    return _core.init_schema(url)


def _driver(conn: Any) -> tuple[str, Any] | None:
    """Which driver made ``conn`` (a connection or a cursor): "psycopg", "psycopg-async" or
    "psycopg2", with the connection (a cursor's own); None for anything else. Only a driver
    the application imported can have made it, so none is imported here."""
    pg3 = sys.modules.get("psycopg")
    if pg3 is not None:
        for kind, connection, cursor in (("psycopg", pg3.Connection, pg3.Cursor),
                                         ("psycopg-async", pg3.AsyncConnection, pg3.AsyncCursor)):
            if isinstance(conn, connection):
                return kind, conn
            if isinstance(conn, cursor):
                return kind, conn.connection
    pg2 = sys.modules.get("psycopg2.extensions")
    if pg2 is not None:
        if isinstance(conn, pg2.connection):
            return "psycopg2", conn
        if isinstance(conn, pg2.cursor):
            return "psycopg2", conn.connection
    return None


def check_conn(conn: Any, *, asynchronous: bool) -> tuple[str, Any]:
    """The driver and connection of ``conn``; TypeError when it is no connection or cursor
    that can send the job the way asked (an async psycopg one is awaited:
    ``send_async(conn=...)``)."""
    found = _driver(conn)
    if found is None:
        raise TypeError(
            "conn= takes a psycopg (3) or psycopg2 connection or cursor, whose transaction the job joins; "
            f"got {type(conn).__module__}.{type(conn).__qualname__}")
    if asynchronous != (found[0] == "psycopg-async"):
        raise TypeError("an async psycopg connection or cursor goes to `await ....send_async(conn=...)`, "
                        "a sync one (psycopg or psycopg2) to `.send(conn=...)`")
    return found


def execute(kind: str, connection: Any, sql: str, params: dict[str, Any]) -> str:
    """Runs the enqueue statement on ``connection``, in its transaction (never committed
    here); returns its answer. A cursor of its own, with plain rows, whatever the
    application's cursors return."""
    if kind == "psycopg":
        from psycopg.rows import tuple_row

        with connection.cursor(row_factory=tuple_row) as cur:
            cur.execute(sql, params)
            row = cur.fetchone()
    else:
        plain = sys.modules["psycopg2.extensions"].cursor  # loaded: it made the connection
        with connection.cursor(cursor_factory=plain) as cur:
            cur.execute(sql, params)
            row = cur.fetchone()
    return str(row[0])


async def execute_async(connection: Any, sql: str, params: dict[str, Any]) -> str:
    """``execute`` on an async psycopg connection."""
    from psycopg.rows import tuple_row

    async with connection.cursor(row_factory=tuple_row) as cur:
        await cur.execute(sql, params)
        row = await cur.fetchone()
    return str(row[0])


def answer(job_id: str, written: str) -> tuple[str, bool, bool]:
    """(id, created, deduplicated) from the statement's answer: ``n`` written, ``e`` a job
    with that caller-chosen id exists, ``d<id>`` deduplicated by job ``<id>``."""
    if written.startswith("d"):
        return written[1:], False, True
    return job_id, written == "n", False
