"""Worker pools against one worker process, on a throwaway redis-server: the drain rate of
`fastjobs worker --processes 1 | 2 | auto` and of a plain `fastjobs worker` (one process),
with two task bodies: one redis-py INCR (I/O-bound), and ~2 ms of pure-Python work then the
INCR (CPU-bound: one process is held to one core by the GIL).

    python benches/pool.py [--rounds 3] [--incr-jobs 60000] [--cpu-jobs 6000]

The rate is taken between the moment 1% of the jobs are done and the moment all are (start-up
left out, as W2 of benches/peers). Settings run alternated, round after round; the figures are
medians. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "peers"))

import redis as redis_py  # noqa: E402

import fastjobs  # noqa: E402
from _pool_tasks import Cpu, Incr, spin  # noqa: E402
from run import Redis  # noqa: E402

# Handler threads per process: 4 overlap the INCRs' round trips; CPU-bound work gains
# nothing from more than one under the GIL.
CONCURRENCY = {"incr": "4", "cpu": "1"}
SETTINGS = {"one process": [], "--processes 1": ["--processes", "1"], "--processes 2": ["--processes", "2"],
            "--processes auto": ["--processes", "auto"]}


def calibrate() -> int:
    """Loop turns of `spin` that take ~2 ms here."""
    turns = 10_000
    while True:
        t0 = time.perf_counter()
        spin(turns)
        took = time.perf_counter() - t0
        if took > 0.02:
            return int(turns * 0.002 / took)
        turns *= 2


def drain(url: str, body: str, n: int, args: list[str], env: dict[str, str]) -> float:
    r = redis_py.Redis.from_url(url)
    r.flushall()
    (Incr if body == "incr" else Cpu).dispatch_many(range(n))
    cmd = [sys.executable, "-m", "fastjobs", "worker", "_pool_tasks", "--queue", "bench", "--concurrency", CONCURRENCY[body],
           "--log-level", "WARNING", *args]
    worker = subprocess.Popen(cmd, env=env, cwd=str(HERE), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while int(r.get("bench:done") or 0) < n // 100:
            time.sleep(0.001)
        t0, d0 = time.perf_counter(), int(r.get("bench:done") or 0)
        while int(r.get("bench:done") or 0) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{args}: the drain did not finish")
            time.sleep(0.002)
        return (n - d0) / (time.perf_counter() - t0)
    finally:
        worker.terminate()
        worker.wait(60)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--incr-jobs", type=int, default=60_000)
    ap.add_argument("--cpu-jobs", type=int, default=6_000)
    args = ap.parse_args()
    from fastjobs.pool import usable_cores

    server = Redis()
    try:
        fastjobs.configure(server.url, prefix="bench")
        turns = calibrate()
        env = dict(os.environ, FASTJOBS_URL=server.url, FASTJOBS_PREFIX="bench", BENCH_REDIS_URL=server.url,
                   BENCH_SPIN=str(turns), PYTHONPATH=str(HERE))
        rates: dict[str, dict[str, list[float]]] = {b: {s: [] for s in SETTINGS} for b in CONCURRENCY}
        for rnd in range(args.rounds):
            for body, n in (("incr", args.incr_jobs), ("cpu", args.cpu_jobs)):
                for name, flags in SETTINGS.items():
                    rate = drain(server.url, body, n, flags, env)
                    rates[body][name].append(rate)
                    print(f"round {rnd + 1} {body:4} {name:17} {rate:9,.0f} jobs/s", flush=True)
        out: dict[str, object] = {"cores": usable_cores(), "spin_turns": turns}
        print(f"\nmedians of {args.rounds} rounds; usable cores: {usable_cores()}")
        for body in CONCURRENCY:
            one = statistics.median(rates[body]["one process"])
            for name in SETTINGS:
                med = statistics.median(rates[body][name])
                out[f"{body} {name}"] = round(med)
                print(f"{body:4} {name:17} {med:9,.0f} jobs/s  {med / one:4.2f}x one process")
        print(json.dumps(out))
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
