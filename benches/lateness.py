"""W5 extended: lateness of 10,000 delayed jobs due over 10 s while 100,000 other delayed jobs
wait far in the future, on a throwaway redis-server, one worker process (or a pool of N with
LATENESS_PROCESSES=N).

    python benches/lateness.py [--jobs 10000] [--spread 10] [--background 100000]

Lateness = when the handler starts - when the job was due (both from this machine's clock; a
delay travels as whole milliseconds, so single figures carry up to 1 ms of rounding either
way). Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "peers"))

from run import Redis, fastjobs_worker  # noqa: E402

JOBS = """
import time
import fastjobs

class Due(fastjobs.Job[dict, None]):
    queue = "due"
    def process(self, p):
        return round(time.time() * 1000 - p["due"], 3)

class Someday(fastjobs.Job[dict, None]):
    queue = "due"
    def process(self, p):
        return None
"""


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--spread", type=float, default=10.0, help="seconds over which the jobs fall due")
    ap.add_argument("--background", type=int, default=100_000, help="delayed jobs due in 30 days")
    args = ap.parse_args()

    redis = Redis()
    tmp = Path(tempfile.mkdtemp(prefix="fastjobs-lateness-"))
    (tmp / "lateness_jobs.py").write_text(JOBS)
    sys.path.insert(0, str(tmp))
    from lateness_jobs import Due, Someday  # type: ignore[import-not-found]

    import fastjobs

    fastjobs.configure(redis.url, prefix="late")
    # LATENESS_PROCESSES=N: a pool of N processes (one of them runs the scheduler).
    pool = ("--processes", os.environ["LATENESS_PROCESSES"]) if os.environ.get("LATENESS_PROCESSES") else ()
    worker = fastjobs_worker(redis.url, "late", tmp, "lateness_jobs", "due", int(os.environ.get("LATENESS_CONCURRENCY", "4")),
                             extra=pool)
    try:
        Someday.dispatch_many(({"i": i} for i in range(args.background)), delay="30d")
        time.sleep(1.0)  # the worker is up and idle
        lead = 2.0  # the first job falls due after every job is written
        start = time.time() * 1000 + lead * 1000
        dues = sorted(start + random.random() * args.spread * 1000 for _ in range(args.jobs))
        order = list(range(args.jobs))
        random.shuffle(order)  # dispatched in random order, so heads keep changing
        builders = []
        for k in order:
            due = round(dues[k])
            builders.append(Due.dispatch({"due": due}).at(datetime.fromtimestamp(due / 1000, timezone.utc)))
        t0 = time.time()
        result = fastjobs.BulkDispatcher(builders).dispatch()
        written_s = time.time() - t0
        if written_s > lead - 0.2:
            print(f"warning: writing took {written_s:.2f}s, close to the {lead}s lead", file=sys.stderr)
        # Results are read once every job fell due, so this process stays out of the way.
        time.sleep(max(0.0, start / 1000 + args.spread - time.time()) + 0.5)
        late = [result.handle(i).wait_result(timeout=60) for i in range(len(result))]
        counts = fastjobs.Queue("due").counts()
    finally:
        worker.terminate()
        worker.wait(30)
        redis.stop()
    figures = {
        "jobs": args.jobs,
        "spread_s": args.spread,
        "background_delayed": args.background,
        "still_delayed": counts["delayed"],
        "p50_ms": round(percentile(late, 0.50), 3),
        "p90_ms": round(percentile(late, 0.90), 3),
        "p99_ms": round(percentile(late, 0.99), 3),
        "max_ms": round(max(late), 3),
        "min_ms": round(min(late), 3),
        "early": sum(1 for x in late if x < -1),
    }
    print(f"lateness of {args.jobs:,} jobs over {args.spread:g}s with {args.background:,} far-future delayed jobs waiting: "
          f"p50 {figures['p50_ms']} ms, p90 {figures['p90_ms']} ms, p99 {figures['p99_ms']} ms, max {figures['max_ms']} ms", file=sys.stderr)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
