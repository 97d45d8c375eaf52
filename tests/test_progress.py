"""Progress and log lines of running jobs: written by the handler, read through the handle."""

from __future__ import annotations

import asyncio
import math
import threading
from datetime import datetime, timezone
from typing import Any

import pytest

import fastjobs
from fastjobs import LogLine, Progress, Queue
from fastjobs.feedback import MAX_LINE_BYTES, MAX_LOG_LINES

from .conftest import eventually

#: Per test: the handler waits on it while the test reads what it reported.
GATES: dict[str, threading.Event] = {}
#: What a handler met: errors raised by bad calls, by payload key.
SEEN: dict[str, Any] = {}


class Export(fastjobs.Job[dict, str]):
    queue = "exports"

    def process(self, payload: dict) -> str:
        self.info("export started", rows=payload["rows"])
        self.progress(0.4, rows=int(payload["rows"] * 0.4))
        self.warning("slow disk")
        GATES[payload["gate"]].wait(10)
        self.progress(1.0)
        self.success("export done", file="out.csv")
        return "ok"


class AsyncExport(fastjobs.Job[dict, str]):
    queue = "exports"

    async def process(self, payload: dict) -> str:
        await self.progress_async(0.25, step="read")
        await self.log_async("reading", level="debug", n=1)
        self.info("sync form from an async handler")
        while not GATES[payload["gate"]].is_set():
            await asyncio.sleep(0.01)
        await self.progress_async(1.0, step="done")
        return "ok"


class Chatty(fastjobs.Job[int, None]):
    queue = "exports"

    def process(self, n: int) -> None:
        for i in range(n):
            self.log(f"line {i}", i=i)


class Plain(fastjobs.Job[int, int]):
    queue = "exports"

    def process(self, n: int) -> int:
        return n + 1


class BadCalls(fastjobs.Job[str, None]):
    queue = "exports"

    def process(self, key: str) -> None:
        errors = []
        for call in (
            lambda: self.progress(1.5),
            lambda: self.progress(-0.1),
            lambda: self.progress(math.nan),
            lambda: self.progress(math.inf),
            lambda: self.progress("half"),  # type: ignore[arg-type]
            lambda: self.progress(0.5, when=object()),
            lambda: self.progress(0.5, ratio=math.nan),
            lambda: self.progress(0.5, blob="x" * MAX_LINE_BYTES),
            lambda: self.log(42),  # type: ignore[arg-type]
            lambda: self.log("m", level="loud"),
            lambda: self.log("m", thing={1, 2}),
            lambda: self.log("x" * MAX_LINE_BYTES),
        ):
            try:
                call()
            except (TypeError, ValueError) as e:
                errors.append((type(e).__name__, str(e)))
            else:
                errors.append(None)
        SEEN[key] = errors


def base(prefix: str) -> str:
    return f"{prefix}:{{exports}}"


@pytest.mark.redis_only
def test_progress_and_logs_read_while_the_job_runs(start_worker: Any, prefix: str, redis: Any) -> None:
    GATES["run"] = threading.Event()
    start_worker(queues=["exports"])
    h = Export.dispatch({"rows": 10_000, "gate": "run"}).send()
    p = eventually(h.progress)
    assert isinstance(p, Progress)
    assert p.value == 0.4 and p.data == {"rows": 4000}
    assert p.at is not None and abs((datetime.now(timezone.utc) - p.at).total_seconds()) < 5
    eventually(lambda: len(h.logs()) == 2)
    info = h.info()
    assert info.state == "active" and info.progress == p
    GATES["run"].set()
    assert h.wait_result(timeout=10) == "ok"
    assert h.progress() == Progress(1.0, {}, h.progress().at)  # type: ignore[union-attr]
    lines = h.logs()
    assert all(isinstance(line, LogLine) for line in lines)
    assert [(line.level, line.message, line.data) for line in lines] == [
        ("info", "export started", {"rows": 10_000}),
        ("warning", "slow disk", {}),
        ("success", "export done", {"file": "out.csv"}),
    ]
    assert [line.at for line in lines] == sorted(line.at for line in lines)
    assert [line.message for line in h.logs(start=1, limit=1)] == ["slow disk"]
    assert h.logs(start=5) == [] and h.logs(limit=0) == []
    assert h.info().progress is not None and h.info().progress.value == 1.0  # type: ignore[union-attr]
    # The keys live max(result_ttl, 1 day) after their last write.
    for key in (f"{base(prefix)}:progress:{h.id}", f"{base(prefix)}:logs:{h.id}"):
        assert 86_000 < int(redis("TTL", key)) <= 86_400


def test_async_handler_and_async_reads(start_worker: Any) -> None:
    GATES["async"] = threading.Event()
    start_worker(queues=["exports"], concurrency=2)
    h = AsyncExport.dispatch({"gate": "async"}).send()

    async def read() -> None:
        p = None
        for _ in range(500):
            p = await h.progress_async()
            if p is not None:
                break
            await asyncio.sleep(0.01)
        assert p is not None and p.value == 0.25 and p.data == {"step": "read"}
        assert (await h.info_async()).progress == p
        GATES["async"].set()
        assert await h.wait_result_async(timeout=10) == "ok"
        lines = await h.logs_async()
        assert [(x.level, x.message, x.data) for x in lines] == [
            ("debug", "reading", {"n": 1}),
            ("info", "sync form from an async handler", {}),
        ]
        assert (await h.progress_async()).data == {"step": "done"}  # type: ignore[union-attr]

    asyncio.run(read())


@pytest.mark.redis_only
def test_logs_keep_the_newest_lines(start_worker: Any, prefix: str, redis: Any) -> None:
    start_worker(queues=["exports"])
    n = MAX_LOG_LINES + 30
    h = Chatty.dispatch(n).send()
    h.wait_result(timeout=20)
    assert int(redis("LLEN", f"{base(prefix)}:logs:{h.id}")) == MAX_LOG_LINES
    first = h.logs(limit=2)
    assert [x.message for x in first] == ["line 30", "line 31"] and first[0].data == {"i": 30}
    assert h.logs(start=MAX_LOG_LINES - 1)[0].message == f"line {n - 1}"
    assert len(h.logs(limit=5000)) == MAX_LOG_LINES


def test_bad_input_raises_typed_errors_and_writes_nothing(start_worker: Any, prefix: str, redis: Any) -> None:
    start_worker(queues=["exports"])
    h = BadCalls.dispatch("bad").send()
    h.wait_result(timeout=10)
    got = SEEN["bad"]
    assert None not in got, got
    kinds = [k for k, _ in got]
    assert kinds == ["ValueError", "ValueError", "ValueError", "ValueError", "TypeError", "TypeError", "TypeError",
                     "ValueError", "TypeError", "ValueError", "TypeError", "ValueError"]
    assert "1.5" in got[0][1] and "nan" in got[2][1]
    assert "progress data['ratio']" in got[6][1]
    assert str(MAX_LINE_BYTES) in got[7][1] and str(MAX_LINE_BYTES) in got[11][1]
    assert "loud" in got[9][1]
    assert h.progress() is None and h.logs() == []
    assert redis("KEYS", f"{base(prefix)}:progress:*") == [] and redis("KEYS", f"{base(prefix)}:logs:*") == []


def test_a_job_that_reports_nothing_leaves_no_keys(start_worker: Any, prefix: str, redis: Any) -> None:
    start_worker(queues=["exports"])
    handles = [Plain.dispatch(i).send() for i in range(20)]
    assert [h.wait_result(timeout=10) for h in handles] == list(range(1, 21))
    assert redis("KEYS", f"{base(prefix)}:progress:*") == [] and redis("KEYS", f"{base(prefix)}:logs:*") == []
    assert handles[0].progress() is None and handles[0].logs() == [] and handles[0].info().progress is None


def test_remove_and_obliterate_delete_the_keys(start_worker: Any, prefix: str, redis: Any) -> None:
    w = start_worker(queues=["exports"])
    h = Chatty.dispatch(3).send()
    h.wait_result(timeout=10)
    w.stop()
    assert len(h.logs()) == 3
    Queue("exports").remove(h.id)
    assert redis("EXISTS", f"{base(prefix)}:logs:{h.id}") == 0 and h.logs() == []
    GATES["obl"] = threading.Event()
    GATES["obl"].set()
    w = start_worker(queues=["exports"])
    h2 = Export.dispatch({"rows": 10, "gate": "obl"}).send()
    h2.wait_result(timeout=10)
    w.stop()
    assert h2.progress() is not None
    Queue("exports").obliterate()
    assert h2.progress() is None and h2.logs() == []


def test_outside_a_worker_the_reports_stay_on_the_instance() -> None:
    inst = Export._instance("now-1", 0, "exports", {})
    inst.progress(0.5, rows=5)
    inst.info("hello", n=1)
    inst.warning("careful")
    p = inst.__dict__["_progress"]
    assert (p.value, p.data) == (0.5, {"rows": 5})
    assert [(x.level, x.message, x.data) for x in inst.__dict__["_logs"]] == [("info", "hello", {"n": 1}), ("warning", "careful", {})]
    with pytest.raises(ValueError, match=r"1\.5"):
        inst.progress(1.5)
    GATES["now"] = threading.Event()
    GATES["now"].set()
    assert Export.dispatch_now({"rows": 10, "gate": "now"}) == "ok"
