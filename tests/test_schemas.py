"""Typed payloads and results: pydantic models, dataclasses and TypedDicts checked at dispatch,
handed to process as their type, results given back typed."""

# No `from __future__ import annotations` here: TypedDict's required keys are read from the
# annotations when the class is made, and Python 3.10-3.11 cannot see NotRequired in strings.

import asyncio
import dataclasses
import re
from typing import Any, TypedDict

import pydantic
import pytest

import fastjobs
from fastjobs import PayloadValidationError, ResultValidationError

#: What the handlers received: (type name, payload), per test.
SEEN: list[tuple[str, Any]] = []


@pytest.fixture(autouse=True)
def _clear() -> Any:
    SEEN.clear()
    yield
    SEEN.clear()


@dataclasses.dataclass
class Item:
    sku: str
    qty: int = 1


@dataclasses.dataclass
class Order:
    id: int
    items: list[Item]
    note: str | None = None
    tags: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Receipt:
    order: int
    total: float


class Address(TypedDict):
    city: str


class _Signup(TypedDict, total=False):
    referrer: str | None


class Signup(_Signup):
    email: str
    age: int
    addresses: list[Address]


class ExportArgs(pydantic.BaseModel):
    rows: int
    columns: list[str] = []


class ExportResult(pydantic.BaseModel):
    file: str
    rows: int


class PlaceOrder(fastjobs.Job[Order, Receipt]):
    queue = "typed"

    def process(self, payload: Order) -> Receipt:
        SEEN.append((type(payload).__name__, payload))
        return Receipt(order=payload.id, total=sum(i.qty for i in payload.items) * 1.5)


class Register(fastjobs.Job[Signup, dict]):
    queue = "typed"

    def process(self, payload: Signup) -> dict:
        SEEN.append((type(payload).__name__, payload))
        return {"email": payload["email"]}


class Export(fastjobs.Job[ExportArgs, ExportResult]):
    queue = "typed"

    def process(self, payload: ExportArgs) -> ExportResult:
        SEEN.append((type(payload).__name__, payload))
        return ExportResult(file="out.csv", rows=payload.rows)


class AsyncExport(fastjobs.Job[Any, Any]):
    """Its types come from process's annotations."""

    queue = "typed"

    async def process(self, payload: ExportArgs) -> ExportResult:
        await asyncio.sleep(0)
        SEEN.append((type(payload).__name__, payload))
        return ExportResult(file="async.csv", rows=payload.rows)


class BadResult(fastjobs.Job[Order, Receipt]):
    queue = "typed"

    def process(self, payload: Order) -> Receipt:
        return {"order": payload.id, "total": "lots"}  # type: ignore[return-value]


class Untyped(fastjobs.Job[dict, dict]):
    queue = "typed"

    def process(self, payload: dict) -> dict:
        return payload


def order(n: int = 1) -> dict[str, Any]:
    return {"id": n, "items": [{"sku": "a", "qty": 2}, {"sku": "b"}]}


def no_keys(redis: Any, prefix: str) -> bool:
    return redis("KEYS", f"{prefix}:*") == []


# ---- declared types ----


def test_types_come_from_the_generic_parameters_or_the_annotations() -> None:
    assert PlaceOrder._payload_schema.tp is Order and PlaceOrder._result_schema.tp is Receipt
    assert Register._payload_schema.tp is Signup and Register._result_schema is None
    assert AsyncExport._payload_schema.tp is ExportArgs and AsyncExport._result_schema.tp is ExportResult
    assert Untyped._payload_schema is None and Untyped._dump_payload is fastjobs.serde.dumps
    with pytest.raises(TypeError, match=re.escape("its payload type is Order in Job[...] but Item in process()")):

        class Mixed(fastjobs.Job[Order, None]):
            def process(self, payload: Item) -> None: ...


@fastjobs.job(queue="typed", name="typed-function")
def count_items(payload: Order) -> Receipt:
    return Receipt(order=payload.id, total=float(len(payload.items)))


def test_function_jobs_take_the_functions_annotations() -> None:
    assert count_items.job_class._payload_schema.tp is Order
    assert count_items.dispatch_now(order(4)) == Receipt(order=4, total=2.0)
    with pytest.raises(PayloadValidationError, match=re.escape("typed-function: payload.items: expected list[Item], got str")):
        count_items.dispatch({"id": 1, "items": "none"}).send()


# ---- at dispatch: errors name the job and the field, nothing written ----


@pytest.mark.parametrize(
    ("job", "payload", "message"),
    [
        (PlaceOrder, {"id": 1, "items": [{"sku": "a"}, {"sku": "b"}, {"sku": 3}]}, "PlaceOrder: payload.items[2].sku: expected str, got int"),
        (PlaceOrder, {"id": "1", "items": []}, "PlaceOrder: payload.id: expected int, got str"),
        (PlaceOrder, {"items": []}, "PlaceOrder: payload.id: required field of Order missing"),
        (PlaceOrder, {"id": 1, "items": [], "colour": "red"}, "PlaceOrder: payload.colour: unknown field of Order"),
        (PlaceOrder, {"id": 1, "items": [], "note": 4}, "PlaceOrder: payload.note: expected str | None, got int"),
        (PlaceOrder, {"id": 1, "items": [], "tags": {"x": "y"}}, "PlaceOrder: payload.tags['x']: expected float, got str"),
        (PlaceOrder, [1, 2], "PlaceOrder: payload: expected Order (or a dict of its fields), got list"),
        (PlaceOrder, Order(id=1, items=[Item(sku=5)]), "PlaceOrder: payload.items[0].sku: expected str, got int"),  # type: ignore[arg-type]
        (Register, {"email": "a@b.c", "age": True, "addresses": []}, "Register: payload.age: expected int, got bool"),
        (Register, {"email": "a@b.c", "age": 3, "addresses": [{"town": "x"}]}, "Register: payload.addresses[0].town: unknown key of Address"),
        (Register, {"email": "a@b.c", "addresses": []}, "Register: payload.age: required key of Signup missing"),
        (Register, {"email": "a@b.c", "age": 3, "addresses": [], "referrer": 7}, "Register: payload.referrer: expected str | None, got int"),
        (Export, {"rows": "many"}, "Export: payload.rows: Input should be a valid integer"),
        (Export, {"rows": 1, "columns": ["a", 2]}, "Export: payload.columns[1]: Input should be a valid string"),
    ],
)
def test_a_bad_payload_raises_before_anything_is_written(job: Any, payload: Any, message: str, redis: Any, prefix: str) -> None:
    with pytest.raises(PayloadValidationError) as e:
        job.dispatch(payload).send()
    assert str(e.value).startswith(message), str(e.value)
    assert isinstance(e.value, ValueError) and e.value.job == job.name
    with pytest.raises(PayloadValidationError, match=re.escape(message)):
        job.dispatch_now(payload)
    assert no_keys(redis, prefix)


async def test_async_dispatch_checks_too(redis: Any, prefix: str) -> None:
    with pytest.raises(PayloadValidationError, match=r"payload\.rows"):
        await Export.dispatch({"rows": None})
    with pytest.raises(PayloadValidationError, match=r"payload\.rows"):
        await Export.dispatch({"rows": None}).send_async()
    with pytest.raises(PayloadValidationError, match=r"payload.items\[0\].qty"):
        await PlaceOrder.dispatch({"id": 1, "items": [{"sku": "a", "qty": 1.5}]}).wait_result_async(timeout=1)
    assert no_keys(redis, prefix)


def test_workflows_and_schedules_check_too(redis: Any, prefix: str) -> None:
    with pytest.raises(PayloadValidationError, match=r"payload\.id"):
        fastjobs.JobChain([PlaceOrder.dispatch(order()), PlaceOrder.dispatch({"id": None, "items": []})]).dispatch()
    with pytest.raises(PayloadValidationError, match=r"builder at index 1: PlaceOrder: payload\.id"):
        fastjobs.BulkDispatcher([PlaceOrder.dispatch(order()), PlaceOrder.dispatch({"items": []})]).dispatch()
    assert no_keys(redis, prefix)


# ---- in the worker: process gets the type, results come back typed ----


def test_the_worker_hands_process_the_type_and_results_come_back_typed(start_worker: Any) -> None:
    start_worker(queues=["typed"], jobs=[PlaceOrder, Register, Export, AsyncExport, Untyped])
    receipt = PlaceOrder.dispatch(Order(id=7, items=[Item("a", 2), Item("b")])).wait_result(timeout=10)
    assert receipt == Receipt(order=7, total=4.5)
    from_dict = PlaceOrder.dispatch(order(8)).send()
    assert from_dict.wait_result(timeout=10) == Receipt(order=8, total=4.5)
    assert from_dict.info().result == Receipt(order=8, total=4.5)
    # A handle that does not know the job class gives the JSON back.
    assert fastjobs.JobHandle(from_dict.id, "typed").wait_result(timeout=10) == {"order": 8, "total": 4.5}

    signup = {"email": "a@b.c", "age": 30, "addresses": [{"city": "Oslo"}]}
    assert Register.dispatch(signup).wait_result(timeout=10) == {"email": "a@b.c"}
    assert Export.dispatch(ExportArgs(rows=3)).wait_result(timeout=10) == ExportResult(file="out.csv", rows=3)
    assert Export.dispatch({"rows": "4"}).wait_result(timeout=10) == ExportResult(file="out.csv", rows=4)  # pydantic's coercion
    assert AsyncExport.dispatch({"rows": 5}).wait_result(timeout=10) == ExportResult(file="async.csv", rows=5)
    assert Untyped.dispatch({"any": ["thing"]}).wait_result(timeout=10) == {"any": ["thing"]}

    kinds = [(name, p) for name, p in SEEN]
    assert kinds[0] == ("Order", Order(id=7, items=[Item("a", 2), Item("b", 1)]))
    assert kinds[1] == ("Order", Order(id=8, items=[Item("a", 2), Item("b", 1)]))
    assert kinds[2] == ("dict", signup)  # a TypedDict is a dict, checked
    assert [k[0] for k in kinds[3:]] == ["ExportArgs", "ExportArgs", "ExportArgs"]
    assert kinds[4][1] == ExportArgs(rows=4)


def test_a_result_that_does_not_fit_fails_the_attempt(start_worker: Any) -> None:
    start_worker(queues=["typed"], jobs=[BadResult])
    with pytest.raises(fastjobs.JobFailed) as e:
        BadResult.dispatch(order()).wait_result(timeout=10)
    assert e.value.exc_type == "fastjobs.errors.ResultValidationError"
    assert e.value.message == "BadResult: result.total: expected float, got str"


def test_dispatch_now_mirrors_the_queue() -> None:
    assert PlaceOrder.dispatch_now(order(3)) == Receipt(order=3, total=4.5)
    assert SEEN[-1] == ("Order", Order(id=3, items=[Item("a", 2), Item("b", 1)]))
    assert AsyncExport.dispatch_now({"rows": 2}) == ExportResult(file="async.csv", rows=2)
    with pytest.raises(ResultValidationError, match=r"result\.total"):
        BadResult.dispatch_now(order())


# ---- bulk ----


def test_dispatch_many_checks_every_payload_first(redis: Any, prefix: str, start_worker: Any) -> None:
    payloads: list[Any] = [order(i) for i in range(5)]
    payloads[3] = {"id": 3, "items": [{"sku": None}]}
    with pytest.raises(PayloadValidationError, match=r"^payload at index 3: PlaceOrder: payload.items\[0\].sku: expected str, got None$"):
        PlaceOrder.dispatch_many(payloads, chunk_size=2)
    with pytest.raises(PayloadValidationError, match="payload at index 3"):
        PlaceOrder.dispatch_many(tuple(payloads))
    with pytest.raises(PayloadValidationError, match="payload at index 3"):
        PlaceOrder.dispatch_many(payloads, group=lambda p: "g")  # the keyed path
    assert no_keys(redis, prefix)

    # An iterator is written as it is consumed: the chunks before the bad payload stay.
    with pytest.raises(fastjobs.BulkDispatchError) as e:
        PlaceOrder.dispatch_many(iter(payloads), chunk_size=2)
    assert isinstance(e.value.__cause__, PayloadValidationError) and "payload at index 3" in str(e.value)
    assert e.value.committed == 2

    start_worker(queues=["typed"], jobs=[PlaceOrder])
    good = PlaceOrder.dispatch_many([Order(id=10, items=[]), order(11)])
    assert [h.wait_result(timeout=10) for h in good.handles()] == [Receipt(order=10, total=0.0), Receipt(order=11, total=4.5)]
    mixed = fastjobs.BulkDispatcher([PlaceOrder.dispatch(order(12)), Untyped.dispatch({"x": 1})]).dispatch()
    assert mixed.handles()[0].wait_result(timeout=10) == Receipt(order=12, total=4.5)
