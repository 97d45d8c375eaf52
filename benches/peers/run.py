"""Runs the workloads of CONTRACT.md on fastjobs and every installed peer, against one
throwaway redis-server, and prints a table with fastjobs÷peer ratios.

    python benches/peers/run.py [--systems fastjobs,rq,...] [--workloads W1,W2,...] [--quick]
    python benches/peers/run.py --workloads W2P [--processes 1,2,auto] [--body incr,cpu] [--n W2P-cpu=2000]
    python benches/peers/run.py --workloads W6 [--w6-seconds 3]

Each adapter runs in its own process with its own interpreter: fastjobs with the project's
.venv, peers with .venv-peers or the venv named for them in venvs.txt. The last line printed
is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
ADAPTERS = HERE / "adapters"
sys.path.insert(0, str(ADAPTERS))

import _w2p  # noqa: E402 - lives with the adapters: the cpu body and what `auto` processes means

# What each figure means and which way is better.
FIGURES = {
    "W1": ("jobs_per_s", "higher", "bulk enqueue, jobs/s"),
    "W2": ("jobs_per_s", "higher", "one worker drains, jobs/s"),
    "W2P": ("jobs_per_s", "higher", "a pool of worker processes from one command drains, jobs/s"),
    "W3": ("p50_ms", "lower", "idle start latency p50, ms"),
    "W4": ("bytes_per_job", "lower", "Redis bytes per waiting job"),
    "W5": ("p50_ms", "lower", "lateness of delayed jobs p50, ms"),
    "W6": ("per_s", "higher", "single dispatches from one producer, dispatches/s"),
}
EXTRA = {"W3": ("p99_ms", "p99"), "W5": ("p99_ms", "p99")}
# W2P's n depends on the task body: keys W2P-incr and W2P-cpu.
DEFAULT_N = {"W1": 100_000, "W2": 20_000, "W4": 100_000, "W2P-incr": 20_000, "W2P-cpu": 4_000}
QUICK_N = {"W1": 20_000, "W2": 5_000, "W4": 20_000, "W2P-incr": 5_000, "W2P-cpu": 1_000}


def interpreters() -> dict[str, Path]:
    """system -> python of the venv it is installed in."""
    # fastjobs, and the bare-list reference (redis-py only), run on the project's interpreter.
    found: dict[str, Path] = {"fastjobs": ROOT / ".venv" / "bin" / "python", "bare_list": ROOT / ".venv" / "bin" / "python"}
    shared = ROOT / ".venv-peers" / "bin" / "python"
    for adapter in sorted(ADAPTERS.glob("*_peer.py")):
        system = adapter.stem[: -len("_peer")]
        if system not in found and shared.exists():
            found[system] = shared
    venvs = HERE / "venvs.txt"
    if venvs.exists():
        for line in venvs.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                system = line.split()[0]
                found[system.replace("-", "_")] = ROOT / f".venv-peers-{system}" / "bin" / "python"
    return {s: p for s, p in found.items() if p.exists() and (ADAPTERS / f"{s}_peer.py").exists()}


class Redis:
    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dir = tempfile.mkdtemp(prefix="fastjobs-bench-")
        exe = shutil.which("redis-server")
        if exe is None:
            sys.exit("redis-server is not installed: run `make deps`")
        self.proc = subprocess.Popen([exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", self.dir],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(500):
            if self.command("PING") == b"+PONG\r\n":
                return
            time.sleep(0.01)
        sys.exit("redis-server did not start")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self, *args: str) -> bytes:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                s.sendall((f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)).encode())
                return s.recv(65536)
        except OSError:
            return b""

    def cpu_seconds(self) -> float:
        """CPU the redis-server has used so far (user + system), from INFO cpu."""
        info = self.command("INFO", "cpu").decode(errors="replace")
        fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        return float(fields["used_cpu_user"]) + float(fields["used_cpu_sys"])

    def version(self) -> str:
        info = self.command("INFO", "server").decode(errors="replace")
        for line in info.splitlines():
            if line.startswith("redis_version:"):
                return line.split(":", 1)[1].strip()
        return "?"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def fastjobs_worker(url: str, prefix: str, tmp: Path, module: str, queue: str, concurrency: int,
                    python: str = sys.executable, quiet: bool = False, extra: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    """A `fastjobs worker` process for the bench scripts: the jobs of `module` (a file the
    caller wrote in `tmp`), on `queue` under key prefix `prefix`; `extra` flags appended."""
    env = dict(os.environ, FASTJOBS_URL=url, FASTJOBS_PREFIX=prefix, PYTHONPATH=str(tmp))
    out = subprocess.DEVNULL if quiet else None
    return subprocess.Popen([python, "-m", "fastjobs", "worker", module, "--queue", queue, "--concurrency", str(concurrency),
                             "--log-level", "WARNING", *extra], env=env, cwd=str(tmp), stdout=out, stderr=out)


def run_one(py: Path, system: str, workload: str, url: str, n: int | None, limit: float,
            extra: tuple[str, ...] = ()) -> dict[str, Any]:
    cmd = [str(py), str(ADAPTERS / f"{system}_peer.py"), "--redis-url", url, "--workload", workload, *extra]
    if n is not None:
        cmd += ["--n", str(n)]
    env = dict(os.environ, PEER_BUDGET_S=str(limit - 10))
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, env=env, cwd=str(ROOT))
    except subprocess.TimeoutExpired:
        return {"system": system, "workload": workload, "error": f"no answer within {limit:.0f} s"}
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = (out.stderr or "").strip().splitlines()[-1:] or ["no output"]
        return {"system": system, "workload": workload, "error": tail[0][:200]}
    return json.loads(lines[-1])


def fmt(v: Any) -> str:
    if isinstance(v, (int, float)):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    return str(v)


def table(results: dict[str, dict[str, dict[str, Any]]], workloads: list[str]) -> str:
    rows = []
    ours = results.get("fastjobs", {})
    for w in workloads:
        key, better, title = FIGURES[w]
        rows.append(f"\n{w}: {title} ({better} is better)")
        rows.append(f"  {'system':<14}{'value':>14}{'fastjobs ÷ it':>16}  notes")
        mine = ours.get(w, {}).get(key)
        for system, per in results.items():
            r = per.get(w, {})
            if "error" in r:
                rows.append(f"  {system:<14}{'—':>14}{'':>16}  {r['error'][:90]}")
                continue
            v = r.get(key)
            extra = EXTRA.get(w)
            note = f"{extra[1]} {fmt(r.get(extra[0]))}" if extra and r.get(extra[0]) is not None else ""
            if r.get("store") and r.get("store") != "redis":
                note = (note + f" store={r['store']}").strip()
            ratio = ""
            if isinstance(v, (int, float)) and isinstance(mine, (int, float)) and v and mine and system != "fastjobs":
                x = mine / v if better == "higher" else v / mine
                ratio = f"{x:,.1f}×"  # noqa: RUF001 - a multiplication sign in the printed table
            rows.append(f"  {system:<14}{fmt(v):>14}{ratio:>16}  {note}")
    return "\n".join(rows)


def pool_sizes(spec: str) -> list[tuple[int, str]]:
    """--processes 1,2,auto -> [(1, "1"), (2, "2 (auto)")] on 2 cores: auto resolved here, and
    each count run once."""
    sizes: dict[int, str] = {}
    for word in spec.split(","):
        p = _w2p.processes(word)
        sizes[p] = f"{p} (auto)" if word == "auto" else sizes.get(p, str(p))
    return sorted(sizes.items())


def pool_table(results: dict[str, dict[str, Any]], bodies: list[str], sizes: list[tuple[int, str]]) -> str:
    """W2P: one column per body x processes, then fastjobs ÷ the best peer of each column."""
    key, better, title = FIGURES["W2P"]
    cols = [(body, p, f"{body} P={label}") for body in bodies for p, label in sizes]
    width = max(14, *(len(c[2]) + 2 for c in cols))
    rows = [f"\nW2P: {title} ({better} is better); the cpu body is {_w2p.CPU_LOOPS:,} rounds of "
            "integer arithmetic, then the INCR",
            f"  {'system':<14}" + "".join(f"{c[2]:>{width}}" for c in cols) + "  notes"]
    best: dict[tuple[str, int], tuple[float, str]] = {}
    for system, per in results.items():
        runs = per.get("W2P", {})
        cells, notes = [], []
        for body, p, _ in cols:
            r = runs.get(body, {}).get(str(p), {})
            v = r.get(key)
            cells.append(fmt(v) if isinstance(v, (int, float)) else "—")
            if "error" in r and r["error"][:90] not in notes:
                notes.append(r["error"][:90])
            if isinstance(v, (int, float)) and system != "fastjobs" and v > best.get((body, p), (0.0, ""))[0]:
                best[(body, p)] = (v, system)
        # The cpu body costs more on some interpreters (CPython 3.12/3.13 builds here): say how much.
        ms = next((r["cpu_body_ms"] for r in runs.get("cpu", {}).values() if "cpu_body_ms" in r), None)
        if ms is not None:
            notes.insert(0, f"cpu body {ms:.2f} ms")
        rows.append(f"  {system:<14}" + "".join(f"{c:>{width}}" for c in cells) + "  " + "; ".join(notes))
    ours = results.get("fastjobs", {}).get("W2P", {})
    ratios, names = [], []
    for body, p, _ in cols:
        mine = ours.get(body, {}).get(str(p), {}).get(key)
        v, system = best.get((body, p), (0.0, ""))
        ok = isinstance(mine, (int, float)) and mine and v
        ratios.append(f"{mine / v:,.2f}×" if ok else "")  # noqa: RUF001 - a multiplication sign
        names.append(system)
    rows.append(f"  {'best peer':<14}" + "".join(f"{s:>{width}}" for s in names))
    rows.append(f"  {'fastjobs ÷ it':<14}" + "".join(f"{x:>{width}}" for x in ratios))
    return "\n".join(rows)


W6_FACES = (("async", "C", "asyncio tasks"), ("threads", "T", "threads"))


def _w6_rate(results: dict[str, dict[str, Any]], system: str, face: str, k: str) -> float | None:
    v = results.get(system, {}).get("W6", {}).get(face, {}).get(k, {}).get("per_s")
    return v if isinstance(v, (int, float)) and v else None


def w6_table(results: dict[str, dict[str, Any]]) -> str:
    """W6: per face, one column per concurrency with dispatches/s and p50/p99 ms; then
    fastjobs ÷ the best peer and ÷ bare redis-py (bare_list), by rate."""
    rows = [f"\nW6: {FIGURES['W6'][2]} (higher is better); each cell: rate, p50/p99 ms of one call"]
    for face, letter, what in W6_FACES:
        levels: list[str] = []
        for per in results.values():
            for k in per.get("W6", {}).get(face, {}):
                if k.isdigit() and k not in levels:
                    levels.append(k)
        levels.sort(key=int)
        width = 22
        rows.append(f"\n  {face}: {letter} {what} in flight, each looping one single enqueue")
        rows.append(f"  {'system':<14}" + "".join(f"{letter + '=' + k:>{width}}" for k in levels) + "  notes")
        best: dict[str, tuple[float, str]] = {}
        for system, per in results.items():
            r = per.get("W6", {})
            got = r.get(face, {}) if "error" not in r else {}
            cells, notes = [], [r["error"][:90]] if "error" in r else []
            if "error" in got:
                notes.append(got["error"][:90])
            for k in levels:
                p = got.get(k, {})
                if "per_s" in p:
                    cells.append(f"{fmt(p['per_s'])} {p['p50_ms']:.2f}/{p['p99_ms']:.2f}")
                    if system not in ("fastjobs", "bare_list") and p["per_s"] > best.get(k, (0.0, ""))[0]:
                        best[k] = (p["per_s"], system)
                else:
                    cells.append("—")
                    if "error" in p and p["error"][:90] not in notes:
                        notes.append(f"{letter}={k}: {p['error'][:90]}")
            rows.append(f"  {system:<14}" + "".join(f"{c:>{width}}" for c in cells) + "  " + "; ".join(notes))

        mine = {k: _w6_rate(results, "fastjobs", face, k) for k in levels}
        rows.append(f"  {'best peer':<14}" + "".join(f"{best.get(k, (0, ''))[1]:>{width}}" for k in levels))
        ratios = [f"{mine[k] / best[k][0]:,.2f}×" if mine[k] and k in best else "" for k in levels]  # noqa: RUF001
        rows.append(f"  {'fastjobs ÷ it':<14}" + "".join(f"{x:>{width}}" for x in ratios))
        bare = [f"{mine[k] / b:,.2f}×" if mine[k] and (b := _w6_rate(results, "bare_list", face, k)) else "" for k in levels]  # noqa: RUF001
        rows.append(f"  {'fastjobs ÷ bare':<14}" + "".join(f"{x:>{width}}" for x in bare))
    return "\n".join(rows)


def w6_summary(r: dict[str, Any]) -> str:
    """One progress line: dispatches/s per face and concurrency."""
    parts = []
    for face, letter, _ in W6_FACES:
        got = r.get(face, {})
        if "error" in got:
            parts.append(f"{face}: {got['error'][:60]}")
        else:
            parts.append(f"{face} " + " ".join(f"{letter}={k}:{fmt(p.get('per_s', p.get('error', '?')[:30]))}"
                                                for k, p in got.items()))
    return "; ".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", default=None, help="comma-separated systems (default: every installed one)")
    ap.add_argument("--workloads", default="W1,W2,W3,W4,W5")
    ap.add_argument("--quick", action="store_true", help="smaller n, for a smoke run")
    ap.add_argument("--n", default="", help="jobs per run, e.g. W2=5000,W2P-incr=10000,W2P-cpu=2000 "
                    "(default: DEFAULT_N, or QUICK_N with --quick)")
    ap.add_argument("--processes", default="1,2,auto", help="W2P: worker processes, numbers or auto (usable cores)")
    ap.add_argument("--body", default="incr,cpu", help="W2P: task bodies, incr and/or cpu")
    ap.add_argument("--w6-seconds", type=float, default=3.0, help="W6: seconds of calls per point")
    ap.add_argument("--limit", type=float, default=120.0, help="seconds per adapter run")
    args = ap.parse_args()
    found = interpreters()
    systems = args.systems.split(",") if args.systems else ["fastjobs", *sorted(s for s in found if s != "fastjobs")]
    missing = [s for s in systems if s not in found]
    if missing:
        print(f"not installed (run `make bench-peers` to install peers): {', '.join(missing)}", file=sys.stderr)
    systems = [s for s in systems if s in found]
    workloads = args.workloads.split(",")
    unknown = [w for w in workloads if w not in FIGURES]
    if unknown:
        ap.error(f"unknown workloads: {', '.join(unknown)}")
    n_of = dict(QUICK_N if args.quick else DEFAULT_N)
    for item in filter(None, args.n.split(",")):
        k, _, v = item.partition("=")
        if k not in n_of:
            ap.error(f"--n: {k!r} is not one of {', '.join(n_of)}")
        n_of[k] = int(v)
    bodies = args.body.split(",")
    if not set(bodies) <= set(_w2p.DEFAULT_N):
        ap.error(f"--body: one or more of {', '.join(_w2p.DEFAULT_N)}")
    sizes = pool_sizes(args.processes)
    redis = Redis()
    results: dict[str, dict[str, Any]] = {}
    try:
        print(f"Redis {redis.version()} on loopback, {os.cpu_count()} cores ({_w2p.usable_cores()} usable); "
              f"systems: {', '.join(systems)}", file=sys.stderr)
        for system in systems:
            for w in workloads:
                if w == "W6":
                    redis.command("FLUSHALL")
                    r = run_one(found[system], system, w, redis.url, None, args.limit,
                                ("--w6-seconds", str(args.w6_seconds)))
                    results.setdefault(system, {})[w] = r
                    print(f"  {system:<12} W6: {r.get('error') or w6_summary(r)}", file=sys.stderr)
                    continue
                if w != "W2P":
                    redis.command("FLUSHALL")
                    r = run_one(found[system], system, w, redis.url, n_of.get(w), args.limit)
                    results.setdefault(system, {})[w] = r
                    print(f"  {system:<12} {w}: {r.get('error') or r.get(FIGURES[w][0])}", file=sys.stderr)
                    continue
                for body in bodies:
                    for p, label in sizes:
                        redis.command("FLUSHALL")
                        r = run_one(found[system], system, w, redis.url, n_of[f"W2P-{body}"], args.limit,
                                    ("--processes", str(p), "--body", body))
                        results.setdefault(system, {}).setdefault(w, {}).setdefault(body, {})[str(p)] = r
                        print(f"  {system:<12} {w} {body} P={label}: {r.get('error') or r.get(FIGURES[w][0])}",
                              file=sys.stderr)
        print(table(results, [w for w in workloads if w not in ("W2P", "W6")]))
        if "W6" in workloads:
            print(w6_table(results))
        if "W2P" in workloads:
            print(pool_table(results, bodies, sizes))
        print(json.dumps({"redis": redis.version(), "cores": os.cpu_count(), "usable_cores": _w2p.usable_cores(),
                          "results": results}))
    finally:
        redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
