"""The network between a worker and Redis fails mid-drain (tests/chaos/proxy.py): cut (every
connection closed, new ones refused), or a blackhole (nothing gets through either way) for
longer than the lease, while another worker, connected directly, reaps the cut-off worker's
leases and runs their jobs. After the fault every job completes; a job runs twice only where
a lease truly expired; the cut-off worker's late acknowledgements are refused and counted
stale, and it says so in its log."""

from __future__ import annotations

import time
from typing import Any

from fastjobs import Queue

from ..conftest import eventually
from ..resp import Redis
from .conftest import audit, drained, sizes
from .jobs import Rec
from .scenarios import blackhole_past_lease, dispatch


def completed(queue: str) -> int:
    return int(Queue(queue).counts()["completed"])


@sizes(short=(1000, [0.5]), long=(6000, [0.5, 3.0, 0.5, 5.0, 1.0]))
def test_network_cut_between_a_worker_and_redis(size: tuple[int, list[float]], workers: Any, proxy: Any, ledger: Redis, prefix: str,
                                                figures: Any) -> None:
    total, cuts = size
    q = "cut"
    p = proxy()
    sent = dispatch(q, total, 0.005)
    w = workers("--queue", q, "--concurrency", "2", "--lease", "2", "--grace", "30", url=p.url)
    fault_end = time.monotonic()
    for k, seconds in enumerate(cuts):  # some shorter than the lease (2 s), some longer
        eventually(lambda k=k: completed(q) >= total * (k + 1) // (len(cuts) + 2), timeout=120, interval=0.02)
        p.cut()
        time.sleep(seconds)
        p.resume()
        fault_end = time.monotonic()
        assert completed(q) < total, "the drain ended during the cut: make the jobs slower"
    end = drained(q, total, timeout=300)
    s = w.stop()
    assert "Redis trouble, retrying" in w.log()
    a = audit(q, sent, ledger, prefix, workers.all)
    # One worker: its summary is the whole story, every job completed once in its count.
    assert (s.completed, s.stale) == (total, a.duplicates), (s, a.duplicates)
    figures(jobs=total, cuts=len(cuts), lost=0, duplicates=a.duplicates, stale=s.stale, refused_connections=p.refused,
            recovery_s=end - fault_end)


@sizes(short=(600, 3.0), long=(4000, 6.0))
def test_blackhole_past_the_lease_then_late_acks_are_refused(size: tuple[int, float], workers: Any, proxy: Any, ledger: Redis, prefix: str,
                                                             figures: Any) -> None:
    total, hole = size
    p = proxy()
    figures(**blackhole_past_lease(total, hole, workers, p, ledger, prefix, cut_url=p.url))


def test_an_acknowledgement_whose_answer_was_lost_counts_once_as_completed(proxy: Any, prefix: str) -> None:
    """Redis runs an acknowledgement, its answer is lost, the worker sends it again: the jobs
    were settled by the first send (nothing is done twice), and the worker counts them
    completed, not stale (it counted them stale before tick.lua marked the leases it reaps)."""
    import fastjobs
    from fastjobs import _core, config

    from ..conftest import eventually

    p = proxy()
    h = Rec.dispatch({"tag": "x"}).on_queue("answers").attempts(1).send()
    fastjobs.configure(p.url, prefix=prefix, connection="proxied")
    engine = _core.WorkerEngine(config.client("proxied"), ["answers"], lease=30.0)
    engine.start(scheduler=False)
    try:
        [job] = engine.next_jobs(1, 10.0)
        p.lose_answers()
        engine.complete(job[0], None)
        eventually(lambda: h.status() == "completed")  # the test's client goes straight to Redis
        p.resume()  # the worker's connections are reset: it sends the acknowledgement again
        engine.drain()
        stats = engine.stats()
    finally:
        engine.stop_fetching()
        engine.close()
    assert (stats["completed"], stats["stale"]) == (1, 0), stats
    c = Queue("answers").counts()
    assert (c["completed"], c["active"], c["waiting"]) == (1, 0, 0), c  # the queue's total counts it once
