"""``JobChain``: jobs that run one after another, each enqueued when the one before it
completes; a step that fails for good stops the chain.

A chain lives in one hash (``<prefix>:{chain:<id>}``): each step's queue, name and id, the
specs of the steps not yet enqueued, each step's result, and where it stopped. Step ``k`` is the
job ``chain:<id>:<k>``. When step ``k`` completes, its worker stores the result, enqueues step
``k+1`` and only then acknowledges step ``k``: a crash in between runs step ``k`` again (as any
job whose worker died), and the second enqueue of step ``k+1`` is refused as a duplicate of its
id. Nothing of the chain is lost and no step runs twice because of the chain.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from typing import Any

from . import _workflow, config, serde
from .dispatch import JobHandle, PendingDispatch
from .options import check_wait_timeout

__all__ = ["JobChain", "ChainHandle", "ChainStep"]


@dataclass(frozen=True)
class ChainStep:
    index: int
    job_id: str
    name: str
    queue: str
    #: pending (not enqueued yet), waiting, delayed, active, completed, failed or cancelled.
    state: str


def _step_id(chain_id: str, k: int) -> str:
    return f"chain:{chain_id}:{k}"


class JobChain:
    """Runs ``steps`` (dispatch builders) in order: each is enqueued when the previous one
    completed, on its own queue and with its own options (a delay counts from the previous
    step's completion). A step reads the previous step's return value as
    ``self.previous_result``. A step that fails for good stops the chain: the steps after it
    are cancelled, and ``on_failure`` (a builder) is dispatched; its handler reads the failure
    as ``self.chain_failure`` (chain id, step, job id and name, error)."""

    def __init__(self, steps: Iterable[PendingDispatch[Any]], *, on_failure: PendingDispatch[Any] | None = None) -> None:
        self.steps = list(steps)
        self.on_failure = on_failure
        every = self.steps + ([on_failure] if on_failure is not None else [])
        if not self.steps:
            _workflow.abandon(every)
            raise ValueError("a JobChain needs at least one step")
        self.connection = _workflow.check_builders(every, "JobChain", "step")

    def _plan(self) -> tuple[str, list[tuple[str, bytes]], tuple[str, Any]]:
        chain_id = secrets.token_hex(8)
        n = len(self.steps)
        fields: list[tuple[str, bytes]] = [("n", str(n).encode())]
        first = None
        with _workflow.claimed(self.steps + ([self.on_failure] if self.on_failure is not None else [])):
            for k, b in enumerate(self.steps):
                spec = _workflow.spec(b, "chain", {"id": chain_id, "step": k, "n": n})
                fields.append((f"step:{k}", serde.dumps({"queue": spec["queue"], "name": spec["name"], "id": _step_id(chain_id, k)})))
                if k == 0:
                    first = (spec["queue"], _workflow.job(spec, _step_id(chain_id, 0)))
                else:
                    fields.append((f"spec:{k}", serde.dumps(spec)))
            if self.on_failure is not None:
                fields.append(("on_failure", serde.dumps(_workflow.spec(self.on_failure, "chain", {"id": chain_id, "on_failure": True}))))
        assert first is not None
        return chain_id, fields, first

    def dispatch(self) -> ChainHandle:
        """Writes the chain and enqueues its first step."""
        chain_id, fields, (queue, job) = self._plan()
        client = config.client(self.connection)
        client.book_set(f"chain:{chain_id}", fields)
        client.enqueue(queue, [job])
        return ChainHandle(chain_id, self.connection)

    async def dispatch_async(self) -> ChainHandle:
        chain_id, fields, (queue, job) = self._plan()
        client = config.client(self.connection)
        await client.book_set(f"chain:{chain_id}", fields, asynchronous=True)
        await client.enqueue(queue, [job], asynchronous=True)
        return ChainHandle(chain_id, self.connection)

    def __await__(self) -> Generator[Any, None, ChainHandle]:
        return self.dispatch_async().__await__()


class ChainHandle:
    """A dispatched chain: each step's state, and the last step's result."""

    def __init__(self, chain_id: str, connection: str = "default") -> None:
        self.id = chain_id
        self.connection = connection

    def _layout(self) -> tuple[list[dict[str, Any]], int | None]:
        client = config.client(self.connection)
        n_raw, stopped = client.book_get(f"chain:{self.id}", ["n", "stopped_at"])
        if n_raw is None:
            raise LookupError(f"no chain {self.id} (never dispatched, or expired)")
        n = int(n_raw)
        steps = client.book_get(f"chain:{self.id}", [f"step:{k}" for k in range(n)])
        return [serde.loads(s) for s in steps], None if stopped is None else int(stopped)

    def steps(self) -> list[ChainStep]:
        """Every step with its state; steps after the one that failed are ``cancelled``."""
        client = config.client(self.connection)
        layout, stopped = self._layout()
        out = []
        for k, s in enumerate(layout):
            if stopped is not None and k > stopped:
                state = "cancelled"
            else:
                state = str(client.status(s["queue"], s["id"])[0])
                state = "pending" if state == "unknown" else state
            out.append(ChainStep(k, s["id"], s["name"], s["queue"], state))
        return out

    def failure_handle(self) -> JobHandle[Any] | None:
        """The handle of the on_failure job (it exists once a step failed for good)."""
        [raw] = config.client(self.connection).book_get(f"chain:{self.id}", ["on_failure"])
        return None if raw is None else JobHandle(f"chain:{self.id}:on_failure", serde.loads(raw)["queue"], self.connection)

    def handles(self) -> list[JobHandle[Any]]:
        return [JobHandle(s["id"], s["queue"], self.connection) for s in self._layout()[0]]

    def wait_result(self, timeout: float | None = None) -> Any:
        """Waits for the steps in turn and returns the last one's result; raises ``JobFailed``
        for the step that failed, ``TimeoutError`` after ``timeout`` seconds."""
        timeout = check_wait_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        result = None
        for h in self.handles():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            result = h.wait_result(timeout=left)
        return result

    async def wait_result_async(self, timeout: float | None = None) -> Any:
        timeout = check_wait_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        result = None
        for h in self.handles():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            result = await h.wait_result_async(timeout=left)
        return result

    def __repr__(self) -> str:
        return f"<ChainHandle {self.id}>"


# ---- what a worker does around a chain step (called from worker.py) ----


def previous_result(client: Any, chain: dict[str, Any]) -> Any:
    """The return value of the step before this one (None for the first step)."""
    k = chain.get("step", 0)
    if not k:
        return None
    [raw] = client.book_get(f"chain:{chain['id']}", [f"result:{k - 1}"])
    return serde.loads(raw) if raw is not None else None


def step_completed(client: Any, chain: dict[str, Any], result: bytes | None) -> None:
    """Before the step's acknowledgement: keep its result, enqueue the next step (or close
    the chain). Both are idempotent, so a step run twice changes nothing more."""
    if chain.get("on_failure"):
        return
    k, n, chain_id = chain["step"], chain["n"], chain["id"]
    done = [(f"result:{k}", result if result is not None else b"null")]
    if k + 1 < n:
        client.book_set(f"chain:{chain_id}", done)
        [raw] = client.book_get(f"chain:{chain_id}", [f"spec:{k + 1}"])
        if raw is None:
            return  # expired or removed: nothing left to run
        spec = serde.loads(raw)
        client.enqueue(spec["queue"], [_workflow.job(spec, _step_id(chain_id, k + 1))])
    else:
        client.book_set(f"chain:{chain_id}", [*done, ("done", b"1")], client.result_ttl)


def step_failed(client: Any, chain: dict[str, Any], job_id: str, name: str, error: dict[str, Any]) -> None:
    """Before a failed step's acknowledgement: stop the chain and dispatch its on_failure job."""
    if chain.get("on_failure"):
        return
    chain_id, k = chain["id"], chain["step"]
    client.book_set(f"chain:{chain_id}", [("stopped_at", str(k).encode()), ("error", serde.dumps(error))], client.result_ttl)
    [raw] = client.book_get(f"chain:{chain_id}", ["on_failure"])
    if raw is None:
        return
    spec = serde.loads(raw)
    spec["options"]["chain"]["failure"] = {"chain_id": chain_id, "step": k, "job_id": job_id, "name": name, "error": error}
    client.enqueue(spec["queue"], [_workflow.job(spec, f"chain:{chain_id}:on_failure")])


def failure_of(chain: dict[str, Any]) -> dict[str, Any] | None:
    failure = chain.get("failure")
    return failure if isinstance(failure, dict) else None

