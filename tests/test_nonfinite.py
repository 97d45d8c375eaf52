"""NaN and infinities (float or numpy), which orjson would write as null: every way into JSON
refuses them with a TypeError naming where they sit (payloads of every dispatch path,
options and meta, results), while None, "null" in a str and finite floats go through."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import fastjobs
from fastjobs import BulkDispatcher, BulkDispatchError, Queue, _core, serde

from .apps.jobs import Echo

NAN, INF = float("nan"), float("inf")


class Ratio(enum.Enum):
    HALF = 0.5
    NAN = NAN


class Wide(dict):  # type: ignore[type-arg]
    pass


@dataclasses.dataclass
class Point:
    x: float
    y: float
    _cache: float = NAN  # orjson leaves out names starting with "_": not refused


@dataclasses.dataclass
class Slotted:
    __slots__ = ("x",)
    x: float


REFUSED = [
    (NAN, r"payload is a float NaN"),
    (-INF, r"payload is a float -inf"),
    ({"rows": [1, 2, 3, NAN]}, r"payload\['rows'\]\[3\] is a float NaN"),
    ({"a": None, "b": [None, {"c": (0.5, INF)}]}, r"payload\['b'\]\[1\]\['c'\]\[1\] is a float inf"),
    ({1: None, "x": {NAN: 1}}, r"payload\['x'\] has a key that is a float NaN"),
    ({"r": {Ratio.NAN: 1}}, r"payload\['r'\] has a key that is Ratio.NAN, whose value is a float NaN"),
    ({"r": [Ratio.HALF, Ratio.NAN]}, r"payload\['r'\]\[1\] is Ratio.NAN, whose value is a float NaN"),
    (Wide(w=[None, -INF]), r"payload\['w'\]\[1\] is a float -inf"),
    ({"p": Point(1.0, NAN)}, r"payload\['p'\].y is a float NaN"),
    ([Slotted(INF)], r"payload\[0\].x is a float inf"),
    (np.float64("nan"), r"payload is a numpy.float64 NaN"),
    ({"f": np.float32("-inf")}, r"payload\['f'\] is a numpy.float32 -inf"),
    ({"m": np.array([[1.0, 2.0], [3.0, np.nan]])}, r"payload\['m'\]\[1\]\[1\] is a numpy.float64 NaN"),
    ({"m": np.array([np.inf], dtype=np.float16)}, r"payload\['m'\]\[0\] is a numpy.float16 inf"),
]

ACCEPTED = [
    None,
    {"a": None, "b": "null", "c": [None, 1.5, -0.0, 1e308, 5e-324]},
    {None: 1, 1.5: None, Ratio.HALF: None},
    {"p": Point(1.0, 2.0), "s": Slotted(3.0)},  # Point._cache is NaN but never written
    {"m": np.array([[1.0, 2.0]]), "i": np.array([1, 2]), "n": None, "f": np.float32(0.25)},
]


@pytest.mark.parametrize(("value", "message"), REFUSED)
def test_serde_refuses_nonfinite_floats_naming_their_path(value: Any, message: str) -> None:
    with pytest.raises(TypeError, match=f"^{message}, which JSON cannot represent$"):
        serde.dumps(value)


@pytest.mark.parametrize("value", ACCEPTED)
def test_serde_accepts_none_and_finite_floats(value: Any) -> None:
    assert serde.dumps(value) == serde.orjson.dumps(value, option=serde._OPTS)


def test_surely_finite_tells_none_from_nonfinite_floats() -> None:
    # The engine's check behind serde.dumps: true means no walk in Python.
    check = _core._surely_finite
    assert check(b'{"a":1.5}', {"a": NAN})  # no null in the output: nothing to hide
    assert check(b'{"a":null}', {"a": None, 1: (True, 2, "s"), None: 0.5})
    assert not check(b'{"a":null}', {"a": NAN})
    assert not check(b'{"null":1}', {INF: 1})
    assert not check(b'[null]', [Ratio.HALF, None])  # not a plain type: left to the walk
    deep: Any = None
    for _ in range(300):
        deep = (deep,)
    assert not check(b"null", deep)  # past the depth the engine walks
    assert serde.dumps(deep).startswith(b"[[[")


def test_tuples_nested_deeper_than_python_walks_are_refused() -> None:
    # orjson counts no tuple towards its depth limit: such a payload with a null in it cannot
    # be walked for NaN, and is refused rather than let through unchecked.
    deep: Any = None
    for _ in range(1500):
        deep = (deep,)
    with pytest.raises(TypeError, match="payload nests too deeply to be checked for NaN"):
        serde.dumps(deep)


@pytest.mark.parametrize(("what", "path"), [("result", "result"), ("options", "options")])
def test_the_name_of_the_value_starts_the_path(what: str, path: str) -> None:
    with pytest.raises(TypeError, match=rf"^{path}\['x'\] is a float NaN"):
        serde.dumps({"x": NAN}, what)


def test_single_dispatch_refuses_nan(face: Any) -> None:
    with pytest.raises(TypeError, match=r"payload\['rows'\]\[3\] is a float NaN, which JSON cannot represent"):
        face.send(Echo.dispatch({"rows": [1, 2, 3, NAN]}))
    with pytest.raises(TypeError, match=r"options\['meta'\]\['score'\] is a float inf"):
        face.send(Echo.dispatch(1).meta({"score": INF}))
    assert face.size(Queue()) == 0


def test_dispatch_now_refuses_nan() -> None:
    with pytest.raises(TypeError, match=r"payload\['x'\] is a float -inf"):
        Echo.dispatch_now({"x": -INF})


def test_bulk_dispatcher_refuses_nan() -> None:
    with pytest.raises(TypeError, match=r"^builder at index 1: payload\[0\] is a float NaN"):
        BulkDispatcher([Echo.dispatch(1), Echo.dispatch([NAN])]).dispatch()
    assert Queue().size() == 0


def test_dispatch_many_names_the_index_and_the_path() -> None:
    payloads: list[Any] = [{"ok": i, "none": None} for i in range(100)]
    payloads[41] = {"ok": 41, "rows": [None, INF]}
    with pytest.raises(TypeError, match=r"^payload at index 41: payload\['rows'\]\[1\] is a float inf, which JSON cannot represent$"):
        Echo.dispatch_many(payloads)
    payloads[41] = {"m": np.array([1.0, np.nan])}
    with pytest.raises(TypeError, match=r"^payload at index 41: payload\['m'\]\[1\] is a numpy.float64 NaN"):
        Echo.dispatch_many(payloads)
    with pytest.raises(TypeError, match=r"options\['meta'\]\['w'\] is a float NaN"):
        Echo.dispatch_many([1, 2], meta={"w": NAN})
    assert Queue().size() == 0

    def generated() -> Iterator[Any]:
        yield from range(1500)
        yield {"late": NAN}

    with pytest.raises(BulkDispatchError) as e:
        Echo.dispatch_many(generated(), chunk_size=1000)
    assert e.value.committed == 1000
    assert "payload at index 1500: payload['late'] is a float NaN" in str(e.value.__cause__)


class NanResult(fastjobs.Job[Any, Any]):
    queue = "nonfinite"
    attempts = 1

    def process(self, payload: Any) -> Any:
        return {"ratio": [1.0, math.nan]}


class AsyncInfResult(fastjobs.Job[Any, Any]):
    queue = "nonfinite"
    attempts = 1

    async def process(self, payload: Any) -> Any:
        await asyncio.sleep(0)
        return -math.inf


def test_a_result_holding_nan_fails_the_job(start_worker: Any) -> None:
    start_worker(queues=["nonfinite"])
    for job, message in [(NanResult, "result['ratio'][1] is a float NaN"), (AsyncInfResult, "result is a float -inf")]:
        h = job.dispatch(None).send()
        with pytest.raises(fastjobs.JobFailed) as e:
            h.wait_result(timeout=10)
        assert e.value.exc_type == "TypeError"
        assert e.value.message == f"{message}, which JSON cannot represent"
        assert h.status() == "failed"
