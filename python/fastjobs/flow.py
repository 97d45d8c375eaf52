"""``JobFlow``: trees of jobs in which a parent runs once, after all of its children finished,
and reads their results.

A flow lives in one hash, ``<prefix>:{flow:<id>}`` (its own hash tag: nodes may sit on any
queue; ``settled:<node>`` marks a child already counted), with ``…:results:<node>`` (what each
node's children left for it). Node ``n`` is the job ``flow:<id>:<n>`` (0 is the root). Leaves
are enqueued at dispatch; a node with children waits in the hash (``waiting-children``, with
its spec and a count of pending children) until the last of them settles.

A child's worker settles it before acknowledging it (``flow_settle.lua``: counted once, its
result kept, the parent released when nothing is pending), then enqueues the released parent
under its own id, then acknowledges. A worker settles the flow children of one batch together,
in one round trip. A crash anywhere before the acknowledgement runs the child
again: the settle is not counted twice and gives the same answer, the parent's second enqueue
is refused by its id. So a parent runs once even when its last children finish at the same
moment on several workers. A tree is built from fresh builders only (one builder cannot be
added twice), so a flow cannot hold a cycle.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from typing import Any

from . import _workflow, config, serde
from .dispatch import JobHandle, PendingDispatch
from .errors import JobFailed
from .options import check_wait_timeout

__all__ = ["JobFlow", "FlowHandle", "FlowNode", "POLICIES"]

#: What a child's failure (attempts used up) does to its parent.
POLICIES = ("fail_parent", "ignore", "continue_parent")

_BATCH = 1000


def _node_id(flow_id: str, n: int) -> str:
    return f"flow:{flow_id}:{n}"


@dataclass
class FlowNode:
    """One node of a dispatched flow and its state: ``waiting-children``, then the job's own
    state (waiting, active, completed, failed ...); ``failed`` too when a child failed it."""

    index: int
    job_id: str
    name: str
    queue: str
    state: str
    children: list[FlowNode] = field(default_factory=list)


class JobFlow:
    """A parent job and its children::

        flow = JobFlow(Report.dispatch(day))
        flow.add_child_job(Fetch.dispatch(url_a))
        flow.add_child_job(Fetch.dispatch(url_b), nested=lambda f: f.add_child_job(Warm.dispatch(url_b)))
        handle = flow.dispatch()        # or: await flow

    The parent runs once every child finished, and reads their results with
    ``self.children_results()``. ``on_failure`` per child: ``fail_parent`` (default: the parent
    fails with the child's error), ``ignore`` (the parent runs and sees the error),
    ``continue_parent`` (the parent runs without that child's result).
    """

    def __init__(self, parent: PendingDispatch[Any]) -> None:
        if not isinstance(parent, PendingDispatch):
            raise TypeError(f"JobFlow takes a dispatch builder (Job.dispatch(...)), got {type(parent).__name__}")
        self.parent = parent
        self.children: list[tuple[JobFlow, str]] = []

    def add_child_job(self, child: PendingDispatch[Any] | JobFlow,
                      nested: Callable[[JobFlow], Any] | Iterable[PendingDispatch[Any] | JobFlow] | None = None,
                      *, on_failure: str = "fail_parent") -> JobFlow:
        """Adds a child (a builder, or a JobFlow for a subtree). ``nested`` gives the child
        children of its own: a callable that receives the child's JobFlow, or an iterable of
        builders. Returns this flow, so calls can be chained."""
        if on_failure not in POLICIES:
            _workflow.abandon([child])
            raise ValueError(f"unknown on_failure policy {on_failure!r}; use one of {', '.join(POLICIES)}")
        node = child if isinstance(child, JobFlow) else JobFlow(child)
        if nested is not None:
            if callable(nested):
                nested(node)
            else:
                for c in nested:
                    node.add_child_job(c)
        self.children.append((node, on_failure))
        return self

    # ---- planning ----

    def _nodes(self) -> list[tuple[JobFlow, int | None, str]]:
        """(node, parent index, policy) in breadth-first order; the root is 0."""
        out: list[tuple[JobFlow, int | None, str]] = [(self, None, "fail_parent")]
        i = 0
        while i < len(out):
            for child, policy in out[i][0].children:
                out.append((child, i, policy))
            i += 1
        return out

    def _plan(self) -> tuple[str, str, list[tuple[str, bytes]], list[tuple[str, Any]]]:
        """(flow id, connection, fields of the flow hash, leaves as (queue, job tuple))."""
        nodes = self._nodes()
        builders = [n.parent for n, _, _ in nodes]
        if not self.children:
            _workflow.abandon(builders)
            raise ValueError("a JobFlow needs at least one child (add_child_job)")
        connection = _workflow.check_builders(builders, "JobFlow", "node")
        flow_id = secrets.token_hex(8)
        children: dict[int, list[int]] = {}
        for i, (_n, parent, _p) in enumerate(nodes):
            if parent is not None:
                children.setdefault(parent, []).append(i)
        fields: list[tuple[str, bytes]] = [("n", str(len(nodes)).encode())]
        leaves: list[tuple[str, Any]] = []
        with _workflow.claimed(builders):
            for i, (node, parent, policy) in enumerate(nodes):
                kids = children.get(i, [])
                spec = _workflow.spec(node.parent, "flow", {"id": flow_id, "node": i, "parent": parent, "policy": policy})
                fields.append((f"node:{i}", serde.dumps({"queue": spec["queue"], "name": spec["name"], "id": _node_id(flow_id, i),
                                                          "parent": parent, "policy": policy, "children": kids})))
                if kids:
                    fields += [(f"spec:{i}", serde.dumps(spec)), (f"pending:{i}", str(len(kids)).encode()),
                               (f"state:{i}", b"waiting-children")]
                else:
                    leaves.append((spec["queue"], _workflow.job(spec, _node_id(flow_id, i))))
        return flow_id, connection, fields, leaves

    # ---- dispatching ----

    def dispatch(self) -> FlowHandle:
        """Writes the flow and enqueues its leaves."""
        return JobFlow.dispatch_many([self])[0]

    async def dispatch_async(self) -> FlowHandle:
        return (await JobFlow.dispatch_many_async([self]))[0]

    def __await__(self) -> Generator[Any, None, FlowHandle]:
        return self.dispatch_async().__await__()

    @staticmethod
    def _plan_many(flows: Iterable[JobFlow]) -> tuple[list[tuple[str, str, list[tuple[str, bytes]]]], dict[tuple[str, str], list[Any]]]:
        plans: list[tuple[str, str, list[tuple[str, bytes]]]] = []
        by_queue: dict[tuple[str, str], list[Any]] = {}
        for f in flows:
            if not isinstance(f, JobFlow):
                raise TypeError(f"dispatch_many takes JobFlows, got {type(f).__name__}")
            flow_id, conn, fields, leaves = f._plan()
            plans.append((flow_id, conn, fields))
            for queue, job in leaves:
                by_queue.setdefault((conn, queue), []).append(job)
        return plans, by_queue

    @staticmethod
    def dispatch_many(flows: Iterable[JobFlow]) -> list[FlowHandle]:
        """Dispatches many flows together: their leaves go out in batches per queue."""
        plans, by_queue = JobFlow._plan_many(flows)
        for flow_id, conn, fields in plans:
            config.client(conn).book_set(f"flow:{flow_id}", fields)
        for (conn, queue), jobs in by_queue.items():
            client = config.client(conn)
            for s in range(0, len(jobs), _BATCH):
                client.enqueue(queue, jobs[s : s + _BATCH])
        return [FlowHandle(flow_id, conn) for flow_id, conn, _ in plans]

    @staticmethod
    async def dispatch_many_async(flows: Iterable[JobFlow]) -> list[FlowHandle]:
        plans, by_queue = JobFlow._plan_many(flows)
        for flow_id, conn, fields in plans:
            await config.client(conn).book_set(f"flow:{flow_id}", fields, asynchronous=True)
        for (conn, queue), jobs in by_queue.items():
            client = config.client(conn)
            for s in range(0, len(jobs), _BATCH):
                await client.enqueue(queue, jobs[s : s + _BATCH], asynchronous=True)
        return [FlowHandle(flow_id, conn) for flow_id, conn, _ in plans]


class FlowHandle:
    """A dispatched flow: its tree with each node's state, and the root's result."""

    def __init__(self, flow_id: str, connection: str = "default") -> None:
        self.id = flow_id
        self.connection = connection

    def _book(self, fields: list[str]) -> list[bytes | None]:
        return list(config.client(self.connection).book_get(f"flow:{self.id}", fields))

    def _layout(self) -> list[dict[str, Any]]:
        [n] = self._book(["n"])
        if n is None:
            raise LookupError(f"no flow {self.id} (never dispatched, or expired)")
        layout = []
        for raw in self._book([f"node:{i}" for i in range(int(n))]):
            if raw is None:  # the hash expired since `n` was read
                raise LookupError(f"no flow {self.id} (never dispatched, or expired)")
            layout.append(serde.loads(raw))
        return layout

    def tree(self) -> FlowNode:
        """The root with its children, each with its current state."""
        layout = self._layout()
        states = self._book([f"state:{i}" for i in range(len(layout))])
        client = config.client(self.connection)
        nodes = []
        for i, (node, raw_state) in enumerate(zip(layout, states)):
            flow_state = raw_state.decode() if raw_state else None
            if flow_state in ("waiting-children", "failed"):
                state = flow_state
            else:
                state = str(client.status(node["queue"], node["id"])[0])
            nodes.append(FlowNode(i, node["id"], node["name"], node["queue"], state))
        for i, node in enumerate(layout):
            nodes[i].children = [nodes[c] for c in node["children"]]
        return nodes[0]

    def handle(self, index: int = 0) -> JobHandle[Any]:
        node = self._layout()[index]
        return JobHandle(node["id"], node["queue"], self.connection)

    def wait_result(self, timeout: float | None = None) -> Any:
        """Waits for the root and returns its result; raises ``JobFailed`` if it failed (a
        child with the ``fail_parent`` policy fails it), ``TimeoutError`` after ``timeout``."""
        timeout = check_wait_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        layout = self._layout()
        return self._wait(layout, 0, deadline)

    async def wait_result_async(self, timeout: float | None = None) -> Any:
        """``wait_result`` for asyncio (the waits run in the loop's default executor)."""
        return await asyncio.get_running_loop().run_in_executor(None, self.wait_result, timeout)

    def _wait(self, layout: list[dict[str, Any]], i: int, deadline: float | None) -> Any:
        # A node waiting for its children has no job yet. Its children settle it before they
        # complete, so waiting for the last unsettled child, then looking again, ends when it
        # is released (or failed): a few waits, however many children.
        kids = layout[i]["children"]
        while kids:
            state, by, error = self._book([f"state:{i}", f"released_by:{i}", f"error:{i}"])
            if state == b"failed":
                detail = serde.loads(error) if error else {}
                raise JobFailed.from_error(layout[i]["id"], layout[i]["queue"], detail.get("error", detail))
            if state == b"released":
                # Its job may not be enqueued yet: the child that released it does that before
                # its own acknowledgement.
                if by is not None:
                    try:
                        self._wait(layout, int(by), deadline)
                    except JobFailed:
                        pass
                break
            marks = self._book([f"settled:{c}" for c in kids])
            unsettled = [c for c, m in zip(kids, marks) if m is None]
            if unsettled:
                try:
                    self._wait(layout, unsettled[-1], deadline)
                except JobFailed:
                    pass  # this node's policy decides: read on the next round
            elif deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"flow {self.id}: node {i} did not finish within the timeout")
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return JobHandle(layout[i]["id"], layout[i]["queue"], self.connection).wait_result(timeout=left)

    def __repr__(self) -> str:
        return f"<FlowHandle {self.id}>"


# ---- what a worker does around a flow node (called from worker.py) ----


Finished = tuple[dict[str, Any], str, str, str, bytes]  # (flow place, 'c'|'f', job id, name, JSON kept)


def settle_many(client: Any, finished: list[Finished]) -> None:
    """Counts finished nodes into their parents (one round trip for all of them) and acts on
    the answers: enqueue released parents, pass failures up the tree. Every step is
    idempotent (see the module docstring)."""
    todo = [f for f in finished if f[0].get("parent") is not None]
    done_roots = {f[0]["id"] for f in finished if f[0].get("parent") is None}
    while todo:
        answers = client.flow_settle([(p["id"], p["node"], p["parent"], outcome, job_id, data, p.get("policy", "fail_parent"))
                                      for p, outcome, job_id, _name, data in todo])
        released: dict[str, list[Any]] = {}
        climbing: list[Finished] = []
        for (place, _o, _j, _n, _d), answer in zip(todo, answers):
            if answer[0] == b"release" and len(answer) > 1 and answer[1]:
                spec = serde.loads(answer[1])
                released.setdefault(spec["queue"], []).append(_workflow.job(spec, _node_id(place["id"], place["parent"])))
            elif answer[0] == b"fail":
                # The parent failed without running: it settles into its own parent as failed.
                [raw] = client.book_get(f"flow:{place['id']}", [f"node:{place['parent']}"])
                if raw is None:
                    continue
                node = serde.loads(raw)
                error = (serde.loads(answer[1]).get("error", {}) if len(answer) > 1 and answer[1] else {})
                up = {"id": place["id"], "node": place["parent"], "parent": node["parent"], "policy": node["policy"]}
                if node["parent"] is None:
                    done_roots.add(place["id"])
                else:
                    climbing.append((up, "f", node["id"], node["name"], serde.dumps({"name": node["name"], "error": error})))
        for queue, jobs in released.items():  # a parent released twice is refused by its id
            client.enqueue(queue, jobs)
        todo = climbing
    for flow_id in done_roots:  # the root finished: the flow's bookkeeping expires
        client.book_set(f"flow:{flow_id}", [], client.result_ttl)


def completed(flow: dict[str, Any], job_id: str, name: str, result: bytes | None) -> Finished:
    data = b'{"name":' + serde.dumps(name) + b',"result":' + (result if result is not None else b"null") + b"}"
    return (flow, "c", job_id, name, data)


def failed(flow: dict[str, Any], job_id: str, name: str, error: dict[str, Any]) -> Finished:
    return (flow, "f", job_id, name, serde.dumps({"name": name, "error": error}))


def node_completed(client: Any, flow: dict[str, Any], job_id: str, name: str, result: bytes | None) -> None:
    settle_many(client, [completed(flow, job_id, name, result)])


def node_failed(client: Any, flow: dict[str, Any], job_id: str, name: str, error: dict[str, Any]) -> None:
    settle_many(client, [failed(flow, job_id, name, error)])


def children_results(client: Any, flow: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    if not flow:
        return {}
    return {job_id: serde.loads(raw) for job_id, raw in client.flow_results(flow["id"], flow["node"])}
