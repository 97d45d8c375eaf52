"""What W2P (the pool drain of CONTRACT.md) shares between the harnesses and the task modules:
the `cpu` task body and the number of worker processes. Standard library only: it is imported
in every peer's venv, on Python 3.11 to 3.13.
"""

import os
import time

# Default n per task body: the cpu body runs ~2 ms per job, so its drain needs fewer jobs.
DEFAULT_N = {"incr": 20_000, "cpu": 4_000}

# The `cpu` body: the same loop and count for every system. 30,000 rounds took 2.0 ms on the
# bench machine's CPython 3.11 (fastjobs' and most peers' interpreter); its 3.12 and 3.13 builds
# took ~2.8 ms for the same loop, which is why W2P reports the cost measured in the adapter's
# own interpreter (cpu_body_ms).
CPU_LOOPS = 30_000


def burn(loops: int = CPU_LOOPS) -> int:
    """Pure-Python integer arithmetic: holds the GIL for the whole loop."""
    x = 0
    for i in range(loops):
        x = (x * 31 + i) % 1_000_003
    return x


def body_ms(tries: int = 20) -> float:
    """The cost of one burn() in this interpreter, in ms: the best of `tries` calls (the
    least disturbed by whatever else runs on the machine)."""
    best = float("inf")
    for _ in range(tries):
        t0 = time.perf_counter()
        burn()
        best = min(best, time.perf_counter() - t0)
    return round(best * 1000, 3)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), what `--processes auto` means."""
    count = getattr(os, "process_cpu_count", None)  # Python >= 3.13
    if count is not None:
        return count() or 1
    return len(os.sched_getaffinity(0))


def processes(arg: str) -> int:
    """A --processes value: a number, or `auto` for the usable cores."""
    return usable_cores() if arg == "auto" else int(arg)
