"""Where W3's time goes in Redis: every command of 1,000 sequential dispatches to an idle worker.

    python benches/latency_trace.py [--jobs 1000]

On a throwaway redis-server, one `fastjobs worker` process (concurrency 1) runs a job that
`RPUSH`es its start time; this process dispatches one job at a time and waits for that push,
as W3 does. Redis's SLOWLOG (threshold 0) records the time of every command meanwhile; the
table gives each script (named from its SHA, as `rust/store/redis/scripts.rs` builds them) and command:
calls per job and its p50/p90 in µs. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import redis as redis_py

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "peers"))

from run import Redis, fastjobs_worker  # noqa: E402

LUA = HERE.parent / "rust" / "store" / "redis" / "lua"

JOBS = """
import os, time
import fastjobs, redis

_r = None

class TraceLat(fastjobs.Job[int, None]):
    queue = "lat"
    def process(self, p):
        global _r
        if _r is None:
            _r = redis.Redis.from_url(os.environ["FASTJOBS_URL"])
        _r.rpush("lat", repr(time.time()))
"""


def script_names() -> dict[str, str]:
    common = (LUA / "includes" / "common.lua").read_text()
    return {hashlib.sha1((common + f.read_text()).encode()).hexdigest(): f.stem for f in LUA.glob("*.lua")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=1000)
    n = ap.parse_args().jobs
    server = Redis()
    tmp = Path(tempfile.mkdtemp(prefix="fastjobs-trace-"))
    (tmp / "trace_jobs.py").write_text(JOBS)
    sys.path.insert(0, str(tmp))
    import fastjobs

    fastjobs.configure(server.url, prefix="bench")
    import trace_jobs  # type: ignore[import-not-found]

    worker = fastjobs_worker(server.url, "bench", tmp, "trace_jobs", "lat", 1, quiet=True)
    r = redis_py.Redis(port=server.port)
    try:
        for i in range(200):  # warm: connections, scripts, the worker's idle slot
            trace_jobs.TraceLat.dispatch(i).send()
            r.blpop(["lat"], 10)
        r.config_set("slowlog-log-slower-than", 0)
        r.config_set("slowlog-max-len", 64 * n)
        r.slowlog_reset()
        lats = []
        for i in range(n):
            sent = time.time()
            trace_jobs.TraceLat.dispatch(i).send()
            got = r.blpop(["lat"], 10)
            if got is None:
                raise SystemExit("a job did not start within 10 s")
            lats.append((float(got[1]) - sent) * 1000)
        log = r.slowlog_get(64 * n)
    finally:
        worker.terminate()
        worker.wait(30)
        server.stop()
    names = script_names()
    times: dict[str, list[int]] = collections.defaultdict(list)
    for e in log:
        words = e["command"].decode(errors="replace").split()
        if words[0] in ("SLOWLOG", "CONFIG", "INFO"):
            continue
        name = words[0].lower()
        if name == "evalsha" and len(words) > 1:
            name = "script " + names.get(words[1], words[1][:8])
        times[name].append(e["duration"])
    lats.sort()
    rows = {}
    print(f"dispatch -> handler start: p50 {lats[n // 2]:.3f} ms, p99 {lats[n * 99 // 100]:.3f} ms", file=sys.stderr)
    for name, v in sorted(times.items(), key=lambda kv: -sum(kv[1])):
        v.sort()
        rows[name] = {"per_job": round(len(v) / n, 2), "p50_us": v[len(v) // 2], "p90_us": v[len(v) * 9 // 10]}
        print(f"  {name:<24} {len(v) / n:5.2f}/job  p50 {v[len(v) // 2]:4d} µs  p90 {v[len(v) * 9 // 10]:4d} µs", file=sys.stderr)
    print(json.dumps({"jobs": n, "p50_ms": round(lats[n // 2], 3), "p99_ms": round(lats[n * 99 // 100], 3), "commands": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
