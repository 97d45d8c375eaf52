"""Where a PostgreSQL system's time goes: one workload of pg.py (default W2, fastjobs) on a
throwaway server with pg_stat_statements loaded (every statement, nested ones too), then the
statements by total time: calls, ms in all, µs per call, calls and µs per job.

    python benches/peers/pg_statements.py [--system fastjobs|pgqueuer|procrastinate] [--workload W2] [--n 20000]
                                          [--sql FILE [--sql FILE2]]

``--sql FILE`` (fastjobs, repeatable): runs FILE in the database after `fastjobs db init`,
before the workload, to measure a change to the schema's functions without a build
(pg_schema_11.sql: the schema before version 12, measured in benches/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from pg import interpreter  # noqa: E402
from stores import PostgresStore  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--system", default="fastjobs")
    ap.add_argument("--workload", default="W2")
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--explain", type=float, default=None, metavar="MS",
                    help="also log the plans (EXPLAIN ANALYZE, nested statements too) of statements slower than MS, "
                    "and print the server log's plans at the end")
    ap.add_argument("--sql", action="append", default=[], help="fastjobs: SQL run after `fastjobs db init`, before the workload")
    a = ap.parse_args()
    server = PostgresStore()
    try:
        libs = "pg_stat_statements" + ("', 'auto_explain" if a.explain is not None else "")
        server.sql(f"ALTER SYSTEM SET shared_preload_libraries = '{libs}'")
        server.restart()
        server.sql("ALTER SYSTEM SET pg_stat_statements.track = 'all'")
        if a.explain is not None:
            for setting in (f"auto_explain.log_min_duration = {a.explain}", "auto_explain.log_analyze = on",
                            "auto_explain.log_nested_statements = on"):
                server.sql(f"ALTER SYSTEM SET {setting}")
        server.sql("SELECT pg_reload_conf()")
        dsn = server.fresh(init=False)
        db = dsn.rsplit("/", 1)[1]
        server.sql("CREATE EXTENSION pg_stat_statements", db=db)
        if a.sql:
            subprocess.run([str(interpreter("fastjobs")), "-m", "fastjobs", "db", "init", dsn], check=True, stdout=subprocess.DEVNULL)
            for path in a.sql:
                subprocess.run([server.psql, "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres", "-d", db, "-q",
                                "-v", "ON_ERROR_STOP=1", "-f", path], check=True)
            server.sql("SELECT pg_stat_statements_reset()", db=db)
        cmd = [str(interpreter(a.system)), str(HERE / "pg_adapters" / f"{a.system}_pg.py"), "--dsn", dsn,
               "--workload", a.workload, "--n", str(a.n), "--server-pid", str(server.server_pid())]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=dict(os.environ, PEER_BUDGET_S="880"))
        result = json.loads([x for x in out.stdout.splitlines() if x.startswith("{")][-1])
        print(json.dumps(result))
        rows = server.sql(
            "SELECT calls, round(total_exec_time::numeric, 1), round((total_exec_time * 1000 / calls)::numeric, 1), "
            "regexp_replace(left(query, 110), '\\s+', ' ', 'g') FROM pg_stat_statements "
            f"WHERE dbid = (SELECT oid FROM pg_database WHERE datname = '{db}') "
            f"ORDER BY total_exec_time DESC LIMIT {a.top}", db=db)
        n = a.n
        print(f"{'calls':>9} {'total ms':>10} {'µs/call':>9} {'calls/job':>10} {'µs/job':>8}  statement (nested ones counted inside their callers too)")
        for line in rows.splitlines():
            calls, total, per, query = line.split("|", 3)
            print(f"{int(calls):>9} {float(total):>10.1f} {float(per):>9.1f} {int(calls) / n:>10.3f} {float(total) * 1000 / n:>8.1f}  {query}")
        if a.explain is not None:
            print((server.dir / "server.log").read_text()[-20000:])
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
