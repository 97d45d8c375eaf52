"""fastjobs' PostgreSQL store beside the PostgreSQL queues pgqueuer and procrastinate, on one
throwaway PostgreSQL server (rust/store/postgres/testserver.sh), with fastjobs÷peer ratios.

    python benches/peers/pg.py [--systems fastjobs,pgqueuer,procrastinate] [--workloads W1,W2,W3]
                               [--quick] [--n W1=100000,W2=20000]

Each system and workload gets a fresh database on the same server, its adapter
(pg_adapters/<system>_pg.py) a process of its own with the system's interpreter: fastjobs the
project's .venv, the peers .venv-peers-<system> (venvs.txt; `make peers` installs them).
CONTRACT.md, "PostgreSQL peers", says what each workload measures. The last line printed is
one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))

from stores import PostgresStore  # noqa: E402

FIGURES = {
    "W1": ("jobs_per_s", "higher", "bulk enqueue, jobs/s"),
    "W2": ("jobs_per_s", "higher", "one worker process drains no-op jobs, jobs/s"),
    "W3": ("p50_ms", "lower", "dispatch -> start, idle worker, p50 ms"),
}
DEFAULT_N = {"W1": 100_000, "W2": 20_000, "W3": 1000}
QUICK_N = {"W1": 20_000, "W2": 5_000, "W3": 1000}
SYSTEMS = ("fastjobs", "pgqueuer", "procrastinate")


def interpreter(system: str) -> Path:
    return ROOT / (".venv" if system == "fastjobs" else f".venv-peers-{system}") / "bin" / "python"


def fmt(v: Any) -> str:
    if isinstance(v, (int, float)):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    return str(v)


def table(results: dict[str, dict[str, dict[str, Any]]], workloads: list[str]) -> str:
    rows = []
    for w in workloads:
        key, better, title = FIGURES[w]
        mine = results.get("fastjobs", {}).get(w, {}).get(key)
        peers = [(r[key], s) for s, per in results.items() if s != "fastjobs"
                 for r in [per.get(w, {})] if isinstance(r.get(key), (int, float)) and r[key]]
        best = (max if better == "higher" else min)(peers, default=None)
        rows.append(f"\n{w}: {title} ({better} is better)")
        rows.append(f"  {'system':<14}{'value':>12}{'fastjobs ÷ it':>16}  notes")
        for system, per in results.items():
            r = per.get(w, {})
            if "error" in r:
                rows.append(f"  {system:<14}{'—':>12}{'':>16}  {r['error'][:100]}")
                continue
            v = r.get(key)
            ratio = ""
            if system != "fastjobs" and isinstance(mine, (int, float)) and mine and v:
                ratio = f"{(mine / v if better == 'higher' else v / mine):,.1f}×"  # noqa: RUF001 - multiplication sign
            notes = [f"p99 {r['p99_ms']}"] if "p99_ms" in r else []
            notes += [f"{k.split('_')[0]} {r[k]} µs/job" for k in ("worker_us_per_job", "server_us_per_job") if k in r]
            rows.append(f"  {system:<14}{fmt(v):>12}{ratio:>16}  {', '.join(notes)}")
        if best and isinstance(mine, (int, float)) and mine:
            x = mine / best[0] if better == "higher" else best[0] / mine
            rows.append(f"  {'fastjobs ÷ best peer':<26}{x:>16,.1f}×  (best peer: {best[1]})")  # noqa: RUF001
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--workloads", default="W1,W2,W3")
    ap.add_argument("--quick", action="store_true", help="smaller n, for a smoke run")
    ap.add_argument("--n", default="", help="jobs per run, e.g. W1=1000000,W2=100000")
    ap.add_argument("--limit", type=float, default=600.0, help="seconds per adapter run")
    args = ap.parse_args()
    n_of = dict(QUICK_N if args.quick else DEFAULT_N)
    for item in filter(None, args.n.split(",")):
        k, _, v = item.partition("=")
        n_of[k] = int(v)
    workloads = args.workloads.split(",")
    systems = [s for s in args.systems.split(",") if interpreter(s).exists() or print(
        f"{s}: not installed ({interpreter(s)} is missing: `make peers`)", file=sys.stderr)]
    server = PostgresStore()
    results: dict[str, dict[str, Any]] = {}
    try:
        print(f"PostgreSQL {server.version()} on loopback (fsync off, synchronous_commit off), {os.cpu_count()} cores; "
              f"systems: {', '.join(systems)}", file=sys.stderr)
        for system in systems:
            for w in workloads:
                dsn = server.fresh(init=False)
                cmd = [str(interpreter(system)), str(HERE / "pg_adapters" / f"{system}_pg.py"), "--dsn", dsn,
                       "--workload", w, "--n", str(n_of[w]), "--server-pid", str(server.server_pid())]
                env = dict(os.environ, PEER_BUDGET_S=str(args.limit - 20))
                try:
                    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.limit, env=env, cwd=str(ROOT))
                    lines = [x for x in out.stdout.splitlines() if x.startswith("{")]
                    r = json.loads(lines[-1]) if lines else {"error": (out.stderr.strip().splitlines() or ["no output"])[-1][:300]}
                except subprocess.TimeoutExpired:
                    r = {"error": f"no answer within {args.limit:.0f} s"}
                results.setdefault(system, {})[w] = r
                print(f"  {system:<14} {w}: {r.get('error') or fmt(r.get(FIGURES[w][0]))}", file=sys.stderr)
        print(table(results, workloads))
        print(json.dumps({"postgres": server.version(), "cores": os.cpu_count(), "results": results}))
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
