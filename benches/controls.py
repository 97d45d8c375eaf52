"""What the queue controls cost, on a throwaway redis-server: cancelling one waiting job by id
at several depths of a queue filled by a bulk dispatch (the scan of the ready lists), and
emptying a queue of N jobs (one script call per 5,000 jobs).

    python benches/controls.py [--jobs 1000000]

Each figure is the median of 5 calls; ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "peers"))

import fastjobs  # noqa: E402
from run import Redis  # noqa: E402


class Item(fastjobs.Job[int, None]):
    queue = "controls"

    def process(self, p: int) -> None:
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=1_000_000)
    args = ap.parse_args()
    n = args.jobs
    out: dict[str, float] = {}
    redis = Redis()
    try:
        fastjobs.configure(redis.url, prefix="cb")
        q = fastjobs.Queue("controls")
        res = Item.dispatch_many(range(n))
        for depth in (1_000, 100_000, n - 1):
            if depth >= n:
                continue
            times = []
            for k in range(5):
                h = res.handle(depth - k)
                t0 = time.perf_counter()
                assert h.cancel() == "waiting"
                times.append(time.perf_counter() - t0)
            out[f"cancel_at_{depth}_ms"] = round(statistics.median(times) * 1000, 2)
            print(f"cancel a waiting job {depth:,} deep: {out[f'cancel_at_{depth}_ms']} ms", flush=True)
        left = q.counts()["waiting"]
        t0 = time.perf_counter()
        emptied = q.empty()
        dt = time.perf_counter() - t0
        assert emptied == left, (emptied, left)
        out["empty_jobs"] = emptied
        out["empty_s"] = round(dt, 3)
        out["empty_jobs_per_s"] = round(emptied / dt)
        print(f"empty {emptied:,} jobs: {dt:.2f} s ({emptied / dt:,.0f} jobs/s)", flush=True)
    finally:
        redis.stop()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
