"""Flow overhead: dispatch and complete a JobFlow of 10,000 children (and its parent), against
the same 10,000 jobs dispatched plainly (dispatch_many), each drained by one worker process on
a throwaway redis-server.

    python benches/flow.py [--children 10000]

Time = from the dispatch call until the last job (the parent, for the flow) completed. Ends
with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "peers"))

from run import Redis, fastjobs_worker  # noqa: E402

JOBS = """
import fastjobs

class Child(fastjobs.Job[dict, int]):
    queue = "flowbench"
    def process(self, p):
        return p["i"]

class Parent(fastjobs.Job[None, int]):
    queue = "flowbench"
    def process(self, p):
        return len(self.children_results())
"""


def run(mode: str, n: int, redis: Redis, tmp: Path) -> float:
    from flow_jobs import Child, Parent  # type: ignore[import-not-found]

    import fastjobs

    redis.command("FLUSHALL")
    worker = fastjobs_worker(redis.url, "fb", tmp, "flow_jobs", "flowbench", 4)
    try:
        time.sleep(1.0)  # the worker is up
        payloads = [{"i": i} for i in range(n)]
        q = fastjobs.Queue("flowbench")
        t0 = time.perf_counter()
        if mode == "flow":
            flow = fastjobs.JobFlow(Parent.dispatch(None))
            for p in payloads:
                flow.add_child_job(Child.dispatch(p))
            assert flow.dispatch().wait_result(timeout=600) == n
        else:
            Child.dispatch_many(payloads)
            while q.counts()["completed"] < n:
                time.sleep(0.002)
        return time.perf_counter() - t0
    finally:
        worker.terminate()
        worker.wait(30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--children", type=int, default=10_000)
    args = ap.parse_args()
    redis = Redis()
    tmp = Path(tempfile.mkdtemp(prefix="fastjobs-flow-"))
    (tmp / "flow_jobs.py").write_text(JOBS)
    sys.path.insert(0, str(tmp))
    import fastjobs

    fastjobs.configure(redis.url, prefix="fb")
    try:
        plain = run("plain", args.children, redis, tmp)
        flow = run("flow", args.children, redis, tmp)
    finally:
        redis.stop()
    figures = {"children": args.children, "plain_s": round(plain, 3), "flow_s": round(flow, 3), "overhead_ratio": round(flow / plain, 2),
               "plain_jobs_per_s": round(args.children / plain), "flow_jobs_per_s": round(args.children / flow)}
    print(f"{args.children:,} jobs plainly: {plain:.3f}s; as the children of one JobFlow: {flow:.3f}s "
          f"(overhead ratio {figures['overhead_ratio']}x)", file=sys.stderr)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
