"""procrastinate's app and tasks for the PostgreSQL bench (the DSN from $BENCH_DSN)."""

import os

from _pg_common import bump, started
from procrastinate import App, PsycopgConnector

app = App(connector=PsycopgConnector(conninfo=os.environ["BENCH_DSN"]))


@app.task(name="noop", queue="bench")
async def noop(**p):
    bump()


@app.task(name="lat", queue="bench")
async def lat(**p):
    started(p["i"])
