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


class TypedPlaceOrder(fastjobs.Job[Order, Receipt]):
    queue = "typed"

    def process(self, payload: Order) -> Receipt:
        SEEN.append((type(payload).__name__, payload))
        return Receipt(order=payload.id, total=sum(i.qty for i in payload.items) * 1.5)


class TypedRegister(fastjobs.Job[Signup, dict]):
    queue = "typed"

    def process(self, payload: Signup) -> dict:
        SEEN.append((type(payload).__name__, payload))
        return {"email": payload["email"]}


class TypedExport(fastjobs.Job[ExportArgs, ExportResult]):
    queue = "typed"

    def process(self, payload: ExportArgs) -> ExportResult:
        SEEN.append((type(payload).__name__, payload))
        return ExportResult(file="out.csv", rows=payload.rows)


class TypedAsyncExport(fastjobs.Job[Any, Any]):
    """Its types come from process's annotations."""

    queue = "typed"

    async def process(self, payload: ExportArgs) -> ExportResult:
        await asyncio.sleep(0)
        SEEN.append((type(payload).__name__, payload))
        return ExportResult(file="async.csv", rows=payload.rows)


class TypedBadResult(fastjobs.Job[Order, Receipt]):
    queue = "typed"

    def process(self, payload: Order) -> Receipt:
        return {"order": payload.id, "total": "lots"}  # type: ignore[return-value]


class TypedUntyped(fastjobs.Job[dict, dict]):
    queue = "typed"

    def process(self, payload: dict) -> dict:
        return payload


def order(n: int = 1) -> dict[str, Any]:
    return {"id": n, "items": [{"sku": "a", "qty": 2}, {"sku": "b"}]}


def no_keys(redis: Any, prefix: str) -> bool:
    return redis("KEYS", f"{prefix}:*") == []


# ---- declared types ----


def test_types_come_from_the_generic_parameters_or_the_annotations() -> None:
    assert TypedPlaceOrder._payload_schema.tp is Order and TypedPlaceOrder._result_schema.tp is Receipt
    assert TypedRegister._payload_schema.tp is Signup and TypedRegister._result_schema is None
    assert TypedAsyncExport._payload_schema.tp is ExportArgs and TypedAsyncExport._result_schema.tp is ExportResult
    assert TypedUntyped._payload_schema is None and TypedUntyped._dump_payload is fastjobs.serde.dumps
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
        (TypedPlaceOrder, {"id": 1, "items": [{"sku": "a"}, {"sku": "b"}, {"sku": 3}]}, "TypedPlaceOrder: payload.items[2].sku: expected str, got int"),
        (TypedPlaceOrder, {"id": "1", "items": []}, "TypedPlaceOrder: payload.id: expected int, got str"),
        (TypedPlaceOrder, {"items": []}, "TypedPlaceOrder: payload.id: required field of Order missing"),
        (TypedPlaceOrder, {"id": 1, "items": [], "colour": "red"}, "TypedPlaceOrder: payload.colour: unknown field of Order"),
        (TypedPlaceOrder, {"id": 1, "items": [], "note": 4}, "TypedPlaceOrder: payload.note: expected str | None, got int"),
        (TypedPlaceOrder, {"id": 1, "items": [], "tags": {"x": "y"}}, "TypedPlaceOrder: payload.tags['x']: expected float, got str"),
        (TypedPlaceOrder, [1, 2], "TypedPlaceOrder: payload: expected Order (or a dict of its fields), got list"),
        (TypedPlaceOrder, Order(id=1, items=[Item(sku=5)]), "TypedPlaceOrder: payload.items[0].sku: expected str, got int"),  # type: ignore[arg-type]
        (TypedRegister, {"email": "a@b.c", "age": True, "addresses": []}, "TypedRegister: payload.age: expected int, got bool"),
        (TypedRegister, {"email": "a@b.c", "age": 3, "addresses": [{"town": "x"}]}, "TypedRegister: payload.addresses[0].town: unknown key of Address"),
        (TypedRegister, {"email": "a@b.c", "addresses": []}, "TypedRegister: payload.age: required key of Signup missing"),
        (TypedRegister, {"email": "a@b.c", "age": 3, "addresses": [], "referrer": 7}, "TypedRegister: payload.referrer: expected str | None, got int"),
        (TypedExport, {"rows": "many"}, "TypedExport: payload.rows: Input should be a valid integer"),
        (TypedExport, {"rows": 1, "columns": ["a", 2]}, "TypedExport: payload.columns[1]: Input should be a valid string"),
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
        await TypedExport.dispatch({"rows": None})
    with pytest.raises(PayloadValidationError, match=r"payload\.rows"):
        await TypedExport.dispatch({"rows": None}).send_async()
    with pytest.raises(PayloadValidationError, match=r"payload.items\[0\].qty"):
        await TypedPlaceOrder.dispatch({"id": 1, "items": [{"sku": "a", "qty": 1.5}]}).wait_result_async(timeout=1)
    assert no_keys(redis, prefix)


def test_workflows_and_schedules_check_too(redis: Any, prefix: str) -> None:
    with pytest.raises(PayloadValidationError, match=r"payload\.id"):
        fastjobs.JobChain([TypedPlaceOrder.dispatch(order()), TypedPlaceOrder.dispatch({"id": None, "items": []})]).dispatch()
    with pytest.raises(PayloadValidationError, match=r"builder at index 1: TypedPlaceOrder: payload\.id"):
        fastjobs.BulkDispatcher([TypedPlaceOrder.dispatch(order()), TypedPlaceOrder.dispatch({"items": []})]).dispatch()
    assert no_keys(redis, prefix)


# ---- in the worker: process gets the type, results come back typed ----


def test_the_worker_hands_process_the_type_and_results_come_back_typed(start_worker: Any) -> None:
    start_worker(queues=["typed"], jobs=[TypedPlaceOrder, TypedRegister, TypedExport, TypedAsyncExport, TypedUntyped])
    receipt = TypedPlaceOrder.dispatch(Order(id=7, items=[Item("a", 2), Item("b")])).wait_result(timeout=10)
    assert receipt == Receipt(order=7, total=4.5)
    from_dict = TypedPlaceOrder.dispatch(order(8)).send()
    assert from_dict.wait_result(timeout=10) == Receipt(order=8, total=4.5)
    assert from_dict.info().result == Receipt(order=8, total=4.5)
    # A handle that does not know the job class gives the JSON back.
    assert fastjobs.JobHandle(from_dict.id, "typed").wait_result(timeout=10) == {"order": 8, "total": 4.5}

    signup = {"email": "a@b.c", "age": 30, "addresses": [{"city": "Oslo"}]}
    assert TypedRegister.dispatch(signup).wait_result(timeout=10) == {"email": "a@b.c"}
    assert TypedExport.dispatch(ExportArgs(rows=3)).wait_result(timeout=10) == ExportResult(file="out.csv", rows=3)
    assert TypedExport.dispatch({"rows": "4"}).wait_result(timeout=10) == ExportResult(file="out.csv", rows=4)  # pydantic's coercion
    assert TypedAsyncExport.dispatch({"rows": 5}).wait_result(timeout=10) == ExportResult(file="async.csv", rows=5)
    assert TypedUntyped.dispatch({"any": ["thing"]}).wait_result(timeout=10) == {"any": ["thing"]}

    kinds = [(name, p) for name, p in SEEN]
    assert kinds[0] == ("Order", Order(id=7, items=[Item("a", 2), Item("b", 1)]))
    assert kinds[1] == ("Order", Order(id=8, items=[Item("a", 2), Item("b", 1)]))
    assert kinds[2] == ("dict", signup)  # a TypedDict is a dict, checked
    assert [k[0] for k in kinds[3:]] == ["ExportArgs", "ExportArgs", "ExportArgs"]
    assert kinds[4][1] == ExportArgs(rows=4)


def test_a_result_that_does_not_fit_fails_the_attempt(start_worker: Any) -> None:
    start_worker(queues=["typed"], jobs=[TypedBadResult])
    with pytest.raises(fastjobs.JobFailed) as e:
        TypedBadResult.dispatch(order()).wait_result(timeout=10)
    assert e.value.exc_type == "fastjobs.errors.ResultValidationError"
    assert e.value.message == "TypedBadResult: result.total: expected float, got str"


def test_dispatch_now_mirrors_the_queue() -> None:
    assert TypedPlaceOrder.dispatch_now(order(3)) == Receipt(order=3, total=4.5)
    assert SEEN[-1] == ("Order", Order(id=3, items=[Item("a", 2), Item("b", 1)]))
    assert TypedAsyncExport.dispatch_now({"rows": 2}) == ExportResult(file="async.csv", rows=2)
    with pytest.raises(ResultValidationError, match=r"result\.total"):
        TypedBadResult.dispatch_now(order())


# ---- bulk ----


def test_dispatch_many_checks_every_payload_first(redis: Any, prefix: str, start_worker: Any) -> None:
    payloads: list[Any] = [order(i) for i in range(5)]
    payloads[3] = {"id": 3, "items": [{"sku": None}]}
    with pytest.raises(PayloadValidationError, match=r"^payload at index 3: TypedPlaceOrder: payload.items\[0\].sku: expected str, got None$"):
        TypedPlaceOrder.dispatch_many(payloads, chunk_size=2)
    with pytest.raises(PayloadValidationError, match="payload at index 3"):
        TypedPlaceOrder.dispatch_many(tuple(payloads))
    with pytest.raises(PayloadValidationError, match="payload at index 3"):
        TypedPlaceOrder.dispatch_many(payloads, group=lambda p: "g")  # the keyed path
    assert no_keys(redis, prefix)

    # An iterator is written as it is consumed: the chunks before the bad payload stay.
    with pytest.raises(fastjobs.BulkDispatchError) as e:
        TypedPlaceOrder.dispatch_many(iter(payloads), chunk_size=2)
    assert isinstance(e.value.__cause__, PayloadValidationError) and "payload at index 3" in str(e.value)
    assert e.value.committed == 2

    start_worker(queues=["typed"], jobs=[TypedPlaceOrder])
    good = TypedPlaceOrder.dispatch_many([Order(id=10, items=[]), order(11)])
    assert [h.wait_result(timeout=10) for h in good.handles()] == [Receipt(order=10, total=0.0), Receipt(order=11, total=4.5)]
    mixed = fastjobs.BulkDispatcher([TypedPlaceOrder.dispatch(order(12)), TypedUntyped.dispatch({"x": 1})]).dispatch()
    assert mixed.handles()[0].wait_result(timeout=10) == Receipt(order=12, total=4.5)
