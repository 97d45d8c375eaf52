"""Redis's cost per record of a reserve, for records stored one per list element and in runs.

    python benches/reserve_cost.py [--rounds 7]

On a throwaway redis-server, 50 queues of 2,000 W1-shaped records (95 bytes, distinct ids)
are written either one record per element or in runs of 16 (record.rs), then one EVAL runs
what reserve.lua does with them, with the engine's own helpers (common.lua's pop_ready):
pop 2,000 per queue, then HSET each record under its id into a lease. Its time over the
records is Redis's cost per record. The two layouts alternate; ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import redis as redis_py

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))

from run import Redis

COMMON = (Path(__file__).resolve().parent.parent / "rust" / "store" / "redis" / "lua" / "includes" / "common.lua").read_text()
QUEUES, PER_QUEUE, RUN = 50, 2000, 16

RESERVE = COMMON + """
local n = 0
for q = 1, tonumber(ARGV[1]) do
  local base = 'fj:{q' .. q .. '}'
  local recs = pop_ready(base, tonumber(ARGV[2]))
  local args = {}
  for i, r in ipairs(recs) do
    args[2 * i - 1] = record_id(r)
    args[2 * i] = r
  end
  rcall('HSET', base .. ':lease:t', unpack(args))
  n = n + #recs
end
return n
"""


def record(seq: int) -> bytes:
    rid = b"AbCdEfGhIj-%d" % seq
    payload = b'{"i":%d,"s":"%s"}' % (seq, b"x" * 32)
    return b"\x01\x00\x00\x00\x01\x00" + bytes([len(rid)]) + rid + b"\x08BenchJob" + b"\x00" * 8 + payload


def fill(r: redis_py.Redis, runs: bool) -> None:
    r.flushall()
    p = r.pipeline(transaction=False)
    for q in range(1, QUEUES + 1):
        recs = [record(q * PER_QUEUE + i) for i in range(PER_QUEUE)]
        base = f"fj:{{q{q}}}"
        if runs:
            elements = [b"\xfe" + b"".join(len(x).to_bytes(2, "big") + x for x in recs[k : k + RUN]) for k in range(0, PER_QUEUE, RUN)]
            p.rpush(f"{base}:wait", *elements)
            p.set(f"{base}:runs", PER_QUEUE - len(elements))
        else:
            p.rpush(f"{base}:wait", *recs)
    p.execute()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    server = Redis()
    try:
        r = redis_py.Redis(port=server.port)
        sha = r.script_load(RESERVE)
        ns: dict[str, list[float]] = {"one_per_element": [], "runs_of_16": []}
        for _ in range(args.rounds):
            for layout in ns:
                fill(r, layout == "runs_of_16")
                t0 = time.perf_counter()
                n = r.evalsha(sha, 0, QUEUES, PER_QUEUE)
                ns[layout].append((time.perf_counter() - t0) / n * 1e9)
                assert n == QUEUES * PER_QUEUE and r.exists("fj:{q1}:runs") == 0
        out = {layout: {"min_ns": round(min(v)), "median_ns": round(statistics.median(v))} for layout, v in ns.items()}
        for layout, v in out.items():
            print(f"{layout:>16}: {v['median_ns']} ns per record (min {v['min_ns']})", file=sys.stderr)
        print(json.dumps({"redis": server.version(), "records": QUEUES * PER_QUEUE, **out}))
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
